package nebula

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// testRedirectURI is the callback URL the flows register; the loopback
// server accepts any http URL on 127.0.0.1.
const testRedirectURI = "http://127.0.0.1:8200/v1/nebula/callback"

// startCodeFlow starts an authorization code flow for the server's web
// client that creates credential name, and returns flows/start's answer.
func startCodeFlow(tb testing.TB, e *testEnv, srv *oauthserver.Server, name string) map[string]any {
	tb.Helper()
	id, secret := srv.WebClient()
	resp := e.mustRequest(tb, logical.UpdateOperation, "flows/start", map[string]any{
		"name": name, "client_id": id, "client_secret": secret,
		"auth_url": srv.AuthURL(), "token_url": srv.TokenURL(), "auth_style": "header",
		"scopes": "openid,offline_access", "redirect_uri": testRedirectURI,
		"description": "signed in by a user", "tags": "team:a",
	})
	return resp.Data
}

// signIn starts a flow and signs the user in through its auth_url as a
// browser would; it returns the flow id and the callback's query.
func signIn(tb testing.TB, e *testEnv, srv *oauthserver.Server, name string) (flowID string, query url.Values) {
	tb.Helper()
	started := startCodeFlow(tb, e, srv, name)
	back := srv.Login(tb, started["auth_url"].(string))
	require.True(tb, strings.HasPrefix(back, testRedirectURI+"?"), "the provider redirects to redirect_uri: %s", back)
	u, err := url.Parse(back)
	require.NoError(tb, err)
	return started["flow_id"].(string), u.Query()
}

// callback calls the callback path with a query, as Vault routes the
// browser's GET.
func callback(tb testing.TB, e *testEnv, query url.Values) (*logical.Response, error) {
	tb.Helper()
	data := map[string]any{}
	for k := range query {
		data[k] = query.Get(k)
	}
	return e.request(tb, logical.ReadOperation, "callback", data)
}

func with(q url.Values, key, value string) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = v
	}
	out.Set(key, value)
	return out
}

func flowStatus(tb testing.TB, e *testEnv, id string) map[string]any {
	tb.Helper()
	return e.mustRequest(tb, logical.ReadOperation, "flows/"+id, nil).Data
}

func requireNoCredentials(tb testing.TB, e *testEnv) {
	tb.Helper()
	resp := e.mustRequest(tb, logical.ListOperation, "creds/", nil)
	require.Empty(tb, resp.Data["keys"], "no credential is left behind")
}

func TestFlowAuthorizationCode(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	_, secret := srv.WebClient()
	started := startCodeFlow(t, e, srv, "user")
	require.Equal(t, "redirect", started["interaction_type"])
	require.Equal(t, "pending", started["status"])
	require.Equal(t, e.clock.Now().Add(10*time.Minute).UTC().Format(time.RFC3339), started["expires_at"], "flow_ttl")
	authURL, err := url.Parse(started["auth_url"].(string))
	require.NoError(t, err)
	require.Equal(t, "S256", authURL.Query().Get("code_challenge_method"))
	require.NotEmpty(t, authURL.Query().Get("state"))
	require.NotContains(t, started["auth_url"], secret)
	requireNoSecrets(t, started)

	back := srv.Login(t, started["auth_url"].(string))
	u, err := url.Parse(back)
	require.NoError(t, err)
	require.Equal(t, authURL.Query().Get("state"), u.Query().Get("state"))
	done, err := callback(t, e, u.Query())
	require.NoError(t, err)
	require.Equal(t, "completed", done.Data["status"])
	require.Equal(t, "user", done.Data["name"])
	require.EqualValues(t, 1, srv.TokenRequestsFor("authorization_code"))

	status := flowStatus(t, e, started["flow_id"].(string))
	require.Equal(t, "completed", status["status"])
	cred := e.mustRequest(t, logical.ReadOperation, "creds/user", nil).Data
	require.Equal(t, status["id"], cred["id"])
	require.Equal(t, "authorization_code", cred["grant_type"])
	require.Equal(t, "signed in by a user", cred["description"])
	require.Equal(t, []string{"team:a"}, cred["tags"])
	require.NotContains(t, mustJSON(t, cred), secret)

	// The first token is stored with the credential: served without a
	// token request, and indexed for refresh-ahead.
	tok := e.mustRequest(t, logical.ReadOperation, "token/user", nil).Data
	require.NotEmpty(t, tok["access_token"])
	require.InDelta(t, 600, tok["rotation_period"], 2)
	require.EqualValues(t, 1, srv.TokenRequests())
	keys, err := logical.CollectKeysWithPrefix(t.Context(), e.storage, expiryPrefix)
	require.NoError(t, err)
	require.Len(t, keys, 1)

	// Later tokens come from the refresh token, which the server rotates:
	// a second refresh works only with the rotated one.
	first := e.mustRequest(t, logical.UpdateOperation, "refresh/user", nil).Data
	require.NotEqual(t, tok["access_token"], first["access_token"])
	second := e.mustRequest(t, logical.UpdateOperation, "refresh/user", nil).Data
	require.NotEqual(t, first["access_token"], second["access_token"])
	require.EqualValues(t, 2, srv.TokenRequestsFor("refresh_token"))

	// The ended flow keeps nothing secret.
	snap := e.storage.snapshot(t)
	require.NotContains(t, snap[flowKey(started["flow_id"].(string))], secret)
	require.NotContains(t, snap[flowKey(started["flow_id"].(string))], "verifier\":\"")
}

func TestFlowAuthorizationCodePublicClient(t *testing.T) {
	e, srv := newOAuthEnv(t)
	resp := e.mustRequest(t, logical.UpdateOperation, "flows/start", map[string]any{
		"name": "public", "client_id": oauthserver.PublicClientID,
		"auth_url": srv.AuthURL(), "token_url": srv.TokenURL(),
		"scopes": "openid,offline_access", "redirect_uri": testRedirectURI,
	})
	back := srv.Login(t, resp.Data["auth_url"].(string))
	u, err := url.Parse(back)
	require.NoError(t, err)
	_, err = callback(t, e, u.Query())
	require.NoError(t, err, "zitadel requires PKCE of public clients")
	e.mustRequest(t, logical.ReadOperation, "token/public", nil)
	e.mustRequest(t, logical.UpdateOperation, "refresh/public", nil)
}

func TestFlowCompletePath(t *testing.T) {
	e, srv := newOAuthEnv(t)
	idA, queryA := signIn(t, e, srv, "a")
	idB, queryB := signIn(t, e, srv, "b")

	// The state of another flow is refused and stays usable by its flow.
	_, err := e.request(t, logical.UpdateOperation, "flows/"+idA+"/complete", map[string]any{"code": queryB.Get("code"), "state": queryB.Get("state")})
	requireKind(t, err, KindInvalidCallback)
	requireNoCredentials(t, e)

	resp := e.mustRequest(t, logical.UpdateOperation, "flows/"+idB+"/complete", map[string]any{"code": queryB.Get("code"), "state": queryB.Get("state")})
	require.Equal(t, "completed", resp.Data["status"])
	resp = e.mustRequest(t, logical.UpdateOperation, "flows/"+idA+"/complete", map[string]any{"code": queryA.Get("code"), "state": queryA.Get("state")})
	require.Equal(t, "completed", resp.Data["status"])
	require.Equal(t, "a", resp.Data["name"])
	e.mustRequest(t, logical.ReadOperation, "token/a", nil)
	e.mustRequest(t, logical.ReadOperation, "token/b", nil)

	_, err = e.request(t, logical.UpdateOperation, "flows/"+idA+"/complete", map[string]any{"code": queryA.Get("code"), "state": queryA.Get("state")})
	requireKind(t, err, KindInvalidCallback, "already used")
	_, err = e.request(t, logical.UpdateOperation, "flows/"+idA+"/complete", map[string]any{"code": "x"})
	requireKind(t, err, KindInvalidInput, "state")
}

func TestFlowCallbackAttacks(t *testing.T) {
	t.Run("replayed state after success", func(t *testing.T) {
		e, srv := newOAuthEnv(t)
		_, query := signIn(t, e, srv, "user")
		_, err := callback(t, e, query)
		require.NoError(t, err)
		created := e.mustRequest(t, logical.ReadOperation, "creds/user", nil).Data

		_, err = callback(t, e, query)
		requireKind(t, err, KindInvalidCallback)
		requireSafeMessage(t, err, query)
		again := e.mustRequest(t, logical.ReadOperation, "creds/user", nil).Data
		require.Equal(t, created["id"], again["id"], "the replay changed nothing")
		require.EqualValues(t, 1, srv.TokenRequestsFor("authorization_code"), "a replay never reaches the provider")
	})

	t.Run("replayed state after a failure", func(t *testing.T) {
		e, srv := newOAuthEnv(t)
		id, query := signIn(t, e, srv, "user")
		_, err := callback(t, e, with(query, "code", "forged-code"))
		requireKind(t, err, KindInvalidCallback, "invalid_grant")
		require.Equal(t, "failed", flowStatus(t, e, id)["status"])

		_, err = callback(t, e, query) // the genuine code, the spent state
		requireKind(t, err, KindInvalidCallback, "already used")
		requireNoCredentials(t, e)
	})

	t.Run("wrong or missing state", func(t *testing.T) {
		e, srv := newOAuthEnv(t)
		id, query := signIn(t, e, srv, "user")
		forged, err := randomState()
		require.NoError(t, err)
		_, err = callback(t, e, with(query, "state", forged))
		requireKind(t, err, KindInvalidCallback, "unknown")
		requireSafeMessage(t, err, query)
		_, err = callback(t, e, url.Values{"code": {query.Get("code")}})
		requireKind(t, err, KindInvalidCallback, "no state")
		requireNoCredentials(t, e)
		require.Zero(t, srv.TokenRequests(), "nothing reached the provider")

		// The flow itself is untouched.
		require.Equal(t, "pending", flowStatus(t, e, id)["status"])
		_, err = callback(t, e, query)
		require.NoError(t, err)
	})

	t.Run("expired flow", func(t *testing.T) {
		e, srv := newOAuthEnv(t)
		id, query := signIn(t, e, srv, "user")
		e.clock.Advance(10*time.Minute + time.Second) // flow_ttl is 10m
		require.Equal(t, "expired", flowStatus(t, e, id)["status"])

		_, err := callback(t, e, query)
		requireKind(t, err, KindFlowExpired, id)
		require.Equal(t, "expired", flowStatus(t, e, id)["status"])
		_, err = callback(t, e, query)
		requireKind(t, err, KindInvalidCallback, "already used")
		requireNoCredentials(t, e)
		require.Zero(t, srv.TokenRequests(), "an expired flow's code is not exchanged")
	})

	t.Run("code of another flow", func(t *testing.T) {
		e, srv := newOAuthEnv(t)
		idA, queryA := signIn(t, e, srv, "victim")
		_, queryB := signIn(t, e, srv, "attacker")

		// Flow B's code with flow A's state: the server checks B's PKCE
		// challenge against A's verifier.
		_, err := callback(t, e, with(queryA, "code", queryB.Get("code")))
		requireKind(t, err, KindInvalidCallback, "invalid_grant")
		requireSafeMessage(t, err, queryA, queryB)
		status := flowStatus(t, e, idA)
		require.Equal(t, "failed", status["status"])
		require.Contains(t, status["error"], "invalid_grant")
		requireNoCredentials(t, e)
	})

	t.Run("missing PKCE verifier", func(t *testing.T) {
		e, srv := newOAuthEnv(t)
		id, secret := srv.WebClient()

		// Someone who intercepts the redirect has the code but not the
		// verifier, which never leaves Vault: the server refuses the
		// exchange without it.
		_, stolen := signIn(t, e, srv, "stolen")
		conf := &oauth2.Config{ClientID: id, ClientSecret: secret, Endpoint: srv.Endpoint(), RedirectURL: testRedirectURI}
		_, err := conf.Exchange(t.Context(), stolen.Get("code"))
		var re *oauth2.RetrieveError
		require.ErrorAs(t, err, &re)
		require.Equal(t, "invalid_request", re.ErrorCode, "zitadel: code_verifier required")
		_, err = callback(t, e, stolen)
		require.NoError(t, err, "the user's own flow still completes")
		e.mustRequest(t, logical.DeleteOperation, "creds/stolen", nil)

		// A flow whose stored verifier is lost (here: removed from storage)
		// fails the same way, and creates nothing.
		flowID, query := signIn(t, e, srv, "user")
		f, err := loadFlow(t.Context(), e.storage, flowID)
		require.NoError(t, err)
		require.NotEmpty(t, f.Verifier)
		f.Verifier = ""
		require.NoError(t, saveFlow(t.Context(), e.storage, f, ""))
		_, err = callback(t, e, query)
		requireKind(t, err, KindInvalidCallback, "invalid_request")
		require.Equal(t, "failed", flowStatus(t, e, flowID)["status"])
		requireNoCredentials(t, e)
	})

	t.Run("provider error", func(t *testing.T) {
		e, srv := newOAuthEnv(t)
		id, query := signIn(t, e, srv, "user")
		denied := url.Values{"state": {query.Get("state")}, "error": {"access_denied"}, "error_description": {"user said no"}}
		_, err := callback(t, e, denied)
		requireKind(t, err, KindAccessDenied)
		require.NotContains(t, err.Error(), "user said no")
		status := flowStatus(t, e, id)
		require.Equal(t, "failed", status["status"])
		require.Contains(t, status["error"], "access_denied")

		_, err = callback(t, e, query)
		requireKind(t, err, KindInvalidCallback)
		requireNoCredentials(t, e)
		require.Zero(t, srv.TokenRequests())
	})

	t.Run("name taken while the flow ran", func(t *testing.T) {
		e, srv := newOAuthEnv(t)
		id, query := signIn(t, e, srv, "user")
		e.mustRequest(t, logical.CreateOperation, "creds/user", validCreds["api_key"])
		_, err := callback(t, e, query)
		requireKind(t, err, KindDuplicate, "user")
		require.Equal(t, "failed", flowStatus(t, e, id)["status"])
		require.Equal(t, "api_key", e.mustRequest(t, logical.ReadOperation, "creds/user", nil).Data["type"], "the existing credential is untouched")
	})
}

// requireSafeMessage checks that an error shows none of the callback's
// codes and states.
func requireSafeMessage(tb testing.TB, err error, queries ...url.Values) {
	tb.Helper()
	for _, q := range queries {
		for _, key := range []string{"code", "state"} {
			require.NotContains(tb, err.Error(), q.Get(key))
		}
	}
}

func TestFlowDeviceCode(t *testing.T) {
	e, srv := newOAuthEnv(t)
	e.b.now = time.Now // the flow polls at the server's interval of 1s
	started := startDeviceFlow(t, e, srv, "device")
	require.Equal(t, "device_code", started["interaction_type"])
	require.NotEmpty(t, started["user_code"])
	require.Equal(t, srv.URL+"/device", started["verification_uri"])
	require.Contains(t, started["verification_uri_complete"], "user_code=")
	require.EqualValues(t, 1, started["interval"])
	id := started["flow_id"].(string)

	require.Equal(t, "pending", flowStatus(t, e, id)["status"])
	require.Zero(t, srv.TokenRequests(), "no poll before the interval has passed")

	srv.ApproveDevice(t, started["user_code"].(string))
	start := time.Now()
	var status map[string]any
	for deadline := start.Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if status = flowStatus(t, e, id); status["status"] != "pending" {
			break
		}
	}
	require.Equal(t, "completed", status["status"], "flow: %v", status)
	polls := srv.TokenRequestsFor(oauthserver.GrantTypeDeviceCode)
	require.LessOrEqual(t, polls, int64(time.Since(start)/time.Second)+1, "at most one poll per interval")

	tok := e.mustRequest(t, logical.ReadOperation, "token/device", nil).Data
	require.NotEmpty(t, tok["access_token"])
	require.Equal(t, polls, srv.TokenRequests(), "the first token came from the poll")
	refreshed := e.mustRequest(t, logical.UpdateOperation, "refresh/device", nil).Data
	require.NotEqual(t, tok["access_token"], refreshed["access_token"])
	require.Equal(t, "device_code", e.mustRequest(t, logical.ReadOperation, "creds/device", nil).Data["grant_type"])
}

// startDeviceFlow starts a device code flow for the server's device client.
func startDeviceFlow(tb testing.TB, e *testEnv, srv *oauthserver.Server, name string) map[string]any {
	tb.Helper()
	id, secret := srv.DeviceClient()
	resp := e.mustRequest(tb, logical.UpdateOperation, "flows/start", map[string]any{
		"name": name, "grant_type": "device_code", "client_id": id, "client_secret": secret,
		"device_url": srv.DeviceURL(), "token_url": srv.TokenURL(), "auth_style": "header",
		"scopes": "openid,offline_access",
	})
	requireNoSecrets(tb, resp.Data)
	require.NotContains(tb, mustJSON(tb, resp.Data), secret)
	return resp.Data
}

// TestDeviceAuthorizationAuthenticatesTheClient: the device authorization
// request carries the client's authentication (RFC 8628 section 3.1), so a
// wrong client_secret sent with HTTP Basic is refused by the real
// authorization server when the flow starts (400 invalid_input), not only
// at the first poll. Before, the engine sent client_id alone and the start
// succeeded. (zitadel checks Basic and assertions at this endpoint, not a
// client_secret in the body; the body style's request is checked in
// internal/upstream's TestEngineBuiltRequestsAuthenticateTheClient.)
func TestDeviceAuthorizationAuthenticatesTheClient(t *testing.T) {
	e, srv := newOAuthEnv(t)
	id, _ := srv.DeviceClient()
	for _, style := range []string{"header", "auto"} {
		_, err := e.request(t, logical.UpdateOperation, "flows/start", map[string]any{
			"name": "device-" + style, "grant_type": "device_code", "client_id": id, "client_secret": "not-the-secret",
			"device_url": srv.DeviceURL(), "token_url": srv.TokenURL(), "auth_style": style,
		})
		requireKind(t, err, KindInvalidInput)
		require.Contains(t, err.Error(), "unauthorized_client", style) // zitadel's code for a wrong secret
		require.NotContains(t, err.Error(), "not-the-secret", style)
	}
	started := startDeviceFlow(t, e, srv, "device")
	require.NotEmpty(t, started["user_code"], "the right secret starts the flow")
	requireNoCredentials(t, e)
}

func TestFlowDeviceCodeDenied(t *testing.T) {
	e, srv := newOAuthEnv(t)
	started := startDeviceFlow(t, e, srv, "device")
	id := started["flow_id"].(string)
	srv.DenyDevice(t, started["user_code"].(string))
	e.clock.Advance(time.Second) // the interval
	status := flowStatus(t, e, id)
	require.Equal(t, "failed", status["status"])
	require.Contains(t, status["error"], "access_denied")
	requireNoCredentials(t, e)
}

func TestFlowDevicePolledInTheBackground(t *testing.T) {
	e, srv := newOAuthEnv(t)
	started := startDeviceFlow(t, e, srv, "device")
	id := started["flow_id"].(string)

	require.NoError(t, e.b.periodicFlows(t.Context(), e.storage))
	require.Zero(t, srv.TokenRequests(), "not before the interval")
	e.clock.Advance(time.Second)
	require.NoError(t, e.b.periodicFlows(t.Context(), e.storage))
	require.EqualValues(t, 1, srv.TokenRequests(), "polled once")
	require.Equal(t, "pending", flowStatus(t, e, id)["status"], "authorization_pending")

	srv.ApproveDevice(t, started["user_code"].(string))
	e.clock.Advance(time.Second)
	require.NoError(t, e.b.periodicFlows(t.Context(), e.storage))
	require.Equal(t, "completed", flowStatus(t, e, id)["status"])
	e.mustRequest(t, logical.ReadOperation, "token/device", nil)
}

func TestPeriodicFlowsCleanUp(t *testing.T) {
	e, srv := newOAuthEnv(t)
	_, secret := srv.WebClient()
	started := startCodeFlow(t, e, srv, "user")
	id := started["flow_id"].(string)
	stateKey := flowStateKey(stateHash(mustQuery(t, started["auth_url"].(string), "state")))

	e.clock.Advance(10*time.Minute + time.Second)
	require.NoError(t, e.b.periodicFlows(t.Context(), e.storage))
	snap := e.storage.snapshot(t)
	require.Contains(t, snap, stateKey, "a late callback still learns that the flow expired")
	require.NotContains(t, snap[flowKey(id)], secret, "an expired flow drops its secrets")
	require.Equal(t, "expired", flowStatus(t, e, id)["status"])

	e.clock.Advance(flowRetention)
	require.NoError(t, e.b.periodicFlows(t.Context(), e.storage))
	for key := range e.storage.snapshot(t) {
		require.False(t, strings.HasPrefix(key, flowPrefix) || strings.HasPrefix(key, flowStatePrefix), "left behind: %s", key)
	}
	_, err := e.request(t, logical.ReadOperation, "flows/"+id, nil)
	requireKind(t, err, KindNotFound)
}

func TestFlowSecretsAreSealWrapped(t *testing.T) {
	e, srv := newOAuthEnv(t)
	_, secret := srv.WebClient()
	started := startCodeFlow(t, e, srv, "user")
	f, err := loadFlow(t.Context(), e.storage, started["flow_id"].(string))
	require.NoError(t, err)
	for key, value := range e.storage.snapshot(t) {
		if strings.Contains(value, secret) || strings.Contains(value, f.Verifier) {
			require.True(t, e.b.isSealWrapped(key), "%s holds flow secrets but is not seal-wrapped", key)
		}
	}
}

func TestFlowStartValidation(t *testing.T) {
	e, srv := newOAuthEnv(t)
	id, secret := srv.WebClient()
	valid := func(over map[string]any) map[string]any {
		in := map[string]any{
			"name": "user", "client_id": id, "client_secret": secret,
			"auth_url": srv.AuthURL(), "token_url": srv.TokenURL(), "redirect_uri": testRedirectURI,
		}
		for k, v := range over {
			if v == nil {
				delete(in, k)
			} else {
				in[k] = v
			}
		}
		return in
	}
	e.mustRequest(t, logical.CreateOperation, "creds/taken", validCreds["api_key"])
	for _, tc := range []struct {
		name    string
		input   map[string]any
		kind    Kind
		mention []string
	}{
		{"bad name", valid(map[string]any{"name": "-x-"}), KindInvalidInput, []string{"name"}},
		{"bad grant", valid(map[string]any{"grant_type": "client_credentials"}), KindInvalidInput, []string{"grant_type"}},
		{"no redirect_uri", valid(map[string]any{"redirect_uri": nil}), KindInvalidInput, []string{"redirect_uri", "callback"}},
		{"redirect_uri with fragment", valid(map[string]any{"redirect_uri": testRedirectURI + "#x"}), KindInvalidInput, []string{"redirect_uri"}},
		{"no client_id", valid(map[string]any{"client_id": nil}), KindInvalidInput, []string{"client_id"}},
		{"no auth_url", valid(map[string]any{"auth_url": nil}), KindInvalidInput, []string{"auth_url"}},
		{"unknown provider", valid(map[string]any{"provider": "nope"}), KindInvalidInput, []string{"provider"}},
		{"host not allowed", valid(map[string]any{"token_url": "http://example.com/token"}), KindInvalidInput, []string{"token_url", "insecure_http_hosts"}},
		{"reserved auth param", valid(map[string]any{"auth_params": "state=x"}), KindInvalidInput, []string{"auth_params", "state"}},
		{"device without device_url", valid(map[string]any{"grant_type": "device_code", "redirect_uri": nil}), KindInvalidInput, []string{"device_url"}},
		{"device with redirect_uri", valid(map[string]any{"grant_type": "device_code", "device_url": srv.DeviceURL()}), KindInvalidInput, []string{"redirect_uri"}},
		{"name taken", valid(map[string]any{"name": "taken"}), KindDuplicate, []string{"taken"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.request(t, logical.UpdateOperation, "flows/start", tc.input)
			requireKind(t, err, tc.kind, tc.mention...)
			require.NotContains(t, err.Error(), secret)
		})
	}
	keys, err := logical.CollectKeysWithPrefix(t.Context(), e.storage, flowPrefix)
	require.NoError(t, err)
	require.Empty(t, keys, "no flow was stored")

	_, err = e.request(t, logical.ReadOperation, "flows/0b7e9a5e-2f7c-4a57-9a55-2f0f4a1d2c3b", nil)
	requireKind(t, err, KindNotFound)
	_, err = e.request(t, logical.ReadOperation, "flows/not-an-id", nil)
	requireKind(t, err, KindInvalidInput)
	_, err = e.request(t, logical.UpdateOperation, "flows/0b7e9a5e-2f7c-4a57-9a55-2f0f4a1d2c3b/complete", map[string]any{"code": "c", "state": "s"})
	requireKind(t, err, KindNotFound)
}

func TestFlowCallbackIsUnauthenticated(t *testing.T) {
	e := newTestBackend(t)
	require.Equal(t, []string{"callback"}, e.b.PathsSpecial.Unauthenticated)
}

func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	raw, err := json.Marshal(v)
	require.NoError(tb, err)
	return string(raw)
}

func TestFlowListAndCancel(t *testing.T) {
	e, srv := newOAuthEnv(t)
	cancelled, query := signIn(t, e, srv, "cancelled")
	kept := startCodeFlow(t, e, srv, "kept")["flow_id"].(string)
	list := e.mustRequest(t, logical.ListOperation, "flows/", nil)
	require.ElementsMatch(t, []string{cancelled, kept}, list.Data["keys"])

	e.mustRequest(t, logical.DeleteOperation, "flows/"+cancelled, nil)
	e.mustRequest(t, logical.DeleteOperation, "flows/"+cancelled, nil) // idempotent
	_, err := callback(t, e, query)
	requireKind(t, err, KindInvalidCallback)
	_, err = e.request(t, logical.ReadOperation, "flows/"+cancelled, nil)
	requireKind(t, err, KindNotFound)
	list = e.mustRequest(t, logical.ListOperation, "flows/", nil)
	require.Equal(t, []string{kept}, list.Data["keys"])
	requireNoCredentials(t, e)
	require.Zero(t, srv.TokenRequests())
}

func TestFlowWithoutRefreshTokenWarns(t *testing.T) {
	e, srv := newOAuthEnv(t)
	id, secret := srv.WebClient()
	started := e.mustRequest(t, logical.UpdateOperation, "flows/start", map[string]any{
		"name": "short", "client_id": id, "client_secret": secret, "auth_url": srv.AuthURL(),
		"token_url": srv.TokenURL(), "scopes": "openid", "redirect_uri": testRedirectURI,
	}).Data
	u, err := url.Parse(srv.Login(t, started["auth_url"].(string)))
	require.NoError(t, err)
	done, err := callback(t, e, u.Query())
	require.NoError(t, err)
	require.Len(t, done.Warnings, 1)
	require.Contains(t, done.Warnings[0], "no refresh token")
	e.mustRequest(t, logical.ReadOperation, "token/short", nil)
	_, err = e.request(t, logical.UpdateOperation, "refresh/short", nil)
	requireKind(t, err, KindInteractionRequired, "flows/start")
}
