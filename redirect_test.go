package nebula

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// attacker is a loopback listener that counts every request it gets; a
// test passes when a redirected secret never reaches it.
type attacker struct {
	*httptest.Server
	hits atomic.Int64
}

func newAttacker(tb testing.TB) *attacker {
	tb.Helper()
	a := &attacker{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		a.hits.Add(1)
		http.Error(w, "no", http.StatusBadRequest)
	}))
	tb.Cleanup(a.Close)
	return a
}

// createRefreshCredential creates a refresh_token credential at srv and
// reads its first token, so the version holds an issued refresh token too.
func createRefreshCredential(tb testing.TB, e *testEnv, srv *oauthserver.Server, name string, extra map[string]any) (clientSecret, refresh string) {
	tb.Helper()
	id, secret, refresh := srv.SignedInGrant(tb)
	data := map[string]any{
		"type": "oauth2", "grant_type": "refresh_token", "client_id": id, "client_secret": secret,
		"refresh_token": refresh, "token_url": srv.TokenURL(), "revocation_url": srv.RevocationURL(),
		"auth_style": "header",
	}
	for k, v := range extra {
		data[k] = v
	}
	e.mustRequest(tb, logical.CreateOperation, "creds/"+name, data)
	e.mustRequest(tb, logical.ReadOperation, "token/"+name, nil)
	return secret, refresh
}

// requireNothingReaches refreshes and rotates the credential and asserts
// that the listener got no request.
func requireNothingReaches(tb testing.TB, e *testEnv, a *attacker, name string) {
	tb.Helper()
	e.clock.Advance(time.Hour)
	_, _ = e.request(tb, logical.UpdateOperation, "refresh/"+name, nil)
	_, _ = e.request(tb, logical.UpdateOperation, "rotate/"+name, nil)
	_, _ = e.request(tb, logical.ReadOperation, "token/"+name, nil)
	require.Zero(tb, a.hits.Load(), "a write without the secret moved it to another host")
}

func TestEndpointChangeWithoutTheSecretIsRefused(t *testing.T) {
	for field, value := range map[string]func(a *attacker) string{
		"token_url":      func(a *attacker) string { return a.URL + "/token" },
		"revocation_url": func(a *attacker) string { return a.URL + "/revoke" },
		"auth_url":       func(a *attacker) string { return a.URL + "/auth" },
		"device_url":     func(a *attacker) string { return a.URL + "/device" },
	} {
		t.Run(field, func(t *testing.T) {
			e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
			a := newAttacker(t)
			createRefreshCredential(t, e, srv, "victim", nil)

			_, err := e.request(t, logical.UpdateOperation, "creds/victim", map[string]any{field: value(a)})
			requireKind(t, err, KindInvalidInput, field, "client_secret", "refresh_token")
			requireNothingReaches(t, e, a, "victim")
		})
	}
}

func TestEndpointChangeNeedsTheIssuedRefreshToken(t *testing.T) {
	// A credential whose refresh token exists only as the issued one (as
	// after a flow) still needs refresh_token with an endpoint change.
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	a := newAttacker(t)
	_, secret := srv.ClientCredentialsClient()
	createClientCredentials(t, e, srv, "svc")
	c, sv, err := loadCredentialWithCurrent(t.Context(), e.storage, "svc")
	require.NoError(t, err)
	sv.Token = &issuedToken{AccessToken: "at", TokenType: "Bearer", RefreshToken: "issued-rt", Expiry: e.clock.Now().Add(time.Hour)}
	entry, err := jsonEntry(secretKey(c.Name, c.ID), sv, true)
	require.NoError(t, err)
	require.NoError(t, e.storage.Put(t.Context(), entry))

	_, err = e.request(t, logical.UpdateOperation, "creds/svc", map[string]any{
		"token_url": a.URL + "/token", "client_secret": secret,
	})
	requireKind(t, err, KindInvalidInput, "refresh_token")
	requireNothingReaches(t, e, a, "svc")
}

func TestEndpointChangeWithTheSecretIsAllowed(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	a := newAttacker(t)
	secret, refresh := createRefreshCredential(t, e, srv, "user", nil)

	// The same value is not a change.
	e.mustRequest(t, logical.UpdateOperation, "creds/user", map[string]any{"token_url": srv.TokenURL(), "description": "same"})

	e.mustRequest(t, logical.UpdateOperation, "creds/user", map[string]any{
		"token_url": a.URL + "/token", "client_secret": secret, "refresh_token": refresh,
	})
	_, err := e.request(t, logical.UpdateOperation, "refresh/user", nil)
	require.Error(t, err, "the listener refuses the token request")
	require.NotZero(t, a.hits.Load(), "the write that supplied the secret moved the endpoint")
}

func TestTenantChangeIsAnEndpointChange(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/ms", map[string]any{
		"type": "oauth2", "provider": "microsoft", "tenant": "contoso.onmicrosoft.com",
		"client_id": "cid", "client_secret": secretClient,
	})
	_, err := e.request(t, logical.UpdateOperation, "creds/ms", map[string]any{"tenant": "evil.example.com"})
	requireKind(t, err, KindInvalidInput, "client_secret")
	_, err = e.request(t, logical.UpdateOperation, "creds/ms", map[string]any{"provider": "google"})
	requireKind(t, err, KindInvalidInput, "client_secret")
	e.mustRequest(t, logical.UpdateOperation, "creds/ms", map[string]any{"tenant": "contoso.onmicrosoft.com", "audience": "api://x"})
	e.mustRequest(t, logical.UpdateOperation, "creds/ms", map[string]any{"tenant": "fabrikam.com", "client_secret": secretClient})
}

func TestProviderChangeKeepsTheEndpointsCredentialsWereWrittenWith(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	a := newAttacker(t)
	e.mustRequest(t, logical.UpdateOperation, "providers/corp", map[string]any{
		"token_url": srv.TokenURL(), "revocation_url": srv.RevocationURL(), "auth_style": "header",
	})
	id, secret, refresh := srv.SignedInGrant(t)
	e.mustRequest(t, logical.CreateOperation, "creds/user", map[string]any{
		"type": "oauth2", "grant_type": "refresh_token", "provider": "corp",
		"client_id": id, "client_secret": secret, "refresh_token": refresh,
	})
	e.mustRequest(t, logical.ReadOperation, "token/user", nil)
	before := srv.TokenRequests()

	e.mustRequest(t, logical.UpdateOperation, "providers/corp", map[string]any{
		"token_url": a.URL + "/token", "revocation_url": a.URL + "/revoke",
	})
	e.clock.Advance(time.Hour)
	e.mustRequest(t, logical.UpdateOperation, "refresh/user", nil)
	require.Greater(t, srv.TokenRequests(), before, "the refresh went to the endpoint the credential was written with")
	e.mustRequest(t, logical.UpdateOperation, "rotate/user", nil)
	e.mustRequest(t, logical.ReadOperation, "token/user", nil)
	require.Zero(t, a.hits.Load(), "a providers/ write moved an existing credential's secret")

	// A credential written after the change gets the new endpoints.
	e.mustRequest(t, logical.CreateOperation, "creds/later", map[string]any{
		"type": "oauth2", "provider": "corp", "client_id": id, "client_secret": secret,
	})
	_, err := e.request(t, logical.UpdateOperation, "refresh/later", nil)
	require.Error(t, err)
	require.NotZero(t, a.hits.Load())
}

func TestProviderChangeSnapshotsCredentialsStoredWithoutEndpoints(t *testing.T) {
	// Credentials stored before endpoint snapshots existed keep the preset's
	// endpoints as they were when the preset changes.
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	a := newAttacker(t)
	e.mustRequest(t, logical.UpdateOperation, "providers/corp", map[string]any{"token_url": srv.TokenURL(), "auth_style": "header"})
	id, secret := srv.ClientCredentialsClient()
	e.mustRequest(t, logical.CreateOperation, "creds/old", map[string]any{
		"type": "oauth2", "provider": "corp", "client_id": id, "client_secret": secret,
	})
	c, err := loadCredential(t.Context(), e.storage, "old")
	require.NoError(t, err)
	legacy := map[string]any{}
	entry, err := e.storage.Get(t.Context(), credKey("old"))
	require.NoError(t, err)
	require.NoError(t, entry.DecodeJSON(&legacy))
	delete(legacy, "provider_endpoints")
	entry, err = logical.StorageEntryJSON(credKey(c.Name), legacy)
	require.NoError(t, err)
	require.NoError(t, e.storage.Put(t.Context(), entry))

	e.mustRequest(t, logical.UpdateOperation, "providers/corp", map[string]any{"token_url": a.URL + "/token"})
	e.mustRequest(t, logical.UpdateOperation, "refresh/old", nil)
	require.Zero(t, a.hits.Load())
}

func TestBatchItemCannotRedirectAnExistingCredential(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	a := newAttacker(t)
	createRefreshCredential(t, e, srv, "victim", nil)

	resp := e.mustRequest(t, logical.UpdateOperation, "batch/create", map[string]any{"items": []any{
		map[string]any{"name": "victim", "token_url": a.URL + "/token", "revocation_url": a.URL + "/revoke"},
	}})
	results := resp.Data["results"].([]map[string]any)
	require.Len(t, results, 1)
	require.Contains(t, results[0]["error"], "invalid_input: ")
	require.Contains(t, results[0]["error"], "client_secret")
	require.Equal(t, 1, resp.Data["failed"])
	requireNothingReaches(t, e, a, "victim")
}

func TestEndpointChangeRevokesRetiredVersionsWhereTheyWereUsed(t *testing.T) {
	// New secrets with a new endpoint retire the old version; its tokens
	// are revoked at the old endpoint, never sent to the new one.
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	a, newIssuer := newAttacker(t), newAttacker(t)
	createRefreshCredential(t, e, srv, "user", nil)
	e.mustRequest(t, logical.UpdateOperation, "creds/user/rotation", map[string]any{"strategy": "blue_green", "grace_period": 3600})
	e.mustRequest(t, logical.UpdateOperation, "rotate/user", nil)
	revocations := srv.RevocationRequests()

	e.mustRequest(t, logical.UpdateOperation, "creds/user", map[string]any{
		"token_url": newIssuer.URL + "/token", "revocation_url": a.URL + "/revoke",
		"client_secret": "attacker-chosen-secret", "refresh_token": "attacker-chosen-refresh",
	})
	e.clock.Advance(2 * time.Hour)
	e.runPeriodic(t)
	require.Zero(t, a.hits.Load(), "a retired version's tokens went to the new endpoint")
	require.Greater(t, srv.RevocationRequests(), revocations, "retired versions are revoked where they were used")
	c, err := loadCredential(t.Context(), e.storage, "user")
	require.NoError(t, err)
	require.Nil(t, c.Previous, "an endpoint change keeps no previous version")
	require.Len(t, e.versionsOf(t, "user"), 1)
}

func TestFlowKeepsTheProviderEndpointsItStartedWith(t *testing.T) {
	// A providers/ write while a flow runs moves neither the flow's code
	// exchange (which carries its client secret) nor the credential it
	// creates.
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	a := newAttacker(t)
	e.mustRequest(t, logical.UpdateOperation, "providers/corp", map[string]any{
		"auth_url": srv.AuthURL(), "token_url": srv.TokenURL(), "auth_style": "header",
	})
	id, secret := srv.WebClient()
	started := e.mustRequest(t, logical.UpdateOperation, "flows/start", map[string]any{
		"name": "user", "client_id": id, "client_secret": secret, "provider": "corp",
		"scopes": "openid,offline_access", "redirect_uri": testRedirectURI,
	})
	back := srv.Login(t, started.Data["auth_url"].(string))
	e.mustRequest(t, logical.UpdateOperation, "providers/corp", map[string]any{"token_url": a.URL + "/token"})

	u, err := url.Parse(back)
	require.NoError(t, err)
	_, err = callback(t, e, u.Query())
	require.NoError(t, err)
	require.Zero(t, a.hits.Load(), "the code exchange went to the new endpoint")
	e.clock.Advance(time.Hour)
	e.mustRequest(t, logical.UpdateOperation, "refresh/user", nil)
	require.Zero(t, a.hits.Load(), "the flow's credential took the new endpoint")
}
