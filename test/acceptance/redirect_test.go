package acceptance

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nebula-credential/nebula-credential/test/harness"
	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// TestSecretsCannotBeRedirected: no write that omits a credential's secret
// moves where the engine sends it. A creds/ update, a providers/ write and a
// batch/create item each point the endpoints of an existing credential at
// another listener without the client secret; refresh/ and rotate/ still go
// to the real OAuth2 server, and the listener receives nothing. Both servers
// are on 127.0.0.1, listed in insecure_http_hosts, so only the redirect rule
// keeps the secret from the listener.
func TestSecretsCannotBeRedirected(t *testing.T) {
	v := harness.SharedDev(t)
	mount := ownMount(t, v, "nebula-redirect")
	srv := oauthserver.Start(t)
	var hits atomic.Int64
	listener := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		http.Error(w, "not a token endpoint", http.StatusBadRequest)
	}))
	t.Cleanup(listener.Close)
	root := apiDriver{c: v.Client()}
	mustWrite(t, root, mount+"/config", map[string]any{"insecure_http_hosts": "127.0.0.1"})
	id, secret := srv.ClientCredentialsClient()

	// refreshAndRotate refreshes and rotates a credential; both must reach
	// the real server, and the listener nothing.
	refreshAndRotate := func(t *testing.T, name string) {
		t.Helper()
		before := srv.TokenRequests()
		mustWrite(t, root, mount+"/refresh/"+name, nil)
		mustWrite(t, root, mount+"/rotate/"+name, nil)
		if got := srv.TokenRequests() - before; got != 2 {
			t.Errorf("refresh and rotate made %d token requests to the real server; want 2", got)
		}
		if n := hits.Load(); n != 0 {
			t.Fatalf("the listener at the new address received %d requests", n)
		}
	}
	create := func(t *testing.T, name string, endpoint map[string]any) {
		t.Helper()
		data := map[string]any{"type": "oauth2", "client_id": id, "client_secret": secret, "auth_style": "header"}
		for k, val := range endpoint {
			data[k] = val
		}
		mustWrite(t, root, mount+"/creds/"+name, data)
		mustRead(t, root, mount+"/token/"+name)
	}

	t.Run("creds update", func(t *testing.T) {
		name := newName("redirect-update")
		create(t, name, map[string]any{"token_url": srv.TokenURL(), "revocation_url": srv.RevocationURL()})
		_, err := root.Write(t, mount+"/creds/"+name, map[string]any{
			"token_url": listener.URL + "/token", "revocation_url": listener.URL + "/revoke",
		})
		requireError(t, err, http.StatusBadRequest, "invalid_input")
		requireErrorMentions(t, err, "token_url", "client_secret")
		requireNoSecrets(t, "the refusal", err.Error(), []string{secret})
		refreshAndRotate(t, name)
	})

	t.Run("providers write", func(t *testing.T) {
		preset := newName("corp")
		mustWrite(t, root, mount+"/providers/"+preset, map[string]any{
			"token_url": srv.TokenURL(), "revocation_url": srv.RevocationURL(), "auth_style": "header",
		})
		name := newName("redirect-provider")
		create(t, name, map[string]any{"provider": preset})
		mustWrite(t, root, mount+"/providers/"+preset, map[string]any{
			"token_url": listener.URL + "/token", "revocation_url": listener.URL + "/revoke",
		})
		refreshAndRotate(t, name)
	})

	t.Run("batch item", func(t *testing.T) {
		name := newName("redirect-batch")
		create(t, name, map[string]any{"token_url": srv.TokenURL(), "revocation_url": srv.RevocationURL()})
		resp := mustWrite(t, root, mount+"/batch/create", map[string]any{"items": []any{
			map[string]any{"name": name, "token_url": listener.URL + "/token", "revocation_url": listener.URL + "/revoke"},
		}})
		results, _ := resp.Data["results"].([]any)
		if len(results) != 1 {
			t.Fatalf("batch/create answered %s", resp.Raw)
		}
		result, _ := results[0].(map[string]any)
		if msg := field(result, "error"); !strings.HasPrefix(msg, "invalid_input:") || !strings.Contains(msg, "client_secret") {
			t.Errorf("the item's result is %v; want invalid_input naming client_secret", result)
		}
		refreshAndRotate(t, name)
	})
}
