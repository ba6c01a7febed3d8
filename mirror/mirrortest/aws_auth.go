package mirrortest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// errUnknownKey is the answer to an access key the fake does not know.
var errUnknownKey = errors.New("the security token included in the request is invalid")

// verifySignature checks the request's SigV4 Authorization header: its
// credential scope, its signed headers and its signature, recomputed with
// the SDK's v4 signer over the signed headers and the body. It returns the
// scope's service.
func (f *AWS) verifySignature(r *http.Request, body []byte) (string, error) {
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
	if region != awsRegion || (service != "secretsmanager" && service != "sts") {
		return "", fmt.Errorf("scope %s/%s, want %s/secretsmanager or sts", region, service, awsRegion)
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

// serveSTS answers AssumeRole with fresh session credentials that the fake
// then accepts: access key ASIAFAKEASSUMED00001 for the first call, and so on.
func (f *AWS) serveSTS(w http.ResponseWriter, body []byte) {
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("Action") != "AssumeRole" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.assumed = append(f.assumed, form.Get("RoleArn"))
	n := len(f.assumed)
	key := awsKey{secret: fmt.Sprintf("assumed-secret-%d", n), sessionToken: fmt.Sprintf("session-token-%d", n)}
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
		AssumedRoleUser: "arn:aws:sts::" + awsAccount + ":assumed-role/mirror/" + form.Get("RoleSessionName"),
		RequestID:       "req-1",
	})
}
