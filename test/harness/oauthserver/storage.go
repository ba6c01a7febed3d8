package oauthserver

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// expiresInPad is added to the expiry handed to zitadel, which truncates
// expires_in to whole seconds after some processing time: a lifetime of 2s
// is then answered as expires_in=2, not 1.
const expiresInPad = 500 * time.Millisecond

var (
	_ op.Storage                    = (*storage)(nil)
	_ op.ClientCredentialsStorage   = (*storage)(nil)
	_ op.DeviceAuthorizationStorage = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest  = (*storage)(nil)
)

// storage is the in-memory op.Storage of a Server, adapted from zitadel/oidc's
// example/server/storage (Apache-2.0). Unlike the example it has a
// configurable token lifetime, mutable client secrets, refresh tokens for the
// device grant, single-use device codes, and no global state.
type storage struct {
	accessTTL  time.Duration
	refreshTTL time.Duration
	rotate     bool // refresh grant answers a new refresh token
	key        signingKey
	jwtKeys    *jwtKeyPair // private_key_jwt client and JWT bearer issuer

	mu            sync.Mutex // guards every field below and the values they point to
	clients       map[string]*client
	authRequests  map[string]*authRequest
	codes         map[string]string // authorization code -> auth request id
	accessTokens  map[string]*accessToken
	refreshTokens map[string]*refreshToken
	devices       map[string]*deviceEntry // device code -> entry
	userCodes     map[string]string       // user code -> device code
	// deviceGrants maps the states handed to zitadel as approved to their
	// device code, so that issuing tokens for one consumes the code.
	deviceGrants map[*op.DeviceAuthorizationState]string
}

// rsaKey signs ID tokens; one key for all servers of a test binary saves
// generating one per server on a busy machine.
var rsaKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

func newStorage(cfg config) (*storage, error) {
	key, err := rsaKey()
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	jwtKeys, err := jwtKeys()
	if err != nil {
		return nil, fmt.Errorf("generate assertion keys: %w", err)
	}
	redirects, globs := cfg.redirectURIs, []string(nil)
	if len(redirects) == 0 {
		globs = []string{"http://127.0.0.1/**", "http://127.0.0.1:*/**", "http://localhost/**", "http://localhost:*/**"}
	}
	codeGrants := []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
	clients := []*client{
		{id: ClientCredentialsClientID, secret: randomString(), appType: op.ApplicationTypeWeb,
			authMethod: oidc.AuthMethodBasic, grantTypes: []oidc.GrantType{oidc.GrantTypeClientCredentials}},
		{id: WebClientID, secret: randomString(), appType: op.ApplicationTypeWeb,
			authMethod: oidc.AuthMethodBasic, grantTypes: codeGrants, redirectURIs: redirects, redirectGlobs: globs},
		{id: PublicClientID, appType: op.ApplicationTypeNative,
			authMethod: oidc.AuthMethodNone, grantTypes: codeGrants, redirectURIs: redirects, redirectGlobs: globs},
		{id: DeviceClientID, secret: randomString(), appType: op.ApplicationTypeWeb,
			authMethod: oidc.AuthMethodBasic, grantTypes: []oidc.GrantType{oidc.GrantTypeDeviceCode, oidc.GrantTypeRefreshToken}},
		{id: PrivateKeyJWTClientID, appType: op.ApplicationTypeWeb, authMethod: oidc.AuthMethodPrivateKeyJWT,
			grantTypes:   []oidc.GrantType{oidc.GrantTypeClientCredentials, oidc.GrantTypeCode, oidc.GrantTypeRefreshToken},
			redirectURIs: redirects, redirectGlobs: globs},
	}
	s := &storage{
		accessTTL:     cfg.accessTokenLifetime,
		refreshTTL:    cfg.refreshTokenLifetime,
		rotate:        cfg.rotateRefreshTokens,
		key:           signingKey{id: "key-1", key: key},
		jwtKeys:       jwtKeys,
		clients:       make(map[string]*client),
		authRequests:  make(map[string]*authRequest),
		codes:         make(map[string]string),
		accessTokens:  make(map[string]*accessToken),
		refreshTokens: make(map[string]*refreshToken),
		devices:       make(map[string]*deviceEntry),
		userCodes:     make(map[string]string),
		deviceGrants:  make(map[*op.DeviceAuthorizationState]string),
	}
	for _, c := range clients {
		s.clients[c.id] = c
	}
	return s, nil
}

func (s *storage) clientSecret(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clients[id].secret
}

func (s *storage) setClientSecret(id, secret string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok || c.authMethod == oidc.AuthMethodNone {
		return fmt.Errorf("oauthserver: no confidential client %q", id)
	}
	c.secret = secret
	return nil
}

func checkUser(username, password string) bool {
	return subtle.ConstantTimeCompare([]byte(username), []byte(Username)) == 1 &&
		subtle.ConstantTimeCompare([]byte(password), []byte(Password)) == 1
}

// ---- clients (op.OPStorage, op.ClientCredentialsStorage)

func (s *storage) GetClientByClientID(_ context.Context, clientID string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[clientID]
	if !ok {
		return nil, errors.New("client not found")
	}
	cp := *c
	return &cp, nil
}

func (s *storage) AuthorizeClientIDSecret(ctx context.Context, clientID, clientSecret string) error {
	_, err := s.ClientCredentials(ctx, clientID, clientSecret)
	return err
}

func (s *storage) ClientCredentials(ctx context.Context, clientID, clientSecret string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if asserted, _ := ctx.Value(assertedClientKey{}).(string); asserted != "" && asserted == clientID && clientSecret == "" {
		// A client_assertion the interceptor verified (recordAssertions).
		if c, ok := s.clients[clientID]; ok && c.authMethod == oidc.AuthMethodPrivateKeyJWT {
			cp := *c
			return &cp, nil
		}
	}
	c, ok := s.clients[clientID]
	if ok && c.authMethod == oidc.AuthMethodPrivateKeyJWT {
		return nil, errors.New("this client authenticates with private_key_jwt only")
	}
	if !ok || c.authMethod == oidc.AuthMethodNone ||
		subtle.ConstantTimeCompare([]byte(c.secret), []byte(clientSecret)) != 1 {
		return nil, errors.New("unknown client or wrong secret")
	}
	cp := *c
	return &cp, nil
}

func (s *storage) ClientCredentialsTokenRequest(_ context.Context, clientID string, scopes []string) (op.TokenRequest, error) {
	return &clientTokenRequest{clientID: clientID, scopes: scopes}, nil
}

// ---- authorization requests (op.AuthStorage)

func (s *storage) CreateAuthRequest(_ context.Context, req *oidc.AuthRequest, userID string) (op.AuthRequest, error) {
	if len(req.Prompt) == 1 && req.Prompt[0] == oidc.PromptNone {
		return nil, oidc.ErrLoginRequired() // no session to reuse
	}
	ar := &authRequest{
		id:           randomString(),
		clientID:     req.ClientID,
		redirectURI:  req.RedirectURI,
		state:        req.State,
		nonce:        req.Nonce,
		scopes:       req.Scopes,
		responseType: req.ResponseType,
		responseMode: req.ResponseMode,
		userID:       userID,
	}
	if req.CodeChallenge != "" {
		ar.codeChallenge = &oidc.CodeChallenge{Challenge: req.CodeChallenge, Method: req.CodeChallengeMethod}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authRequests[ar.id] = ar
	cp := *ar
	return &cp, nil
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authRequestByID(id)
}

func (s *storage) authRequestByID(id string) (op.AuthRequest, error) {
	ar, ok := s.authRequests[id]
	if !ok {
		return nil, errors.New("auth request not found")
	}
	cp := *ar
	return &cp, nil
}

func (s *storage) AuthRequestByCode(_ context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.codes[code]
	if !ok {
		return nil, errors.New("code invalid, expired or used")
	}
	return s.authRequestByID(id)
}

func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

// DeleteAuthRequest is called once the code is exchanged: the code is
// single-use.
func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.authRequests, id)
	for code, reqID := range s.codes {
		if reqID == id {
			delete(s.codes, code)
		}
	}
	return nil
}

// login marks the auth request id as authenticated by the user.
func (s *storage) login(id, username, password string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ar, ok := s.authRequests[id]
	if !ok {
		return errors.New("auth request not found")
	}
	if !checkUser(username, password) {
		return errors.New("wrong username or password")
	}
	ar.userID, ar.authTime, ar.done = UserID, time.Now(), true
	return nil
}

// ---- tokens (op.AuthStorage)

func (s *storage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clientID, _, _ := s.grantInfo(req)
	at := s.newAccessToken(clientID, "", req)
	return at.id, at.expiration.Add(expiresInPad), nil
}

func (s *storage) CreateAccessAndRefreshTokens(_ context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clientID, authTime, amr := s.grantInfo(req)
	if current == "" { // authorization code or device grant: a new refresh token
		rt := &refreshToken{id: randomString(), clientID: clientID, userID: req.GetSubject(),
			audience: req.GetAudience(), scopes: req.GetScopes(), authTime: authTime, amr: amr}
		return s.issue(rt, req)
	}
	rt, ok := s.refreshTokens[current]
	if !ok || time.Now().After(rt.expiration) {
		// Another request redeemed it meanwhile.
		return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("refresh token invalid, expired or already used")
	}
	if !s.rotate {
		at := s.newAccessToken(clientID, rt.id, req)
		rt.accessTokenID = at.id
		return at.id, "", at.expiration.Add(expiresInPad), nil
	}
	delete(s.refreshTokens, current)
	next := *rt
	next.id = randomString()
	return s.issue(&next, req)
}

// issue stores rt with a fresh lifetime and a new access token for req.
func (s *storage) issue(rt *refreshToken, req op.TokenRequest) (string, string, time.Time, error) {
	at := s.newAccessToken(rt.clientID, rt.id, req)
	rt.expiration = time.Now().Add(s.refreshTTL)
	rt.accessTokenID = at.id
	s.refreshTokens[rt.id] = rt
	return at.id, rt.id, at.expiration.Add(expiresInPad), nil
}

func (s *storage) newAccessToken(clientID, refreshTokenID string, req op.TokenRequest) *accessToken {
	at := &accessToken{
		id:             randomString(),
		clientID:       clientID,
		subject:        req.GetSubject(),
		refreshTokenID: refreshTokenID,
		audience:       req.GetAudience(),
		scopes:         req.GetScopes(),
		expiration:     time.Now().Add(s.accessTTL),
	}
	s.accessTokens[at.id] = at
	return at
}

// grantInfo returns the client, authentication time and methods behind a
// token request, and consumes an approved device code.
func (s *storage) grantInfo(req op.TokenRequest) (clientID string, authTime time.Time, amr []string) {
	switch r := req.(type) {
	case *authRequest:
		return r.clientID, r.authTime, r.GetAMR()
	case *refreshToken:
		return r.clientID, r.authTime, r.amr
	case *clientTokenRequest:
		return r.clientID, time.Time{}, nil
	case *op.DeviceAuthorizationState:
		if code, ok := s.deviceGrants[r]; ok {
			s.devices[code].used = true
			delete(s.deviceGrants, r)
		}
		return r.ClientID, r.AuthTime, r.AMR
	}
	return "", time.Time{}, nil
}

func (s *storage) TokenRequestByRefreshToken(_ context.Context, token string) (op.RefreshTokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refreshTokens[token]
	if !ok || time.Now().After(rt.expiration) {
		return nil, errors.New("refresh token invalid, expired or already used")
	}
	cp := *rt
	return &cp, nil
}

func (s *storage) GetRefreshTokenInfo(_ context.Context, _ string, token string) (userID, tokenID string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refreshTokens[token]
	if !ok {
		return "", "", op.ErrInvalidRefreshToken
	}
	return rt.userID, rt.id, nil
}

// RevokeToken revokes an access token (by id) or a refresh token together
// with its latest access token. Unknown tokens are ignored (RFC 7009).
func (s *storage) RevokeToken(_ context.Context, tokenOrID, _ string, clientID string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.accessTokens[tokenOrID]; ok {
		if at.clientID != clientID {
			return oidc.ErrInvalidClient().WithDescription("token was not issued to this client")
		}
		delete(s.accessTokens, at.id)
		return nil
	}
	rt, ok := s.refreshTokens[tokenOrID]
	if !ok {
		return nil
	}
	if rt.clientID != clientID {
		return oidc.ErrInvalidClient().WithDescription("token was not issued to this client")
	}
	delete(s.refreshTokens, rt.id)
	delete(s.accessTokens, rt.accessTokenID)
	return nil
}

func (s *storage) TerminateSession(_ context.Context, userID, clientID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, at := range s.accessTokens {
		if at.clientID == clientID && at.subject == userID {
			delete(s.accessTokens, id)
			delete(s.refreshTokens, at.refreshTokenID)
		}
	}
	return nil
}

// ---- keys

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) { return &s.key, nil }

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{&publicKey{s.key}}, nil
}

func (s *storage) ValidateJWTProfileScopes(_ context.Context, _ string, scopes []string) ([]string, error) {
	return slices.DeleteFunc(scopes, func(sc string) bool { return sc != oidc.ScopeOpenID }), nil
}

// ---- userinfo and introspection

// SetUserinfoFromScopes is deprecated in zitadel in favour of
// SetUserinfoFromRequest.
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (s *storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	setUserinfo(info, req.GetSubject(), scopes)
	return nil
}

func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, _, _ string) error {
	at, err := s.activeToken(tokenID)
	if err != nil {
		return err
	}
	setUserinfo(info, at.subject, at.scopes)
	return nil
}

func (s *storage) SetIntrospectionFromToken(_ context.Context, resp *oidc.IntrospectionResponse, tokenID, _, clientID string) error {
	at, err := s.activeToken(tokenID)
	if err != nil {
		return err
	}
	if !slices.Contains(at.audience, clientID) {
		return errors.New("token is not for this client")
	}
	info := new(oidc.UserInfo)
	setUserinfo(info, at.subject, at.scopes)
	resp.SetUserInfo(info)
	resp.Scope = at.scopes
	resp.ClientID = at.clientID
	resp.Expiration = oidc.FromTime(at.expiration)
	return nil
}

func (s *storage) activeToken(id string) (accessToken, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.accessTokens[id]
	if !ok || time.Now().After(at.expiration) {
		return accessToken{}, errors.New("token invalid, expired or revoked")
	}
	return *at, nil
}

func setUserinfo(info *oidc.UserInfo, subject string, scopes []string) {
	info.Subject = subject
	if subject != UserID {
		return // a client_credentials client
	}
	if slices.Contains(scopes, oidc.ScopeEmail) {
		info.Email, info.EmailVerified = "test-user@example.com", true
	}
	if slices.Contains(scopes, oidc.ScopeProfile) {
		info.PreferredUsername, info.Name = Username, "Test User"
	}
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *storage) Health(context.Context) error { return nil }

// ---- device authorization (op.DeviceAuthorizationStorage)
