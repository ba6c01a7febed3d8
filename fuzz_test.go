package nebula

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/types"
)

// FuzzCredentialInput drives creds/<name> writes with arbitrary names, types
// and field values. Every input must either be stored and read back without
// its secret, or be refused with a 400 CredentialError that does not echo
// the secret; nothing may panic or answer 500.
func FuzzCredentialInput(f *testing.F) {
	f.Add("github", "oauth2", "client_id", "cid", "s3cr3t-value", "read,write")
	f.Add("key-1", "api_key", "placement", "query", "k3y-value", "")
	f.Add("b", "basic_auth", "username", "a:b", "pa55", "x")
	f.Add("bad$name", "bearer", "expires_at", "2027-01-01T00:00:00Z", "tok", "")
	f.Add("x", "kerberos", "tags", "a b", "", "\x00")
	f.Add(strings.Repeat("n", 130), "api_key", "metadata", "k=v", "v", "")

	f.Fuzz(func(t *testing.T, name, typ, field, value, secret, tags string) {
		if strings.ContainsAny(name, "/?#") || name == "" {
			t.Skip("not a single path segment")
		}
		e := newTestBackend(t)
		data := map[string]any{
			"type": typ, field: value, "tags": tags,
			// Every secret field of every type gets the same secret.
			"api_key": secret, "password": secret, "token": secret, "client_secret": secret,
			"username": "u", "client_id": "c", "token_url": "https://auth.example.com/token",
		}
		resp, err := e.request(t, logical.CreateOperation, "creds/"+name, data)
		if err != nil {
			var ce *CredentialError
			if !errors.As(err, &ce) {
				t.Fatalf("unclassified error %T: %v", err, err)
			}
			if ce.Code() != 400 {
				t.Fatalf("want 400, got %d: %v", ce.Code(), err)
			}
			if len(secret) >= 8 && strings.Contains(err.Error(), secret) {
				t.Fatalf("error echoes the secret: %v", err)
			}
			return
		}
		read := e.mustRequest(t, logical.ReadOperation, "creds/"+name, nil)
		for _, r := range []*logical.Response{resp, read} {
			for k, v := range r.Data {
				if s, ok := v.(string); ok && len(secret) >= 8 && strings.Contains(s, secret) && k != field {
					t.Fatalf("response field %q holds the secret", k)
				}
			}
		}
	})
}

// FuzzWebhookAnswer feeds arbitrary webhook answers to the parser: it
// must not panic, must accept only string values of the type's secret
// fields (bearer: and expires_at), and must not echo values in errors.
func FuzzWebhookAnswer(f *testing.F) {
	f.Add("api_key", []byte(`{"api_key":"k"}`))
	f.Add("bearer", []byte(`{"token":"t","expires_at":"2027-01-01T00:00:00Z"}`))
	f.Add("basic_auth", []byte(`{"password":"p","username":"u"}`))
	f.Add("api_key", []byte(`{"api_key":1}`))
	f.Add("api_key", []byte(`[]`))
	f.Add("bearer", []byte(`{"token":"a\r\nb"}`))
	f.Fuzz(func(t *testing.T, typ string, raw []byte) {
		tt, ok := types.Lookup(typ)
		if !ok {
			return
		}
		fail := func(format string, args ...any) error {
			return newError(KindRotationFailed, "webhook: "+format, args...)
		}
		values, err := parseWebhookAnswer(tt, raw, fail)
		if err != nil {
			if ErrorKind(err) != KindRotationFailed {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		allowed := map[string]bool{"expires_at": tt == types.Bearer}
		for _, name := range tt.SecretFields() {
			allowed[name] = true
		}
		for name, v := range values {
			if !allowed[name] {
				t.Fatalf("accepted field %q", name)
			}
			if _, ok := v.(string); !ok {
				t.Fatalf("accepted a non-string %q", name)
			}
		}
	})
}
