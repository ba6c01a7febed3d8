package mirror

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	fakeRegion    = "eu-west-1"
	fakeAccessKey = "AKIAFAKEFAKEFAKE0001"
	fakeSecretKey = "fake/secret+key0000000000000000000000000"
	fakeAccount   = "123456789012"
)

// awsFake is an AWS Secrets Manager (JSON 1.1 protocol) and STS (query
// protocol, AssumeRole only) on loopback. It keeps secrets in memory and
// answers a request only when its SigV4 signature, recomputed with the
// SDK's signer from the request and the known secret key, matches.
type awsFake struct {
	tb     testing.TB
	server *loopbackServer

	mu       sync.Mutex
	keys     map[string]awsFakeKey     // access key -> key; guarded by mu
	secrets  map[string]*awsFakeSecret // by name; guarded by mu
	calls    []string                  // "Operation name" per accepted request; guarded by mu
	signed   int                       // requests whose signature was verified; guarded by mu
	fail     func(op string) (status int, code string)
	assumed  []string // RoleArn of each AssumeRole call
	lastAuth map[string]string
}

type awsFakeKey struct {
	secret, sessionToken string
}

type awsFakeSecret struct {
	name, kmsKeyID, description string
	value                       string
	versions                    int
	tags                        map[string]string
	deleted                     *time.Time
}

func newAWSFake(tb testing.TB) *awsFake {
	tb.Helper()
	f := &awsFake{
		tb:       tb,
		keys:     map[string]awsFakeKey{fakeAccessKey: {secret: fakeSecretKey}},
		secrets:  map[string]*awsFakeSecret{},
		lastAuth: map[string]string{},
	}
	f.server = newLoopbackServer(tb, http.HandlerFunc(f.serveHTTP), false)
	return f
}

// failWith makes the fake answer operations with an error status and code
// while fn returns a non-zero status.
func (f *awsFake) failWith(fn func(op string) (int, string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

func (f *awsFake) secret(name string) (awsFakeSecret, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.secrets[name]
	if !ok {
		return awsFakeSecret{}, false
	}
	return *s, true
}

func (f *awsFake) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *awsFake) resetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

func (f *awsFake) serveHTTP(w http.ResponseWriter, r *http.Request) {
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
		awsFakeError(w, http.StatusBadRequest, code, err.Error())
		return
	}
	if service == "sts" {
		f.serveSTS(w, r, body)
		return
	}
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "secretsmanager.")
	if !ok || r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-amz-json-1.1") {
		awsFakeError(w, http.StatusBadRequest, "UnknownOperationException", "bad target")
		return
	}
	var in awsFakeInput
	if err := json.Unmarshal(body, &in); err != nil {
		awsFakeError(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		if status, code := f.fail(op); status != 0 {
			// An upstream message echoing the request: it must never reach
			// an error message.
			awsFakeError(w, status, code, "upstream failed on "+string(body))
			return
		}
	}
	f.calls = append(f.calls, op+" "+in.name())
	out, status, code := f.dispatch(op, &in)
	if status != 0 {
		awsFakeError(w, status, code, "upstream says no: "+in.name())
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(out)
}

// awsFakeInput holds the fields of the operations the fake implements.
type awsFakeInput struct {
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

func (in *awsFakeInput) name() string {
	if in.Name != "" {
		return in.Name
	}
	return in.SecretID
}

func arnOf(name string) string {
	return "arn:aws:secretsmanager:" + fakeRegion + ":" + fakeAccount + ":secret:" + name + "-AbCdEf"
}

// dispatch runs one operation; f.mu is held.
func (f *awsFake) dispatch(op string, in *awsFakeInput) (out map[string]any, status int, code string) {
	name := in.name()
	s := f.secrets[name]
	notFound := func() (map[string]any, int, string) {
		return nil, http.StatusBadRequest, "ResourceNotFoundException"
	}
	if op != "CreateSecret" && s == nil {
		return notFound()
	}
	ident := map[string]any{"ARN": arnOf(name), "Name": name}
	switch op {
	case "CreateSecret":
		if s != nil {
			if s.deleted != nil {
				return nil, http.StatusBadRequest, "InvalidRequestException"
			}
			return nil, http.StatusBadRequest, "ResourceExistsException"
		}
		s = &awsFakeSecret{name: name, kmsKeyID: in.KMSKeyID, description: in.Description,
			value: in.SecretString, versions: 1, tags: map[string]string{}}
		for _, t := range in.Tags {
			s.tags[t.Key] = t.Value
		}
		f.secrets[name] = s
		ident["VersionId"] = "v1"
		return ident, 0, ""
	case "DescribeSecret":
		var tags []map[string]string
		for k, v := range s.tags {
			tags = append(tags, map[string]string{"Key": k, "Value": v})
		}
		ident["Tags"] = tags
		if s.kmsKeyID != "" {
			ident["KmsKeyId"] = s.kmsKeyID
		}
		if s.deleted != nil {
			ident["DeletedDate"] = float64(s.deleted.Unix())
		}
		return ident, 0, ""
	case "GetSecretValue":
		if s.deleted != nil {
			return nil, http.StatusBadRequest, "InvalidRequestException"
		}
		ident["SecretString"] = s.value
		return ident, 0, ""
	case "PutSecretValue":
		if s.deleted != nil {
			return nil, http.StatusBadRequest, "InvalidRequestException"
		}
		s.value = in.SecretString
		s.versions++
		ident["VersionId"] = fmt.Sprintf("v%d", s.versions)
		return ident, 0, ""
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
		if in.ForceDeleteWithoutRecovery {
			delete(f.secrets, name)
		} else {
			if s.deleted != nil {
				return nil, http.StatusBadRequest, "InvalidRequestException"
			}
			now := time.Now()
			s.deleted = &now
		}
		ident["DeletionDate"] = float64(time.Now().Unix())
		return ident, 0, ""
	case "RestoreSecret":
		s.deleted = nil
		return ident, 0, ""
	}
	return nil, http.StatusBadRequest, "UnknownOperationException"
}

func awsFakeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": code, "message": msg})
}

var errUnknownKey = errors.New("the security token included in the request is invalid")

// verifySignature checks the request's SigV4 Authorization header: its
// credential scope, its signed headers and its signature, recomputed with
// the SDK's v4 signer over the signed headers and the body. It returns the
// scope's service.
func (f *awsFake) verifySignature(r *http.Request, body []byte) (string, error) {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return "", errors.New("missing AWS4-HMAC-SHA256 authorization")
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ", ") {
		k, v, _ := strings.Cut(part, "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || fields["SignedHeaders"] == "" || len(fields["Signature"]) != 64 {
		return "", fmt.Errorf("malformed authorization %q", auth)
	}
	accessKey, date, region, service := scope[0], scope[1], scope[2], scope[3]
	signingTime, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil || signingTime.Format("20060102") != date {
		return "", errors.New("bad X-Amz-Date")
	}
	if region != fakeRegion || (service != "secretsmanager" && service != "sts") {
		return "", fmt.Errorf("scope %s/%s, want %s/secretsmanager or sts", region, service, fakeRegion)
	}
	f.mu.Lock()
	key, known := f.keys[accessKey]
	f.mu.Unlock()
	if !known {
		return "", errUnknownKey
	}
	if key.sessionToken != r.Header.Get("X-Amz-Security-Token") {
		return "", errors.New("session token mismatch")
	}

	// Rebuild the request from what the client signed and sign it again.
	check, err := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
	if err != nil {
		return "", err
	}
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		switch h {
		case "host":
		case "content-length":
			check.ContentLength = r.ContentLength
		default:
			check.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: accessKey, SecretAccessKey: key.secret, SessionToken: key.sessionToken}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, check, hex.EncodeToString(sum[:]), service, region, signingTime); err != nil {
		return "", err
	}
	if check.Header.Get("Authorization") != auth {
		return "", errors.New("the request signature we calculated does not match the signature you provided")
	}
	f.mu.Lock()
	f.signed++
	f.lastAuth[service] = auth
	f.mu.Unlock()
	return service, nil
}

// serveSTS answers AssumeRole with fresh session credentials that the
// fake then accepts.
func (f *awsFake) serveSTS(w http.ResponseWriter, r *http.Request, body []byte) {
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("Action") != "AssumeRole" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.assumed = append(f.assumed, form.Get("RoleArn"))
	n := len(f.assumed)
	key := awsFakeKey{secret: fmt.Sprintf("assumed-secret-%d", n), sessionToken: fmt.Sprintf("session-token-%d", n)}
	accessKey := fmt.Sprintf("ASIAFAKEASSUMED%05d", n)
	f.keys[accessKey] = key
	f.mu.Unlock()

	type credentials struct {
		AccessKeyID     string `xml:"AccessKeyId"`
		SecretAccessKey string
		SessionToken    string
		Expiration      string
	}
	type result struct {
		XMLName         xml.Name    `xml:"AssumeRoleResponse"`
		Credentials     credentials `xml:"AssumeRoleResult>Credentials"`
		AssumedRoleUser string      `xml:"AssumeRoleResult>AssumedRoleUser>Arn"`
		RequestID       string      `xml:"ResponseMetadata>RequestId"`
	}
	w.Header().Set("Content-Type", "text/xml")
	_ = xml.NewEncoder(w).Encode(result{
		Credentials: credentials{
			AccessKeyID: accessKey, SecretAccessKey: key.secret, SessionToken: key.sessionToken,
			Expiration: time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		},
		AssumedRoleUser: "arn:aws:sts::" + fakeAccount + ":assumed-role/mirror/" + form.Get("RoleSessionName"),
		RequestID:       "req-1",
	})
}
