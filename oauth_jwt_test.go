package nebula

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// requireFreshAssertions checks the assertions the server got from n on:
// each has its own jti, and the wanted key id and algorithm.
func requireFreshAssertions(tb testing.TB, got []oauthserver.Assertion, param, kid, alg string, want int) {
	tb.Helper()
	var list []oauthserver.Assertion
	for _, a := range got {
		if a.Param == param {
			list = append(list, a)
		}
	}
	require.Len(tb, list, want, "%s assertions", param)
	seen := map[string]bool{}
	for _, a := range list {
		require.NotEmpty(tb, a.JTI)
		require.False(tb, seen[a.JTI], "jti %s was used twice", a.JTI)
		seen[a.JTI] = true
		require.Equal(tb, kid, a.KeyID)
		require.Equal(tb, alg, a.Alg)
		require.Equal(tb, a.Issuer, a.Subject)
	}
}

func TestPrivateKeyJWTClientCredentials(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	id, kid, key := srv.PrivateKeyJWTClient()
	e.mustRequest(t, logical.CreateOperation, "creds/svc", map[string]any{
		"type": "oauth2", "client_id": id, "auth_style": "private_key_jwt", "private_key": key, "key_id": kid,
		"assertion_audience": srv.URL, "token_url": srv.TokenURL(), "scopes": "api",
	})
	first := e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	require.NotEmpty(t, first.Data["access_token"])
	second := e.mustRequest(t, logical.UpdateOperation, "refresh/svc", nil)
	require.NotEqual(t, first.Data["access_token"], second.Data["access_token"])
	requireFreshAssertions(t, srv.Assertions(), "client_assertion", kid, "RS256", 2)
	require.EqualValues(t, 2, srv.TokenRequestsFor("client_credentials"))

	read := e.mustRequest(t, logical.ReadOperation, "creds/svc", nil)
	require.NotContains(t, read.Data, "private_key")
	raw, _ := json.Marshal(read.Data)
	require.NotContains(t, string(raw), "PRIVATE KEY")
	require.Equal(t, "active", read.Data["status"])
}

// jwtClientRefreshToken signs the user in to the private_key_jwt client and
// exchanges the code with a client assertion (aud: the server's issuer
// URL), through the engine's upstream client.
func jwtClientRefreshToken(tb testing.TB, e *testEnv, srv *oauthserver.Server) string {
	tb.Helper()
	id, kid, pemKey := srv.PrivateKeyJWTClient()
	key, err := upstream.NewSigningKey(pemKey, kid, "")
	require.NoError(tb, err)
	const redirect = "http://127.0.0.1:1/callback"
	conf := &oauth2.Config{ClientID: id, Endpoint: srv.Endpoint(), RedirectURL: redirect, Scopes: []string{"openid", "offline_access"}}
	verifier := oauth2.GenerateVerifier()
	back := srv.Login(tb, conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)))
	cfg, err := e.b.getConfig(context.Background(), e.storage)
	require.NoError(tb, err)
	tok, err := e.b.upstream(cfg).Exchange(context.Background(), upstream.ExchangeRequest{
		Request: upstream.Request{ClientID: id, TokenURL: srv.TokenURL(), ClientKey: key, AssertionAudience: srv.URL},
		Code:    mustQuery(tb, back, "code"), Verifier: verifier, RedirectURI: redirect,
	})
	require.NoError(tb, err)
	require.NotEmpty(tb, tok.RefreshToken)
	return tok.RefreshToken
}

func TestPrivateKeyJWTRefreshAndRevocation(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	refresh := jwtClientRefreshToken(t, e, srv)
	before := len(srv.Assertions())
	id, kid, key := srv.PrivateKeyJWTClient()
	e.mustRequest(t, logical.CreateOperation, "creds/user", map[string]any{
		"type": "oauth2", "grant_type": "refresh_token", "client_id": id, "auth_style": "private_key_jwt",
		"private_key": key, "key_id": kid, "assertion_audience": srv.URL, "refresh_token": refresh,
		"token_url": srv.TokenURL(), "revocation_url": srv.RevocationURL(),
	})
	first := e.mustRequest(t, logical.ReadOperation, "token/user", nil)
	require.NotEmpty(t, first.Data["access_token"])
	e.clock.Advance(10 * time.Minute)
	second := e.mustRequest(t, logical.UpdateOperation, "refresh/user", nil)
	require.NotEqual(t, first.Data["access_token"], second.Data["access_token"])
	require.EqualValues(t, 2, srv.TokenRequestsFor("refresh_token"))

	// A new refresh token retires version 1, whose grant is revoked,
	// authenticated the same way.
	refresh2 := jwtClientRefreshToken(t, e, srv)
	e.mustRequest(t, logical.UpdateOperation, "creds/user", map[string]any{"refresh_token": refresh2})
	got := srv.Assertions()[before:]
	requireFreshAssertions(t, got, "client_assertion", kid, "RS256", len(got))
	var revocations int
	for _, a := range got {
		if a.Endpoint == "revocation" {
			revocations++
		}
	}
	require.Positive(t, revocations, "revocation carried a client assertion")
	require.Equal(t, 1, srv.RevokeGrants(id), "the provider revoked version 1's grant; only the new one is left")
}

func TestJWTBearerGrant(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	issuer, kid, key := srv.JWTProfileKey()
	e.mustRequest(t, logical.CreateOperation, "creds/sa", map[string]any{
		"type": "oauth2", "grant_type": "jwt_bearer", "issuer": issuer, "private_key": key, "key_id": kid,
		"audience": srv.URL, "token_url": srv.TokenURL(), "scopes": "openid",
	})
	first := e.mustRequest(t, logical.ReadOperation, "token/sa", nil)
	require.NotEmpty(t, first.Data["access_token"])
	e.clock.Advance(10 * time.Minute)
	second := e.mustRequest(t, logical.ReadOperation, "token/sa", nil)
	require.NotEqual(t, first.Data["access_token"], second.Data["access_token"], "an expired token is replaced by re-asserting")
	requireFreshAssertions(t, srv.Assertions(), "assertion", kid, "ES256", 2)
	require.EqualValues(t, 2, srv.TokenRequestsFor(upstream.JWTBearerGrant))
	_, sv, err := loadCredentialWithCurrent(t.Context(), e.storage, "sa")
	require.NoError(t, err)
	require.Empty(t, sv.Token.RefreshToken)

	read := e.mustRequest(t, logical.ReadOperation, "creds/sa", nil)
	require.NotContains(t, read.Data, "private_key")
	require.Equal(t, issuer, read.Data["issuer"])
}

func TestSignedJWTFieldsAreValidated(t *testing.T) {
	e := newTestBackend(t)
	_, err := e.request(t, logical.CreateOperation, "creds/bad", map[string]any{
		"type": "oauth2", "client_id": "c", "auth_style": "private_key_jwt", "token_url": "https://idp.example/token",
	})
	requireKind(t, err, KindInvalidInput, `"private_key" is required for auth_style private_key_jwt`)

	_, err = e.request(t, logical.CreateOperation, "creds/bad", map[string]any{
		"type": "oauth2", "grant_type": "jwt_bearer", "private_key": "garbage", "signing_alg": "ES256", "token_url": "https://idp.example/token",
	})
	requireKind(t, err, KindInvalidInput, `"issuer" is required`, `"private_key" is not a PEM private key`)
	require.NotContains(t, err.Error(), "garbage")

	_, err = e.request(t, logical.CreateOperation, "creds/bad", map[string]any{
		"type": "oauth2", "provider": "google-service-account", "grant_type": "jwt_bearer", "service_account_json": `{"type":"service_account"}`,
	})
	requireKind(t, err, KindInvalidInput, "has no client_email", "has no private_key")

	types := e.mustRequest(t, logical.ReadOperation, "types/oauth2", nil)
	raw, _ := json.Marshal(types.Data)
	for _, f := range []string{"private_key", "key_id", "signing_alg", "issuer", "subject", "service_account_json", "assertion_audience"} {
		require.Contains(t, string(raw), `"`+f+`"`)
	}
}

// serviceAccountServer is a token endpoint that records the JWT bearer
// requests it answers.
type serviceAccountServer struct {
	*httptest.Server
	mu    sync.Mutex
	forms []url.Values
}

func TestGoogleServiceAccountPreset(t *testing.T) {
	sa := &serviceAccountServer{}
	sa.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		sa.mu.Lock()
		sa.forms = append(sa.forms, r.PostForm)
		sa.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"ya29.test","token_type":"Bearer","expires_in":3600}`))
	}))
	t.Cleanup(sa.Close)
	e := newTestBackend(t)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1"})
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	require.NoError(t, err)
	keyFile, err := json.MarshalIndent(map[string]string{
		"type": "service_account", "project_id": "p", "private_key_id": "abc123",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": "robot@p.iam.gserviceaccount.com", "token_uri": sa.URL + "/token",
	}, "", "  ")
	require.NoError(t, err)
	e.mustRequest(t, logical.CreateOperation, "creds/gsa", map[string]any{
		"type": "oauth2", "provider": "google-service-account", "grant_type": "jwt_bearer",
		"service_account_json": string(keyFile), "subject": "admin@example.com",
		"scopes": "https://www.googleapis.com/auth/admin.directory.user.readonly,https://www.googleapis.com/auth/gmail.send",
	})
	tok := e.mustRequest(t, logical.ReadOperation, "token/gsa", nil)
	require.Equal(t, "ya29.test", tok.Data["access_token"])
	require.Len(t, sa.forms, 1)
	form := sa.forms[0]
	require.Equal(t, upstream.JWTBearerGrant, form.Get("grant_type"))
	require.NotContains(t, form, "scope", "Google takes the scopes in the assertion")
	require.NotContains(t, form, "client_id")
	parsed, err := jwt.ParseSigned(form.Get("assertion"), []jose.SignatureAlgorithm{jose.RS256})
	require.NoError(t, err)
	var std jwt.Claims
	var extra struct {
		Scope string `json:"scope"`
	}
	require.NoError(t, parsed.Claims(&priv.PublicKey, &std, &extra))
	require.Equal(t, "robot@p.iam.gserviceaccount.com", std.Issuer)
	require.Equal(t, "admin@example.com", std.Subject, "domain-wide delegation")
	require.Equal(t, jwt.Audience{sa.URL + "/token"}, std.Audience)
	require.Equal(t, "https://www.googleapis.com/auth/admin.directory.user.readonly https://www.googleapis.com/auth/gmail.send", extra.Scope)
	require.Equal(t, "abc123", parsed.Headers[0].KeyID)
	require.Equal(t, "RS256", parsed.Headers[0].Algorithm)

	read := e.mustRequest(t, logical.ReadOperation, "creds/gsa", nil)
	raw, _ := json.Marshal(read.Data)
	require.NotContains(t, string(raw), "PRIVATE KEY")
	require.NotContains(t, string(raw), "service_account_json")
	require.False(t, strings.Contains(fmt.Sprint(read.Data), "abc123"), "the key file is secret as a whole")
}

func TestPrivateKeyCountsForTheEndpointChangeRule(t *testing.T) {
	e, srv := newOAuthEnv(t)
	id, kid, key := srv.PrivateKeyJWTClient()
	e.mustRequest(t, logical.CreateOperation, "creds/svc", map[string]any{
		"type": "oauth2", "client_id": id, "auth_style": "private_key_jwt", "private_key": key, "key_id": kid,
		"assertion_audience": srv.URL, "token_url": srv.TokenURL(),
	})
	_, err := e.request(t, logical.UpdateOperation, "creds/svc", map[string]any{"token_url": "http://127.0.0.1:1/token"})
	requireKind(t, err, KindInvalidInput, "private_key")
	require.NotContains(t, err.Error(), "PRIVATE KEY")
	e.mustRequest(t, logical.UpdateOperation, "creds/svc", map[string]any{"token_url": "http://127.0.0.1:1/token", "private_key": key})
}
