package acceptance

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/test/harness"
	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// keyFile writes a PEM key to a file for `vault write private_key=@file`.
func keyFile(tb testing.TB, pemKey string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "key.pem")
	if err := os.WriteFile(path, []byte(pemKey), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// requireNewJTIs checks that the server saw want assertions of param, each
// with its own jti.
func requireNewJTIs(tb testing.TB, srv *oauthserver.Server, param string, want int) {
	tb.Helper()
	seen := map[string]bool{}
	n := 0
	for _, a := range srv.Assertions() {
		if a.Param != param {
			continue
		}
		n++
		if a.JTI == "" || seen[a.JTI] {
			tb.Errorf("assertion %d has jti %q, empty or used before", n, a.JTI)
		}
		seen[a.JTI] = true
	}
	if n != want {
		tb.Errorf("the server saw %d %s assertions; want %d", n, param, want)
	}
}

// TestSignedJWTCredentials: a private_key_jwt client_credentials
// credential and a jwt_bearer credential get tokens from the zitadel OP
// through vault read token/<name>, refresh with a new assertion (new jti)
// each time, and creds/ reads never show the key.
func TestSignedJWTCredentials(t *testing.T) {
	v := harness.SharedDev(t)
	mount := ownMount(t, v, "nebula-jwt")
	srv := oauthserver.Start(t, oauthserver.WithAccessTokenLifetime(time.Hour))
	cliWrite(t, v, mount+"/config", "insecure_http_hosts=127.0.0.1")

	t.Run("private_key_jwt", func(t *testing.T) {
		id, kid, key := srv.PrivateKeyJWTClient()
		name := newName("pkjwt")
		cliWrite(t, v, mount+"/creds/"+name, "type=oauth2", "grant_type=client_credentials", "client_id="+id,
			"auth_style=private_key_jwt", "private_key=@"+keyFile(t, key), "key_id="+kid,
			"assertion_audience="+srv.URL, "token_url="+srv.TokenURL(), "scopes=api")
		first := field(cliRead(t, v, mount+"/token/"+name).Data, "access_token")
		second := field(cliWrite(t, v, mount+"/refresh/"+name).Data, "access_token")
		third := field(cliWrite(t, v, mount+"/refresh/"+name).Data, "access_token")
		if first == "" || second == first || third == second {
			t.Fatalf("access tokens %q, %q, %q; want three different ones", first, second, third)
		}
		requireNewJTIs(t, srv, "client_assertion", 3)
		read := cliRead(t, v, mount+"/creds/"+name)
		requireNoSecrets(t, "creds read", read.Raw, []string{"PRIVATE KEY", keyBody(key)})
		requireFields(t, read.Data, map[string]string{"status": "active", "auth_style": "private_key_jwt", "key_id": kid})
	})

	t.Run("jwt_bearer", func(t *testing.T) {
		issuer, kid, key := srv.JWTProfileKey()
		name := newName("bearer")
		cliWrite(t, v, mount+"/creds/"+name, "type=oauth2", "grant_type=jwt_bearer", "issuer="+issuer,
			"private_key=@"+keyFile(t, key), "key_id="+kid, "audience="+srv.URL, "token_url="+srv.TokenURL(), "scopes=openid")
		first := field(cliRead(t, v, mount+"/token/"+name).Data, "access_token")
		second := field(cliWrite(t, v, mount+"/refresh/"+name).Data, "access_token")
		if first == "" || second == first {
			t.Fatalf("access tokens %q, %q; want two different ones", first, second)
		}
		requireNewJTIs(t, srv, "assertion", 2)
		if n := srv.TokenRequestsFor("urn:ietf:params:oauth:grant-type:jwt-bearer"); n != 2 {
			t.Errorf("jwt-bearer token requests: %d; want 2", n)
		}
		read := cliRead(t, v, mount+"/creds/"+name)
		requireNoSecrets(t, "creds read", read.Raw, []string{"PRIVATE KEY", keyBody(key)})
	})
}

// keyBody is a line from the middle of a PEM key, to look for in output.
func keyBody(pemKey string) string {
	lines := strings.Split(strings.TrimSpace(pemKey), "\n")
	return lines[len(lines)/2]
}

// eventReceiver is a loopback notification receiver that verifies every
// signature as a receiver would.
type eventReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	events []map[string]any
	bad    []string
	got    chan struct{}
	// holding, while true, leaves requests unanswered (and unrecorded)
	// until their sender gives up; arrived is signalled for every request.
	holding bool
	arrived chan struct{}
}

func startEventReceiver(tb testing.TB, secret string) *eventReceiver {
	r := &eventReceiver{got: make(chan struct{}, 100), arrived: make(chan struct{}, 100)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// The body is read first: only then does the server notice a
		// sender that gives up (req.Context is cancelled).
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		hold := r.holding
		r.mu.Unlock()
		select {
		case r.arrived <- struct{}{}:
		default:
		}
		if hold {
			select {
			case <-req.Context().Done():
			case <-time.After(90 * time.Second):
			}
			return
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(req.Header.Get("X-Nebula-Timestamp") + "."))
		mac.Write(body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		var ev map[string]any
		err := json.Unmarshal(body, &ev)
		r.mu.Lock()
		if err != nil || !hmac.Equal([]byte(want), []byte(req.Header.Get("X-Nebula-Signature"))) {
			r.bad = append(r.bad, string(body))
		} else {
			r.events = append(r.events, ev)
		}
		r.mu.Unlock()
		select {
		case r.got <- struct{}{}:
		default:
		}
	}))
	tb.Cleanup(r.Close)
	return r
}

// hold sets whether requests are left unanswered (see holding).
func (r *eventReceiver) hold(on bool) {
	r.mu.Lock()
	r.holding = on
	r.mu.Unlock()
}

func (r *eventReceiver) wait(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.After(30 * time.Second)
	for range n {
		select {
		case <-r.got:
		case <-deadline:
			tb.Fatalf("the receiver did not get %d notifications within 30 s", n)
		}
	}
}

// TestRevokedGrantNeedsReconnect: a refresh-token credential whose grant the
// user revoked at the provider becomes needs_reconnect after one failed
// refresh; background runs, reads and refresh/ then make no upstream
// request; a new refresh token makes it active again; the receiver gets
// needs_reconnect and recovered, both correctly signed.
func TestRevokedGrantNeedsReconnect(t *testing.T) {
	v := harness.SharedDev(t)
	mount := ownMount(t, v, "nebula-reconnect")
	srv := oauthserver.Start(t, oauthserver.WithAccessTokenLifetime(time.Hour))
	const secret = "receiver-secret-0123456789"
	rcv := startEventReceiver(t, secret)
	cliWrite(t, v, mount+"/config", "insecure_http_hosts=127.0.0.1", "notify_url="+rcv.URL+"/events", "notify_secret="+secret)
	requireNoSecrets(t, "config read", cliRead(t, v, mount+"/config").Raw, []string{secret})

	id, clientSecret, refresh := srv.SignedInGrant(t)
	name := newName("revoked")
	cliWrite(t, v, mount+"/creds/"+name, "type=oauth2", "grant_type=refresh_token", "client_id="+id,
		"client_secret="+clientSecret, "refresh_token="+refresh, "token_url="+srv.TokenURL(), "auth_style=header")
	if field(cliRead(t, v, mount+"/token/"+name).Data, "access_token") == "" {
		t.Fatal("no access token before the revocation")
	}

	if n := srv.RevokeGrants(id); n != 1 {
		t.Fatalf("revoked %d grants at the provider; want 1", n)
	}
	_, err := v.CLI(t, "write", "-format=json", "-f", mount+"/refresh/"+name)
	requireError(t, cliError(err), http.StatusBadGateway, "refresh_failed")
	requireErrorMentions(t, cliError(err), "invalid_grant")
	read := cliRead(t, v, mount+"/creds/"+name)
	if got := field(read.Data, "status"); got != "needs_reconnect" {
		t.Fatalf("status after invalid_grant = %q; want needs_reconnect", got)
	}
	calls := srv.TokenRequests()

	// A background refresh run, a read (the last token is still valid: it
	// is served) and refresh/ (no token: 422 no_token) call nobody.
	cliWrite(t, v, mount+"/refresh")
	if field(cliRead(t, v, mount+"/token/"+name).Data, "access_token") == "" {
		t.Error("the last token, still valid, is not served")
	}
	_, err = v.CLI(t, "write", "-format=json", "-f", mount+"/refresh/"+name)
	requireError(t, cliError(err), http.StatusUnprocessableEntity, "no_token")
	requireErrorMentions(t, cliError(err), "creds/"+name)
	wantRequests(t, srv, calls, "after the grant died")
	health := cliRead(t, v, mount+"/health")
	if !strings.Contains(health.Raw, "needs_reconnect") || !strings.Contains(health.Raw, name) {
		t.Errorf("health does not name %s as needs_reconnect:\n%s", name, health.Raw)
	}

	// Who may reconnect it is a policy on creds/<name>/reconnect:
	// flows/start never replaces a credential.
	webID, webSecret := srv.WebClient()
	flowInput := map[string]any{
		"client_id": webID, "client_secret": webSecret, "auth_url": srv.AuthURL(), "token_url": srv.TokenURL(),
		"auth_style": "header", "scopes": "openid,offline_access", "redirect_uri": "http://127.0.0.1:1/callback",
	}
	flowsOnly := apiDriver{c: v.ClientWithToken(tokenWithPolicy(t, v, newName("flows-only"), fmt.Sprintf(`
path "%s/flows/start" {
  capabilities = ["update"]
}
`, mount)))}
	withName := map[string]any{"name": name}
	for k, val := range flowInput {
		withName[k] = val
	}
	_, err = flowsOnly.Write(t, mount+"/flows/start", withName)
	requireError(t, err, http.StatusConflict, "duplicate")
	requireErrorMentions(t, err, "creds/"+name+"/reconnect")
	_, err = flowsOnly.Write(t, mount+"/creds/"+name+"/reconnect", flowInput)
	requireError(t, err, http.StatusForbidden, "")
	reconnector := apiDriver{c: v.ClientWithToken(tokenWithPolicy(t, v, newName("reconnect-one"), fmt.Sprintf(`
path "%s/creds/%s/reconnect" {
  capabilities = ["update"]
}
`, mount, name)))}
	started, err := reconnector.Write(t, mount+"/creds/"+name+"/reconnect", flowInput)
	if err != nil {
		t.Fatalf("creds/%s/reconnect with a policy for it: %v", name, err)
	}
	requireFields(t, started.Data, map[string]string{"status": "pending", "interaction_type": "redirect"})
	requireNoSecrets(t, "reconnect answer", started.Raw, []string{webSecret, clientSecret})
	wantRequests(t, srv, calls, "starting a redirect flow")

	// The user connects again: a new refresh token makes it active.
	_, _, fresh := srv.SignedInGrant(t) // one code exchange
	calls++
	cliWrite(t, v, mount+"/creds/"+name, "refresh_token="+fresh)
	requireFields(t, cliRead(t, v, mount+"/creds/"+name).Data, map[string]string{"status": "active"})
	if field(cliWrite(t, v, mount+"/refresh/"+name).Data, "access_token") == "" {
		t.Fatal("no access token after reconnecting")
	}
	wantRequests(t, srv, calls+1, "after reconnecting")

	rcv.wait(t, 2)
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.bad) > 0 {
		t.Errorf("notifications whose signature did not verify: %q", rcv.bad)
	}
	var events []string
	for _, ev := range rcv.events {
		if ev["credential"] != name || ev["type"] != "oauth2" {
			t.Errorf("event %v is not about %s", ev, name)
		}
		events = append(events, ev["event"].(string))
	}
	if strings.Join(events, ",") != "needs_reconnect,recovered" {
		t.Errorf("events %v; want needs_reconnect then recovered", events)
	}
	if rcv.events[0]["error_code"] != "invalid_grant" {
		t.Errorf("needs_reconnect has error_code %v; want invalid_grant", rcv.events[0]["error_code"])
	}
}
