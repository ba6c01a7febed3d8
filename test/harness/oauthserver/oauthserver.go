// Package oauthserver runs a real OAuth2 / OpenID Connect authorization
// server on loopback for tests.
//
// The protocol endpoints (authorization, token, refresh, client
// authentication, PKCE, device authorization, revocation, introspection,
// discovery) are zitadel/oidc's op package; this package only supplies an
// in-memory op.Storage with a fixed set of clients and one user, a minimal
// login page and device verification page, and test hooks: request counters,
// injected failures and client secret changes.
//
// A Server listens on 127.0.0.1 with a free port and plain http. Tokens are
// opaque bearer tokens. Refresh tokens are only issued when the
// authorization request asks for the offline_access scope (OpenID Connect
// rule, enforced by zitadel). Client secrets may be sent by HTTP Basic auth or
// in the form body, except at the device token endpoint, where zitadel only
// accepts Basic auth for confidential clients.
package oauthserver

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/oauth2"
)

// Credentials of the single user of every Server, for the login page and the
// device verification page.
const (
	Username = "test-user"
	Password = "verysecure"
	// UserID is the subject ("sub") of tokens issued to the user.
	UserID = "user-1"
)

// Client IDs registered on every Server. Secrets are random per Server.
const (
	// ClientCredentialsClientID is a confidential client allowed only the
	// client_credentials grant.
	ClientCredentialsClientID = "service-client"
	// WebClientID is a confidential client allowed authorization_code (PKCE
	// optional, verified when sent) and refresh_token.
	WebClientID = "web-client"
	// PublicClientID is a public client (no secret) allowed
	// authorization_code and refresh_token; zitadel requires PKCE for it.
	PublicClientID = "public-client"
	// DeviceClientID is a confidential client allowed the RFC 8628 device
	// code grant and refresh_token.
	DeviceClientID = "device-client"
)

// GrantTypeDeviceCode is the grant_type of the RFC 8628 device token request.
const GrantTypeDeviceCode = "urn:ietf:params:oauth:grant-type:device_code"

// Server is a running OAuth2/OIDC authorization server on 127.0.0.1.
// Its methods are safe for concurrent use.
type Server struct {
	// URL is the issuer and base URL, e.g. http://127.0.0.1:41234.
	URL string

	ts       *httptest.Server
	provider *op.Provider
	store    *storage

	failing       atomic.Bool
	tokenRequests atomic.Int64
	revocations   atomic.Int64

	mu         sync.Mutex       // guards byGrant and assertions
	byGrant    map[string]int64 // token requests per grant_type
	assertions []Assertion
}

// Option configures a Server.
type Option func(*config)

type config struct {
	accessTokenLifetime  time.Duration
	refreshTokenLifetime time.Duration
	redirectURIs         []string // empty: any http loopback URI
	rotateRefreshTokens  bool
}

// WithAccessTokenLifetime sets the lifetime of access tokens (default one
// hour). The token response's expires_in is this lifetime in whole seconds.
func WithAccessTokenLifetime(d time.Duration) Option {
	return func(c *config) { c.accessTokenLifetime = d }
}

// WithRefreshTokenLifetime sets how long a refresh token may be used
// (default 24 hours); every rotation starts a new lifetime.
func WithRefreshTokenLifetime(d time.Duration) Option {
	return func(c *config) { c.refreshTokenLifetime = d }
}

// WithRedirectURI registers exact redirect URIs for the web and public
// clients. Without it they accept any http URI on 127.0.0.1 or localhost,
// any port and path.
func WithRedirectURI(uris ...string) Option {
	return func(c *config) { c.redirectURIs = append(c.redirectURIs, uris...) }
}

// WithoutRefreshTokenRotation makes the refresh grant keep the presented
// refresh token valid and answer without a refresh_token, as Google does.
// By default each refresh answers a new refresh token and invalidates the
// presented one.
func WithoutRefreshTokenRotation() Option {
	return func(c *config) { c.rotateRefreshTokens = false }
}

// Start starts a Server; tb.Cleanup stops it.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	cfg := config{
		accessTokenLifetime:  time.Hour,
		refreshTokenLifetime: 24 * time.Hour,
		rotateRefreshTokens:  true,
	}
	for _, opt := range opts {
		opt(&cfg)
	}

	ts := httptest.NewUnstartedServer(nil) // listens on 127.0.0.1, free port
	s := &Server{
		URL:     "http://" + ts.Listener.Addr().String(),
		ts:      ts,
		byGrant: make(map[string]int64),
	}
	var err error
	if s.store, err = newStorage(cfg); err == nil {
		s.provider, err = newProvider(s.URL, s.store)
	}
	if err != nil {
		ts.Close()
		tb.Fatalf("oauthserver: %v", err)
	}
	ts.Config.Handler = s.routes()
	ts.Start()
	tb.Cleanup(ts.Close)
	return s
}

func newProvider(issuer string, store *storage) (*op.Provider, error) {
	var key [32]byte // encrypts the opaque access tokens
	if _, err := rand.Read(key[:]); err != nil {
		return nil, err
	}
	cfg := &op.Config{
		CryptoKey:      key,
		CodeMethodS256: true,
		AuthMethodPost: true,
		// private_key_jwt clients and JWT bearer issuers (jwt.go).
		AuthMethodPrivateKeyJWT: true,
		GrantTypeRefreshToken:   true,
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime:     5 * time.Minute,
			PollInterval: time.Second, // the smallest interval RFC 8628 can express
			UserFormPath: devicePath,
			UserCode:     op.UserCodeBase20,
		},
	}
	// WithAllowInsecure permits the plain http issuer.
	return op.NewProvider(cfg, store, op.StaticIssuer(issuer), op.WithAllowInsecure())
}

func (s *Server) routes() http.Handler {
	u := &ui{store: s.store, callbackURL: op.AuthCallbackURL(s.provider)}
	issuer := op.NewIssuerInterceptor(s.provider.IssuerFromRequest)
	mux := http.NewServeMux()
	mux.Handle(loginPath, issuer.HandlerFunc(u.login))
	mux.HandleFunc(devicePath, u.device)
	mux.Handle("/", s.provider)
	return s.intercept(mux)
}

// intercept counts token and revocation requests and answers token requests
// with 503 while SetFailing(true) is in effect.
func (s *Server) intercept(next http.Handler) http.Handler {
	tokenPath := s.provider.TokenEndpoint().Relative()
	revocationPath := s.provider.RevocationEndpoint().Relative()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case revocationPath:
			s.revocations.Add(1)
			r = s.recordAssertions(r, readForm(w, r), "revocation")
		case tokenPath:
			r = s.recordAssertions(r, s.countTokenRequest(w, r), "token")
			if s.failing.Load() {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `{"error":"temporarily_unavailable","error_description":"failure injected by oauthserver.SetFailing"}`)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// countTokenRequest counts r by grant_type, leaving r's body readable for
// the token endpoint, and returns its form.
func (s *Server) countTokenRequest(w http.ResponseWriter, r *http.Request) url.Values {
	s.tokenRequests.Add(1)
	form := readForm(w, r)
	grant := r.URL.Query().Get("grant_type")
	if form.Has("grant_type") {
		grant = form.Get("grant_type")
	}
	s.mu.Lock()
	s.byGrant[grant]++
	s.mu.Unlock()
	return form
}

// readForm parses r's form body, leaving the body readable.
func readForm(w http.ResponseWriter, r *http.Request) url.Values {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	r.Body = io.NopCloser(bytes.NewReader(body))
	form, perr := url.ParseQuery(string(body))
	if err != nil || perr != nil {
		return url.Values{}
	}
	return form
}

// AuthURL is the authorization endpoint.
func (s *Server) AuthURL() string { return s.provider.AuthorizationEndpoint().Absolute(s.URL) }

// TokenURL is the token endpoint.
func (s *Server) TokenURL() string { return s.provider.TokenEndpoint().Absolute(s.URL) }

// DeviceURL is the RFC 8628 device authorization endpoint.
func (s *Server) DeviceURL() string { return s.provider.DeviceAuthorizationEndpoint().Absolute(s.URL) }

// RevocationURL is the RFC 7009 token revocation endpoint.
func (s *Server) RevocationURL() string { return s.provider.RevocationEndpoint().Absolute(s.URL) }

// IntrospectionURL is the RFC 7662 token introspection endpoint; a client
// may introspect the tokens issued to it.
func (s *Server) IntrospectionURL() string {
	return s.provider.IntrospectionEndpoint().Absolute(s.URL)
}

// Endpoint returns the server's endpoints for golang.org/x/oauth2.
func (s *Server) Endpoint() oauth2.Endpoint {
	return oauth2.Endpoint{AuthURL: s.AuthURL(), TokenURL: s.TokenURL(), DeviceAuthURL: s.DeviceURL()}
}

// TokenRequests is the number of requests that reached the token endpoint,
// failed ones included. golang.org/x/oauth2 with its default
// AuthStyleAutoDetect sends a second request when the first one fails.
func (s *Server) TokenRequests() int64 { return s.tokenRequests.Load() }

// TokenRequestsFor is the number of token requests with the given
// grant_type, e.g. "client_credentials", "refresh_token" or
// GrantTypeDeviceCode.
func (s *Server) TokenRequestsFor(grantType string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byGrant[grantType]
}

// RevocationRequests is the number of requests that reached the revocation
// endpoint.
func (s *Server) RevocationRequests() int64 { return s.revocations.Load() }

// SetFailing makes the token endpoint answer 503 with error
// temporarily_unavailable (true) or work again (false). Failed requests are
// still counted.
func (s *Server) SetFailing(failing bool) { s.failing.Store(failing) }

// ClientCredentialsClient returns the id and current secret of the
// client_credentials client.
func (s *Server) ClientCredentialsClient() (id, secret string) {
	return ClientCredentialsClientID, s.store.clientSecret(ClientCredentialsClientID)
}

// WebClient returns the id and current secret of the confidential
// authorization_code client.
func (s *Server) WebClient() (id, secret string) {
	return WebClientID, s.store.clientSecret(WebClientID)
}

// DeviceClient returns the id and current secret of the device code client.
func (s *Server) DeviceClient() (id, secret string) {
	return DeviceClientID, s.store.clientSecret(DeviceClientID)
}

// SetClientSecret replaces a confidential client's secret: requests with
// the old secret fail with invalid_client from then on.
func (s *Server) SetClientSecret(clientID, secret string) error {
	return s.store.setClientSecret(clientID, secret)
}

// RotateClientSecret gives a confidential client a new random secret and
// returns it.
func (s *Server) RotateClientSecret(clientID string) (string, error) {
	secret := randomString()
	return secret, s.store.setClientSecret(clientID, secret)
}

func randomString() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}
