package oauthserver

import (
	"crypto/rsa"
	"net/url"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// The records of storage, implementing the interfaces zitadel's op package
// reads them through.

// client implements op.Client and op.HasRedirectGlobs.
type client struct {
	id            string
	secret        string // empty for public clients
	appType       op.ApplicationType
	authMethod    oidc.AuthMethod
	grantTypes    []oidc.GrantType
	redirectURIs  []string
	redirectGlobs []string // doublestar patterns, see op.HasRedirectGlobs
}

func (c *client) GetID() string                                                { return c.id }
func (c *client) RedirectURIs() []string                                       { return c.redirectURIs }
func (c *client) RedirectURIGlobs() []string                                   { return c.redirectGlobs }
func (c *client) PostLogoutRedirectURIs() []string                             { return nil }
func (c *client) PostLogoutRedirectURIGlobs() []string                         { return nil }
func (c *client) ApplicationType() op.ApplicationType                          { return c.appType }
func (c *client) AuthMethod() oidc.AuthMethod                                  { return c.authMethod }
func (c *client) GrantTypes() []oidc.GrantType                                 { return c.grantTypes }
func (c *client) AccessTokenType() op.AccessTokenType                          { return op.AccessTokenTypeBearer }
func (c *client) IDTokenLifetime() time.Duration                               { return time.Hour }
func (c *client) DevMode() bool                                                { return false }
func (c *client) IsScopeAllowed(string) bool                                   { return true } // any custom scope is granted
func (c *client) IDTokenUserinfoClaimsAssertion() bool                         { return false }
func (c *client) ClockSkew() time.Duration                                     { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string     { return keepScopes }
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string { return keepScopes }

func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}

// LoginURL is where zitadel sends the browser to authenticate the user.
func (c *client) LoginURL(id string) string {
	return loginPath + "?authRequestID=" + url.QueryEscape(id)
}

func keepScopes(scopes []string) []string { return scopes }

// authRequest implements op.AuthRequest.
type authRequest struct {
	id            string
	clientID      string
	redirectURI   string
	state         string
	nonce         string
	scopes        []string
	responseType  oidc.ResponseType
	responseMode  oidc.ResponseMode
	codeChallenge *oidc.CodeChallenge
	userID        string
	authTime      time.Time
	done          bool // the user logged in
}

func (a *authRequest) GetID() string                         { return a.id }
func (a *authRequest) GetACR() string                        { return "" }
func (a *authRequest) GetAudience() []string                 { return []string{a.clientID} }
func (a *authRequest) GetAuthTime() time.Time                { return a.authTime }
func (a *authRequest) GetClientID() string                   { return a.clientID }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge { return a.codeChallenge }
func (a *authRequest) GetNonce() string                      { return a.nonce }
func (a *authRequest) GetRedirectURI() string                { return a.redirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType    { return a.responseType }
func (a *authRequest) GetResponseMode() oidc.ResponseMode    { return a.responseMode }
func (a *authRequest) GetScopes() []string                   { return a.scopes }
func (a *authRequest) GetState() string                      { return a.state }
func (a *authRequest) GetSubject() string                    { return a.userID }
func (a *authRequest) Done() bool                            { return a.done }

func (a *authRequest) GetAMR() []string {
	if a.done {
		return []string{"pwd"}
	}
	return nil
}

type accessToken struct {
	id             string
	clientID       string
	subject        string
	refreshTokenID string
	audience       []string
	scopes         []string
	expiration     time.Time
}

// refreshToken implements op.RefreshTokenRequest; its id is the token.
type refreshToken struct {
	id            string
	clientID      string
	userID        string
	audience      []string
	scopes        []string // as granted; a refresh may ask for fewer
	authTime      time.Time
	amr           []string
	expiration    time.Time
	accessTokenID string // the latest access token issued with it
}

func (r *refreshToken) GetAMR() []string                 { return r.amr }
func (r *refreshToken) GetAudience() []string            { return r.audience }
func (r *refreshToken) GetAuthTime() time.Time           { return r.authTime }
func (r *refreshToken) GetClientID() string              { return r.clientID }
func (r *refreshToken) GetScopes() []string              { return r.scopes }
func (r *refreshToken) GetSubject() string               { return r.userID }
func (r *refreshToken) SetCurrentScopes(scopes []string) { r.scopes = scopes }

type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *signingKey) Key() any                                    { return k.key }
func (k *signingKey) ID() string                                  { return k.id }

type publicKey struct{ signingKey }

func (k *publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *publicKey) Use() string                        { return "sig" }
func (k *publicKey) Key() any                           { return &k.key.PublicKey }

// clientTokenRequest is a client_credentials token request: the client is
// the subject.
type clientTokenRequest struct {
	clientID string
	scopes   []string
}

func (r *clientTokenRequest) GetSubject() string    { return r.clientID }
func (r *clientTokenRequest) GetAudience() []string { return []string{r.clientID} }
func (r *clientTokenRequest) GetScopes() []string   { return r.scopes }

// deviceEntry is a device authorization, keyed by its device code.
type deviceEntry struct {
	userCode string
	state    op.DeviceAuthorizationState
	used     bool // tokens were issued
}
