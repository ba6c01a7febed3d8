package mirrortest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// serveHTTP verifies the request's signature and runs its STS or Secrets
// Manager operation.
func (f *AWS) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	service, err := f.verifySignature(r, body)
	if err != nil {
		code := "InvalidSignatureException"
		if errors.Is(err, errUnknownKey) {
			code = "UnrecognizedClientException"
		}
		awsError(w, http.StatusBadRequest, code, err.Error())
		return
	}
	if service == "sts" {
		f.serveSTS(w, body)
		return
	}
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "secretsmanager.")
	if !ok || r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-amz-json-1.1") {
		awsError(w, http.StatusBadRequest, "UnknownOperationException", "bad target")
		return
	}
	var in awsInput
	if err := json.Unmarshal(body, &in); err != nil {
		awsError(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		if status, code := f.fail(op); status != 0 {
			// An upstream message echoing the request: it must never reach
			// an error message.
			awsError(w, status, code, "upstream failed on "+string(body))
			return
		}
	}
	f.calls = append(f.calls, op+" "+in.name())
	out, status, code := f.dispatch(op, &in)
	if status != 0 {
		awsError(w, status, code, "upstream says no: "+in.name())
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(out)
}

// awsInput holds the fields of the operations the fake implements.
type awsInput struct {
	Name                       string
	SecretID                   string `json:"SecretId"`
	SecretString               string
	KMSKeyID                   string `json:"KmsKeyId"`
	Description                string
	Tags                       []struct{ Key, Value string }
	TagKeys                    []string
	ForceDeleteWithoutRecovery bool
	RecoveryWindowInDays       int
}

// name returns the secret the operation is about.
func (in *awsInput) name() string {
	if in.Name != "" {
		return in.Name
	}
	return in.SecretID
}

// awsARN returns the ARN of the secret called name.
func awsARN(name string) string {
	return "arn:aws:secretsmanager:" + awsRegion + ":" + awsAccount + ":secret:" + name + "-AbCdEf"
}

// dispatch runs one operation; f.mu is held. A non-zero status is an error
// answer with code.
func (f *AWS) dispatch(op string, in *awsInput) (out map[string]any, status int, code string) {
	name := in.name()
	s := f.secrets[name]
	if op != "CreateSecret" && s == nil {
		return nil, http.StatusBadRequest, "ResourceNotFoundException"
	}
	pending := s != nil && !s.deleted.IsZero()
	ident := map[string]any{"ARN": awsARN(name), "Name": name}
	switch op {
	case "CreateSecret":
		if pending {
			return nil, http.StatusBadRequest, "InvalidRequestException"
		}
		if s != nil {
			return nil, http.StatusBadRequest, "ResourceExistsException"
		}
		s = &awsSecret{name: name, kmsKeyID: in.KMSKeyID, description: in.Description,
			value: in.SecretString, versions: 1, tags: map[string]string{}}
		for _, t := range in.Tags {
			s.tags[t.Key] = t.Value
		}
		f.secrets[name] = s
		ident["VersionId"] = "v1"
	case "DescribeSecret":
		tags := make([]map[string]string, 0, len(s.tags))
		for k, v := range s.tags {
			tags = append(tags, map[string]string{"Key": k, "Value": v})
		}
		ident["Tags"] = tags
		if s.kmsKeyID != "" {
			ident["KmsKeyId"] = s.kmsKeyID
		}
		if pending {
			ident["DeletedDate"] = float64(s.deleted.Unix())
		}
	case "GetSecretValue":
		if pending {
			return nil, http.StatusBadRequest, "InvalidRequestException"
		}
		ident["SecretString"] = s.value
	case "PutSecretValue":
		if pending {
			return nil, http.StatusBadRequest, "InvalidRequestException"
		}
		s.value = in.SecretString
		s.versions++
		ident["VersionId"] = fmt.Sprintf("v%d", s.versions)
	case "TagResource":
		for _, t := range in.Tags {
			s.tags[t.Key] = t.Value
		}
		return map[string]any{}, 0, ""
	case "UntagResource":
		for _, k := range in.TagKeys {
			delete(s.tags, k)
		}
		return map[string]any{}, 0, ""
	case "DeleteSecret":
		switch {
		case in.ForceDeleteWithoutRecovery:
			delete(f.secrets, name)
		case pending:
			return nil, http.StatusBadRequest, "InvalidRequestException"
		default:
			s.deleted = time.Now()
		}
		ident["DeletionDate"] = float64(time.Now().Unix())
	case "RestoreSecret":
		s.deleted = time.Time{}
	default:
		return nil, http.StatusBadRequest, "UnknownOperationException"
	}
	return ident, 0, ""
}

// awsError writes a JSON 1.1 error answer.
func awsError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": code, "message": msg})
}
