package acceptance

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-cleanhttp"

	"github.com/nebula-credential/nebula-credential/test/harness"
	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// TestInteractiveFlows: OAuth2 sign-in flows through a real Vault. The
// provider sends the user's browser to the mount's callback, which Vault
// serves without a Vault token (PathsSpecial.Unauthenticated) and only
// there; the state in the redirect works once.
func TestInteractiveFlows(t *testing.T) {
	v := harness.SharedDev(t)
	mount := mountForFlows(t, v)
	srv := oauthserver.Start(t)
	root := apiDriver{c: v.Client()}
	// The mount is this test's own, so allowing plain http to the loopback
	// provider changes nothing for other tests.
	mustWrite(t, root, mount+"/config", map[string]any{"insecure_http_hosts": "127.0.0.1"})

	t.Run("authorization code", func(t *testing.T) {
		name := newName("flow-user")
		id, secret := srv.WebClient()
		started := mustWrite(t, root, mount+"/flows/start", map[string]any{
			"name": name, "client_id": id, "client_secret": secret,
			"auth_url": srv.AuthURL(), "token_url": srv.TokenURL(), "auth_style": "header",
			"scopes": "openid,offline_access", "redirect_uri": v.Addr + "/v1/" + mount + "/callback",
		})
		requireNoSecrets(t, "flows/start", started.Raw, []string{secret})
		back := srv.Login(t, field(started.Data, "auth_url"))
		if !strings.HasPrefix(back, v.Addr+"/v1/"+mount+"/callback?") {
			t.Fatalf("the provider redirected to %s, not to the mount's callback", back)
		}

		// The browser follows the redirect, with no Vault token.
		status, body := browserGet(t, back)
		if status != http.StatusOK {
			t.Fatalf("callback answered %d: %s", status, body)
		}
		var answer struct{ Data map[string]any }
		if err := json.Unmarshal([]byte(body), &answer); err != nil {
			t.Fatalf("callback answer %q: %v", body, err)
		}
		requireFields(t, answer.Data, map[string]string{"status": "completed", "name": name})
		requireNoSecrets(t, "callback", body, []string{secret})

		status, body = browserGet(t, back)
		if status != http.StatusBadRequest || !strings.Contains(body, "invalid_callback") {
			t.Errorf("replayed callback answered %d %s; want 400 invalid_callback", status, body)
		}

		flow := mustRead(t, root, mount+"/flows/"+field(started.Data, "flow_id"))
		requireFields(t, flow.Data, map[string]string{"status": "completed", "name": name})
		tok := mustRead(t, root, mount+"/token/"+name)
		if field(tok.Data, "access_token") == "" {
			t.Errorf("token/%s answered no access_token: %s", name, tok.Raw)
		}
		mustWrite(t, root, mount+"/refresh/"+name, nil)

		// Only the callback is open: flows/<id> needs a token.
		status, _ = browserGet(t, v.Addr+"/v1/"+mount+"/flows/"+field(started.Data, "flow_id"))
		if status != http.StatusForbidden {
			t.Errorf("flows/<id> without a token answered %d, want 403", status)
		}
	})

	t.Run("device code", func(t *testing.T) {
		name := newName("flow-device")
		id, secret := srv.DeviceClient()
		started := mustWrite(t, root, mount+"/flows/start", map[string]any{
			"name": name, "grant_type": "device_code", "client_id": id, "client_secret": secret,
			"device_url": srv.DeviceURL(), "token_url": srv.TokenURL(), "auth_style": "header",
			"scopes": "openid,offline_access",
		})
		requireFields(t, started.Data, map[string]string{"interaction_type": "device_code", "status": "pending"})
		srv.ApproveDevice(t, field(started.Data, "user_code"))

		path := mount + "/flows/" + field(started.Data, "flow_id")
		var flow *response
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
			if flow = mustRead(t, root, path); field(flow.Data, "status") != "pending" {
				break
			}
		}
		requireFields(t, flow.Data, map[string]string{"status": "completed", "name": name})
		mustRead(t, root, mount+"/token/"+name)
	})
}

// mountForFlows mounts the plugin at a path of the test's own and unmounts
// it when the test ends.
func mountForFlows(tb testing.TB, v *harness.Vault) string {
	tb.Helper()
	mount := newName("nebula-flows")
	if _, err := v.CLI(tb, "secrets", "enable", "-path="+mount, "-plugin-version="+v.Plugin.Version, v.Plugin.Name); err != nil {
		tb.Fatalf("mounting the plugin at %s/: %v", mount, err)
	}
	tb.Cleanup(func() {
		if _, err := v.CLI(tb, "secrets", "disable", mount); err != nil {
			tb.Errorf("unmounting %s/: %v", mount, err)
		}
	})
	return mount
}

// browserGet opens a URL as a browser would: no Vault token, no redirects
// followed. It answers the status and body.
func browserGet(tb testing.TB, rawURL string) (int, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		tb.Fatalf("GET %s: %v", rawURL, err)
	}
	client := cleanhttp.DefaultClient()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		tb.Fatalf("reading the answer of %s: %v", rawURL, err)
	}
	return resp.StatusCode, string(body)
}
