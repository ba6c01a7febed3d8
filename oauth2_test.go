package nebula

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// newOAuthEnv is a backend on the real clock (tokens carry the OAuth2
// server's expiry times) allowed to call a loopback OAuth2 server over http.
func newOAuthEnv(tb testing.TB, opts ...oauthserver.Option) (*testEnv, *oauthserver.Server) {
	tb.Helper()
	srv := oauthserver.Start(tb, opts...)
	e := newTestBackend(tb)
	e.clock.now = time.Now()
	e.b.upstreamBackoff = time.Millisecond
	e.mustRequest(tb, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1"})
	return e, srv
}

// createClientCredentials creates an oauth2 client_credentials credential.
func createClientCredentials(tb testing.TB, e *testEnv, srv *oauthserver.Server, name string) {
	tb.Helper()
	id, secret := srv.ClientCredentialsClient()
	e.mustRequest(tb, logical.CreateOperation, "creds/"+name, map[string]any{
		"type": "oauth2", "client_id": id, "client_secret": secret, "token_url": srv.TokenURL(),
		"scopes": "api", "auth_style": "header",
	})
}

func TestClientCredentialsIssueAndReissue(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"refresh_ahead": "1m"})
	createClientCredentials(t, e, srv, "svc")
	require.Zero(t, srv.TokenRequests(), "create does not contact the provider")

	first := e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	require.NotEmpty(t, first.Data["access_token"])
	require.Equal(t, "Bearer "+first.Data["access_token"].(string), first.Data["header_value"])
	require.Equal(t, "Authorization", first.Data["header_name"])
	require.InDelta(t, 600, first.Data["rotation_period"], 2)
	require.InDelta(t, 540, first.Data["ttl"], 2, "ttl runs to expiry less refresh_ahead")
	require.EqualValues(t, 1, srv.TokenRequests())

	again := e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	require.Equal(t, first.Data["access_token"], again.Data["access_token"])
	require.EqualValues(t, 1, srv.TokenRequests(), "a valid token is served without a new request")

	// Past expiry less refresh_ahead the engine asks for a new token.
	e.clock.Advance(9*time.Minute + time.Second)
	renewed := e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	require.NotEqual(t, first.Data["access_token"], renewed.Data["access_token"])
	require.EqualValues(t, 2, srv.TokenRequests())

	// A new engine on the same storage serves the stored token.
	e.b.purgeCache()
	stored := e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	require.Equal(t, renewed.Data["access_token"], stored.Data["access_token"])
	require.EqualValues(t, 2, srv.TokenRequests())
}

func mustQuery(tb testing.TB, rawURL, key string) string {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	require.NoError(tb, err)
	v := req.URL.Query().Get(key)
	require.NotEmpty(tb, v, "no %s in %s", key, rawURL)
	return v
}

func TestRefreshTokenGrantWithRotation(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	id, secret, refresh := srv.SignedInGrant(t)
	e.mustRequest(t, logical.CreateOperation, "creds/user", map[string]any{
		"type": "oauth2", "grant_type": "refresh_token", "client_id": id, "client_secret": secret,
		"refresh_token": refresh, "token_url": srv.TokenURL(), "auth_style": "header",
	})

	first := e.mustRequest(t, logical.ReadOperation, "token/user", nil)
	require.NotEmpty(t, first.Data["access_token"])
	_, sv, err := loadCredentialWithCurrent(t.Context(), e.storage, "user")
	require.NoError(t, err)
	require.NotEmpty(t, sv.Token.RefreshToken)
	require.NotEqual(t, refresh, sv.Token.RefreshToken, "the rotated refresh token is stored with the access token")

	// The server rejects the original refresh token now; a second refresh
	// succeeds only if the engine uses the rotated one.
	e.clock.Advance(10 * time.Minute)
	second := e.mustRequest(t, logical.UpdateOperation, "refresh/user", nil)
	require.NotEqual(t, first.Data["access_token"], second.Data["access_token"])
	require.EqualValues(t, 2, srv.TokenRequestsFor("refresh_token"))

	read := e.mustRequest(t, logical.ReadOperation, "creds/user", nil)
	requireNoSecrets(t, read.Data)
	require.NotContains(t, fmt.Sprint(read.Data), sv.Token.RefreshToken)
	require.Equal(t, "active", read.Data["status"])
}

func TestInvalidClientSecretKeepsTheOldToken(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	createClientCredentials(t, e, srv, "svc")
	good := e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	_, secret := srv.ClientCredentialsClient()
	_, err := srv.RotateClientSecret(oauthserver.ClientCredentialsClientID)
	require.NoError(t, err)

	// Inside the refresh-ahead window the refresh fails; the still-valid
	// token is served and the credential shows the error.
	e.clock.Advance(9*time.Minute + 30*time.Second)
	served := e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	require.Equal(t, good.Data["access_token"], served.Data["access_token"])
	read := e.mustRequest(t, logical.ReadOperation, "creds/svc", nil)
	require.Equal(t, "needs_reconnect", read.Data["status"], "invalid_client is a dead grant (reconnect.go)")
	require.Contains(t, read.Data["last_error"], "invalid_client")
	require.EqualValues(t, 2, srv.TokenRequests(), "a 401 is not retried")

	// Past expiry there is nothing valid to serve, and no request is made.
	e.clock.Advance(time.Minute)
	_, err = e.request(t, logical.ReadOperation, "token/svc", nil)
	requireKind(t, err, KindNoToken, "svc", "invalid_client", "creds/svc")
	require.EqualValues(t, 2, srv.TokenRequests(), "no request for a dead grant")
	require.NotContains(t, err.Error(), secret)
	require.NotContains(t, err.Error(), "{", "no upstream body in the message")

	_, sv, err := loadCredentialWithCurrent(t.Context(), e.storage, "svc")
	require.NoError(t, err)
	require.Equal(t, good.Data["access_token"], sv.Token.AccessToken, "the last good token stays in storage")
}

func TestUpstreamOutageIsRetriedBoundedly(t *testing.T) {
	e, srv := newOAuthEnv(t)
	createClientCredentials(t, e, srv, "svc")
	srv.SetFailing(true)
	_, err := e.request(t, logical.ReadOperation, "token/svc", nil)
	requireKind(t, err, KindRefreshFailed, "503")
	require.EqualValues(t, 3, srv.TokenRequests(), "three attempts, then give up")

	srv.SetFailing(false)
	e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	require.Equal(t, "active", e.mustRequest(t, logical.ReadOperation, "creds/svc", nil).Data["status"], "success clears the error")
}

func TestConcurrentReadsOfAnExpiredTokenMakeOneRequest(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	createClientCredentials(t, e, srv, "svc")
	e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	e.clock.Advance(11 * time.Minute) // expired
	before := srv.TokenRequests()

	const readers = 500
	var wg sync.WaitGroup
	tokens := make([]any, readers)
	errs := make([]error, readers)
	resps := make([]*logical.Response, readers)
	start := make(chan struct{})
	req := func() *logical.Request {
		return &logical.Request{Operation: logical.ReadOperation, Path: "token/svc", Storage: e.storage}
	}
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := e.b.HandleRequest(context.Background(), req())
			errs[i], resps[i] = err, resp
			if err == nil {
				tokens[i] = resp.Data["access_token"]
			}
		}()
	}
	close(start)
	wg.Wait()
	for i := range readers {
		require.NoError(t, errs[i])
		require.Equal(t, tokens[0], tokens[i])
		e.checkAnswer(t, req(), resps[i], errs[i])
	}
	require.EqualValues(t, 1, srv.TokenRequests()-before, "one upstream request for all readers")
}

func TestRefreshDueUsesTheExpiryIndex(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	for _, name := range []string{"a", "b", "c"} {
		createClientCredentials(t, e, srv, name)
		e.mustRequest(t, logical.ReadOperation, "token/"+name, nil)
	}
	e.mustRequest(t, logical.CreateOperation, "creds/static", validCreds["api_key"])

	resp := e.mustRequest(t, logical.UpdateOperation, "refresh", nil)
	require.Empty(t, resp.Data["refreshed"], "nothing is due yet")

	e.clock.Advance(9*time.Minute + 30*time.Second)
	resp = e.mustRequest(t, logical.UpdateOperation, "refresh", nil)
	require.ElementsMatch(t, []string{"a", "b", "c"}, resp.Data["refreshed"])
	require.Empty(t, resp.Data["failed"])
	require.EqualValues(t, 6, srv.TokenRequests())

	// Background refresh-ahead does the same from Vault's periodic call.
	e.clock.Advance(10 * time.Minute)
	srv.SetFailing(true)
	require.NoError(t, e.b.periodic(context.Background(), &logical.Request{Storage: e.storage}))
	srv.SetFailing(false)
	resp = e.mustRequest(t, logical.UpdateOperation, "refresh", nil)
	require.ElementsMatch(t, []string{"a", "b", "c"}, resp.Data["refreshed"], "failed ones stay due")

	e.mustRequest(t, logical.DeleteOperation, "creds/a", nil)
	e.clock.Advance(10 * time.Minute)
	resp = e.mustRequest(t, logical.UpdateOperation, "refresh", nil)
	require.ElementsMatch(t, []string{"b", "c"}, resp.Data["refreshed"])
	keys, err := logical.CollectKeysWithPrefix(t.Context(), e.storage, expiryPrefix)
	require.NoError(t, err)
	require.Len(t, keys, 2, "stale index entries are dropped: %v", keys)
}

func TestRedirectToAnotherHostIsRefused(t *testing.T) {
	e, srv := newOAuthEnv(t)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, strings.Replace(srv.TokenURL(), "127.0.0.1", "localhost", 1), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1,localhost"})
	id, secret := srv.ClientCredentialsClient()
	e.mustRequest(t, logical.CreateOperation, "creds/r", map[string]any{
		"type": "oauth2", "client_id": id, "client_secret": secret, "token_url": redirector.URL + "/token", "auth_style": "header"})
	_, err := e.request(t, logical.ReadOperation, "token/r", nil)
	requireKind(t, err, KindRefreshFailed)
	require.Zero(t, srv.TokenRequests(), "the redirect was not followed")
}

func TestMissingExpiresInGetsTheDefaultLifetime(t *testing.T) {
	// A provider that omits expires_in (allowed by RFC 6749 section 5.1).
	// This edge case needs a response the real server never sends.
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"no-expiry-token","token_type":"bearer"}`)
	}))
	t.Cleanup(upstream.Close)
	e := newTestBackend(t)
	e.clock.now = time.Now()
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1", "default_token_lifetime": "30m"})
	e.mustRequest(t, logical.CreateOperation, "creds/n", map[string]any{
		"type": "oauth2", "client_id": "c", "client_secret": "s", "token_url": upstream.URL})
	resp := e.mustRequest(t, logical.ReadOperation, "token/n", nil)
	require.Equal(t, "no-expiry-token", resp.Data["access_token"])
	require.Equal(t, "Bearer no-expiry-token", resp.Data["header_value"], "token_type is normalised")
	require.EqualValues(t, 1800, resp.Data["rotation_period"])
}

func TestPlainHTTPRefusedWhenConfigChanges(t *testing.T) {
	e, srv := newOAuthEnv(t)
	createClientCredentials(t, e, srv, "svc")
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": ""})
	_, err := e.request(t, logical.ReadOperation, "token/svc", nil)
	requireKind(t, err, KindRefreshFailed, "insecure_http_hosts")
	require.Zero(t, srv.TokenRequests())
}

func TestVerifyContactsTheProviderOnWrite(t *testing.T) {
	e, srv := newOAuthEnv(t)
	id, secret := srv.ClientCredentialsClient()
	input := map[string]any{"type": "oauth2", "client_id": id, "client_secret": "wrong", "token_url": srv.TokenURL(),
		"auth_style": "header", "verify": true}
	_, err := e.request(t, logical.CreateOperation, "creds/v", input)
	requireKind(t, err, KindRefreshFailed, "invalid_client")
	require.Empty(t, e.mustRequest(t, logical.ListOperation, "creds/", nil).Data["keys"], "a failed verification creates nothing")

	input["client_secret"] = secret
	e.mustRequest(t, logical.CreateOperation, "creds/v", input)
	requests := srv.TokenRequests()
	first := e.tokenOf(t, "v")
	require.Equal(t, requests, srv.TokenRequests(), "the verified token is served")
	require.NotEmpty(t, first)

	_, err = e.request(t, logical.UpdateOperation, "creds/v", map[string]any{"client_secret": "wrong-again", "verify": true})
	requireKind(t, err, KindRefreshFailed)
	require.Equal(t, first, e.tokenOf(t, "v"), "a failed verification changes nothing")
}

func TestFetchedTokenIsCachedAndOtherWritesDoNotStopIt(t *testing.T) {
	e, srv := newOAuthEnv(t)
	createClientCredentials(t, e, srv, "svc")
	e.mustRequest(t, logical.ReadOperation, "token/svc", nil) // fetched upstream
	gets := e.storage.gets.Load()
	e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	require.Equal(t, gets, e.storage.gets.Load(), "the fetched token was cached by the read that fetched it")

	// Writes to other credentials do not drop this one's entry.
	e.mustRequest(t, logical.CreateOperation, "creds/other", validCreds["api_key"])
	gets = e.storage.gets.Load()
	e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	require.Equal(t, gets, e.storage.gets.Load())
}
