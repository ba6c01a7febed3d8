package client_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/nebula-credential/nebula-credential/client"
)

// TestAccessDenied: Vault's own 403 (an ACL policy without the path)
// answers AccessDenied, although its message has no code.
func TestAccessDenied(t *testing.T) {
	t.Parallel()
	c, v := newClient(t)
	ctx := testContext(t)
	name := newName("acl")
	if _, err := c.Create(ctx, name, client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret("acl-SECRET")}}); err != nil {
		t.Fatal(err)
	}
	policy := newName("client-reader")
	root := v.Client()
	if err := root.Sys().PutPolicyWithContext(ctx, policy, fmt.Sprintf(`
path "%[1]s/creds/%[2]s" {
  capabilities = ["read"]
}
`, c.Mount(), name)); err != nil {
		t.Fatal(err)
	}
	secret, err := root.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{policy}, NoDefaultPolicy: true, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	limited := client.New(v.ClientWithToken(secret.Auth.ClientToken))

	if _, err := limited.Get(ctx, name); err != nil {
		t.Fatalf("Get with the policy's token: %v", err)
	}
	_, err = limited.GetToken(ctx, name, nil)
	e := requireKindCode(t, err, client.AccessDenied, client.ErrAccessDenied, "")
	if !strings.Contains(e.Message, "permission denied") {
		t.Errorf("Vault's 403 parsed as %+v", e)
	}
	err = limited.Delete(ctx, name)
	requireKindCode(t, err, client.AccessDenied, client.ErrAccessDenied, "")
	_, err = limited.List(ctx)
	requireKindCode(t, err, client.AccessDenied, client.ErrAccessDenied, "")
}

// fakeVault answers every request with status and body, as recorded from
// Vault and the engine.
func fakeVault(t *testing.T, status int, body string) *client.Client {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(ts.Close)
	vc, err := api.NewClient(&api.Config{Address: ts.URL, HttpClient: &http.Client{}, MaxRetries: 0})
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken("test")
	return client.New(vc)
}

// TestRecordedErrors: error bodies the engine (or Vault) sends, as
// recorded, for what a test cannot provoke through a real server
// (storage_error; no_refresh_token, which the engine's input validation
// makes unreachable; the engine's own access_denied, which only the
// unauthenticated callback answers) and for the shapes around the code
// (Vault's multierror wrapper, several messages, an uncoded or unparsable
// body). The other kinds are also provoked for real in the other tests.
func TestRecordedErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		status   int
		body     string
		kind     client.Kind
		sentinel error
		code     string
		message  string
	}{
		{"storage_error", 500, `{"errors":["storage_error: reading credential: storage unavailable"]}`, client.Storage, client.ErrStorage, "storage_error", "reading credential: storage unavailable"},
		{"unavailable", 503, `{"errors":["unavailable: device authorization endpoint: answered 503"]}`, client.Unavailable, client.ErrUnavailable, "unavailable", "device authorization endpoint: answered 503"},
		{"sealed", 503, `{"errors":["Vault is sealed"]}`, client.Unavailable, client.ErrUnavailable, "", "Vault is sealed"},
		{"no_token", 422, `{"errors":["no_token: the previous version of \"gh\" has no token"]}`, client.NoToken, client.ErrNoToken, "no_token", `the previous version of "gh" has no token`},
		{"no_refresh_token", 422, `{"errors":["no_refresh_token: credential \"gh\" has no refresh token"]}`, client.NoRefreshToken, client.ErrNoRefreshToken, "no_refresh_token", `credential "gh" has no refresh token`},
		{"rotation_in_progress", 409, `{"errors":["rotation_in_progress: credential \"x\" is being rotated; try again when it finishes"]}`, client.RotationInProgress, client.ErrRotationInProgress, "rotation_in_progress", `credential "x" is being rotated; try again when it finishes`},
		{"flow_expired", 410, `{"errors":["flow_expired: flow 0c6a expired at 2030-01-01T00:00:00Z; start a new flow"]}`, client.FlowExpired, client.ErrFlowExpired, "flow_expired", "flow 0c6a expired at 2030-01-01T00:00:00Z; start a new flow"},
		{"engine access_denied", 403, `{"errors":["access_denied: the authorization server answered access_denied: the user did not grant access"]}`, client.AccessDenied, client.ErrAccessDenied, "access_denied", "the authorization server answered access_denied: the user did not grant access"},
		{"multierror wrapper", 400, `{"errors":["1 error occurred:\n\t* invalid_input: name is invalid\n\n"]}`, client.InvalidInput, client.ErrInvalidInput, "invalid_input", "name is invalid"},
		{"two messages", 404, `{"errors":["not_found: credential \"x\" does not exist","second"]}`, client.NotFound, client.ErrNotFound, "not_found", `credential "x" does not exist; second`},
		{"uncoded 404", 404, `{"errors":["1 error occurred:\n\t* unsupported path\n\n"]}`, client.NotFound, client.ErrNotFound, "", "unsupported path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fakeVault(t, tt.status, tt.body)
			_, err := c.Get(testContext(t), "x")
			e := requireKindCode(t, err, tt.kind, tt.sentinel, tt.code)
			if e.Message != tt.message || e.Status != tt.status {
				t.Errorf("parsed %+v; want code %q, message %q, status %d", e, tt.code, tt.message, tt.status)
			}
			if !strings.Contains(e.Error(), tt.message) || !strings.Contains(e.Error(), fmt.Sprint(tt.status)) {
				t.Errorf("Error() = %q", e.Error())
			}
		})
	}

	t.Run("unknown code and status", func(t *testing.T) {
		_, err := fakeVault(t, 502, `<html>Bad Gateway</html>`).Get(testContext(t), "x")
		e, ok := err.(*client.Error)
		if !ok || e.Kind != client.Unknown || e.Status != 502 || strings.Contains(e.Message, "html") {
			t.Errorf("a proxy's page answered %#v", err)
		}
		_, err = fakeVault(t, 409, `{"errors":["something new: x"]}`).Get(testContext(t), "x")
		if e, ok := err.(*client.Error); !ok || e.Kind != client.Unknown || e.Message != "something new: x" {
			t.Errorf("an unknown code answered %#v", err)
		}
	})
	t.Run("empty list", func(t *testing.T) {
		names, err := fakeVault(t, 404, `{"errors":[]}`).List(testContext(t))
		if err != nil || len(names) != 0 {
			t.Errorf("List of an empty mount = %v, %v", names, err)
		}
	})
	t.Run("transport error", func(t *testing.T) {
		vc, err := api.NewClient(&api.Config{Address: closedURL(t, ""), HttpClient: &http.Client{}, MaxRetries: 0})
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.New(vc).Get(testContext(t), "x")
		if err == nil || client.ErrorKind(err) != client.Unknown || !strings.HasPrefix(err.Error(), "nebula: ") {
			t.Errorf("an unreachable Vault answered %v", err)
		}
	})
}
