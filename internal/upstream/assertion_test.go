package upstream

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/require"
)

var testKeys = sync.OnceValue(func() map[string]crypto.Signer {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	return map[string]crypto.Signer{"rsa": r, "p256": p256, "p384": p384}
})

func pemKey(tb testing.TB, key crypto.Signer) string {
	tb.Helper()
	var block *pem.Block
	switch k := key.(type) {
	case *rsa.PrivateKey:
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		require.NoError(tb, err)
		block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	}
	return string(pem.EncodeToMemory(block))
}

// assertionClaims parses and verifies a signed assertion with the public key
// as a server would, returning its claims and header.
func assertionClaims(tb testing.TB, raw string, key crypto.Signer) (jwt.Claims, map[string]any, jose.Header) {
	tb.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256, jose.ES384})
	require.NoError(tb, err)
	var std jwt.Claims
	extra := map[string]any{}
	require.NoError(tb, tok.Claims(key.Public(), &std, &extra), "the signature verifies with the public key")
	require.Len(tb, tok.Headers, 1)
	return std, extra, tok.Headers[0]
}

func TestAssertionContents(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, key, alg, wantAlg string
	}{
		{"rsa default", "rsa", "", "RS256"},
		{"rsa ps256", "rsa", "PS256", "PS256"},
		{"ec p-256 default", "p256", "", "ES256"},
		{"ec p-384 default", "p384", "", "ES384"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			priv := testKeys()[tc.key]
			k, err := NewSigningKey(pemKey(t, priv), "kid-7", tc.alg)
			require.NoError(t, err)
			require.Equal(t, tc.wantAlg, k.Alg())
			seen := map[string]bool{}
			for range 3 {
				raw, err := k.Sign(Claims{Issuer: "client-1", Subject: "client-1", Audience: "https://idp.example/token"}, now)
				require.NoError(t, err)
				std, extra, h := assertionClaims(t, raw, priv)
				require.Equal(t, "client-1", std.Issuer)
				require.Equal(t, "client-1", std.Subject)
				require.Equal(t, jwt.Audience{"https://idp.example/token"}, std.Audience)
				require.Equal(t, now.Unix(), std.IssuedAt.Time().Unix())
				require.Equal(t, now.Add(AssertionLifetime).Unix(), std.Expiry.Time().Unix(), "exp is iat + 60 s")
				require.NoError(t, std.ValidateWithLeeway(jwt.Expected{Issuer: "client-1", AnyAudience: jwt.Audience{"https://idp.example/token"}, Time: now.Add(30 * time.Second)}, 0))
				require.Len(t, std.ID, 32, "jti is 128 random bits in hex")
				require.False(t, seen[std.ID], "every assertion has its own jti")
				seen[std.ID] = true
				require.Equal(t, "kid-7", h.KeyID)
				require.Equal(t, tc.wantAlg, h.Algorithm)
				require.NotContains(t, extra, "scope")
			}
		})
	}
}

func TestAssertionScopeClaim(t *testing.T) {
	priv := testKeys()["rsa"]
	k, err := NewSigningKey(pemKey(t, priv), "", "")
	require.NoError(t, err)
	raw, err := k.Sign(Claims{Issuer: "sa@p.iam.gserviceaccount.com", Subject: "user@example.com", Audience: "https://oauth2.googleapis.com/token", Scope: "a b"}, time.Now())
	require.NoError(t, err)
	std, extra, h := assertionClaims(t, raw, priv)
	require.Equal(t, "a b", extra["scope"])
	require.Equal(t, "user@example.com", std.Subject)
	require.Empty(t, h.KeyID)
}

func TestSigningAlgMustSuitTheKey(t *testing.T) {
	for _, tc := range []struct{ key, alg, mention string }{
		{"rsa", "ES256", "does not suit an RSA key"},
		{"p256", "RS256", "does not suit an EC key"},
		{"p256", "ES384", "use ES256"},
	} {
		_, err := NewSigningKey(pemKey(t, testKeys()[tc.key]), "", tc.alg)
		require.ErrorContains(t, err, tc.mention)
	}
	_, err := NewSigningKey("not a key", "", "")
	require.ErrorContains(t, err, "not a PEM private key")
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	_, err = NewSigningKey(pemKey(t, small), "", "")
	require.ErrorContains(t, err, "at least 2048")
}

// formServer records the forms and Authorization headers of the requests
// it answers with a token.
type formServer struct {
	*httptest.Server
	mu     sync.Mutex
	forms  []url.Values
	auths  []string
	status int
}

func startFormServer(tb testing.TB) *formServer {
	f := &formServer{status: http.StatusOK}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.NoError(tb, r.ParseForm())
		f.mu.Lock()
		f.forms = append(f.forms, r.PostForm)
		f.auths = append(f.auths, r.Header.Get("Authorization"))
		status := f.status
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status == http.StatusOK {
			_, _ = w.Write([]byte(`{"access_token":"at","token_type":"bearer","expires_in":60}`))
		} else {
			_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
		}
	}))
	tb.Cleanup(f.Close)
	return f
}

func testClient() *Client {
	c := New(loopbackPolicy, nil, nil)
	c.Backoff = time.Millisecond
	return c
}

func TestClientAssertionOnEveryGrant(t *testing.T) {
	priv := testKeys()["p256"]
	key, err := NewSigningKey(pemKey(t, priv), "k1", "")
	require.NoError(t, err)
	srv := startFormServer(t)
	c := testClient()
	ctx := context.Background()
	base := Request{ClientID: "client-1", ClientSecret: "must-not-be-sent", TokenURL: srv.URL + "/token", AuthStyle: "auto", ClientKey: key, Scopes: []string{"api"}}

	cc := base
	cc.Grant = "client_credentials"
	_, err = c.Token(ctx, cc)
	require.NoError(t, err)
	rt := base
	rt.Grant, rt.RefreshToken = "refresh_token", "refresh-1"
	_, err = c.Token(ctx, rt)
	require.NoError(t, err)
	jb := base
	jb.Grant = "jwt_bearer"
	jb.Bearer = &BearerAssertion{Key: key, Issuer: "issuer-1"}
	_, err = c.Token(ctx, jb)
	require.NoError(t, err)
	require.NoError(t, c.Revoke(ctx, base, srv.URL+"/revoke", "tok", "refresh_token"))

	require.Len(t, srv.forms, 4)
	jtis := map[string]bool{}
	for i, form := range srv.forms {
		require.Empty(t, srv.auths[i], "request %d: no HTTP basic authentication", i)
		require.NotContains(t, form, "client_secret", "request %d: no client_secret, not even empty", i)
		require.Equal(t, "client-1", form.Get("client_id"), "request %d", i)
		require.Equal(t, ClientAssertionType, form.Get("client_assertion_type"), "request %d", i)
		std, _, h := assertionClaims(t, form.Get("client_assertion"), priv)
		require.Equal(t, "client-1", std.Issuer)
		require.Equal(t, "client-1", std.Subject)
		wantAud := srv.URL + "/token"
		if i == 3 {
			wantAud = srv.URL + "/revoke"
		}
		require.Equal(t, jwt.Audience{wantAud}, std.Audience, "request %d: aud is the endpoint called", i)
		require.Equal(t, "k1", h.KeyID)
		require.False(t, jtis[std.ID], "request %d reuses a jti", i)
		jtis[std.ID] = true
	}
	require.Equal(t, "client_credentials", srv.forms[0].Get("grant_type"))
	require.Equal(t, "api", srv.forms[0].Get("scope"))
	require.Equal(t, "refresh_token", srv.forms[1].Get("grant_type"))
	require.Equal(t, "refresh-1", srv.forms[1].Get("refresh_token"))
	require.Empty(t, srv.forms[1].Get("scope"))
	require.Equal(t, JWTBearerGrant, srv.forms[2].Get("grant_type"))
	grant, _, _ := assertionClaims(t, srv.forms[2].Get("assertion"), priv)
	require.Equal(t, "issuer-1", grant.Issuer)
	require.Equal(t, "issuer-1", grant.Subject, "sub defaults to iss")
	require.Equal(t, jwt.Audience{srv.URL + "/token"}, grant.Audience, "aud defaults to the token URL")
}

func TestJWTBearerWithoutClientAuthentication(t *testing.T) {
	priv := testKeys()["rsa"]
	key, err := NewSigningKey(pemKey(t, priv), "", "")
	require.NoError(t, err)
	srv := startFormServer(t)
	r := Request{Grant: "jwt_bearer", TokenURL: srv.URL + "/token", Scopes: []string{"a", "b"}, AuthStyle: "auto",
		Bearer: &BearerAssertion{Key: key, Issuer: "sa@x", Subject: "user@x", Audience: "https://aud", ScopeClaim: true}}
	_, err = testClient().Token(context.Background(), r)
	require.NoError(t, err)
	require.Len(t, srv.forms, 1)
	form := srv.forms[0]
	require.Empty(t, srv.auths[0])
	require.NotContains(t, form, "client_id")
	require.NotContains(t, form, "client_secret")
	require.NotContains(t, form, "scope", "scopes go in the assertion's scope claim")
	std, extra, _ := assertionClaims(t, form.Get("assertion"), priv)
	require.Equal(t, "sa@x", std.Issuer)
	require.Equal(t, "user@x", std.Subject)
	require.Equal(t, jwt.Audience{"https://aud"}, std.Audience)
	require.Equal(t, "a b", extra["scope"])
}
