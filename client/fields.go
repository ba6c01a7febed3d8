package client

import "time"

// APIKey holds the fields of an api_key credential.
type APIKey struct {
	// Key is the API key (secret; never returned by Get).
	Key Secret
	// ParamName is the header or query parameter name; the engine's
	// default is "X-API-Key" for header placement and "api_key" for query
	// placement.
	ParamName string
	// Placement is "header" (default) or "query".
	Placement string
}

// BasicAuth holds the fields of a basic_auth credential.
type BasicAuth struct {
	// Username is the user name; it must not contain a colon.
	Username string
	// Password is the password (secret; never returned by Get).
	Password Secret
}

// Bearer holds the fields of a bearer credential.
type Bearer struct {
	// Token is the bearer token (secret; never returned by Get).
	Token Secret
	// ExpiresAt is when the token stops working; zero means never.
	ExpiresAt time.Time
}

// OAuth2 holds the fields of an oauth2 credential.
type OAuth2 struct {
	// GrantType is client_credentials (the engine's default),
	// refresh_token, authorization_code or device_code.
	GrantType string
	// Provider names a provider preset (see Providers) that supplies the
	// URLs and default scopes.
	Provider string
	// Tenant is the tenant of presets whose URLs name one (microsoft).
	Tenant string
	// ClientID is the OAuth2 client identifier.
	ClientID string
	// ClientSecret is the client secret (secret; never returned by Get).
	ClientSecret Secret
	// TokenURL is the token endpoint, required without a Provider.
	TokenURL string
	// AuthURL is the authorization endpoint.
	AuthURL string
	// DeviceURL is the device authorization endpoint (RFC 8628).
	DeviceURL string
	// RevocationURL is the token revocation endpoint (RFC 7009).
	RevocationURL string
	// Scopes are the scopes to request; the preset's when empty.
	Scopes []string
	// Audience is sent with token requests, for providers that need it.
	Audience string
	// AuthStyle is how the client authenticates to the token endpoint:
	// auto (default), header or body.
	AuthStyle string
	// RefreshToken is a refresh token (secret; never returned by Get),
	// required for the refresh_token grant.
	RefreshToken Secret
	// PrivateKey is a PEM private key (RSA or EC; secret, never returned
	// by Get) that signs client assertions (AuthStyle private_key_jwt) or
	// jwt_bearer grant assertions (RFC 7523).
	PrivateKey Secret
	// KeyID is the JWK kid put in each assertion's header.
	KeyID string
	// SigningAlg is the assertions' algorithm (default RS256 for RSA keys,
	// ES256/384/512 for EC keys).
	SigningAlg string
	// AssertionAudience is the aud of private_key_jwt client assertions;
	// the URL called when empty.
	AssertionAudience string
	// Issuer and Subject are the jwt_bearer assertion's iss and sub
	// (Subject defaults to Issuer).
	Issuer, Subject string
	// ServiceAccountJSON is a Google service-account key (secret) for the
	// google-service-account provider.
	ServiceAccountJSON Secret
}

// Generated holds the fields of a generated credential, whose secret the
// engine makes itself.
type Generated struct {
	// Length is the secret's length in characters; the engine's default
	// when zero.
	Length int
	// Charset is alphanumeric (default), hex, base64url or printable.
	Charset string
	// Value is the secret (never returned by Get); generated when empty.
	Value Secret
}

func (f *APIKey) fields(body map[string]any) {
	setString(body, "api_key", f.Key.Value())
	setString(body, "param_name", f.ParamName)
	setString(body, "placement", f.Placement)
}

func (f *BasicAuth) fields(body map[string]any) {
	setString(body, "username", f.Username)
	setString(body, "password", f.Password.Value())
}

func (f *Bearer) fields(body map[string]any) {
	setString(body, "token", f.Token.Value())
	setTime(body, "expires_at", f.ExpiresAt)
}

func (f *OAuth2) fields(body map[string]any) {
	setString(body, "grant_type", f.GrantType)
	setString(body, "provider", f.Provider)
	setString(body, "tenant", f.Tenant)
	setString(body, "client_id", f.ClientID)
	setString(body, "client_secret", f.ClientSecret.Value())
	setString(body, "token_url", f.TokenURL)
	setString(body, "auth_url", f.AuthURL)
	setString(body, "device_url", f.DeviceURL)
	setString(body, "revocation_url", f.RevocationURL)
	if len(f.Scopes) > 0 {
		body["scopes"] = f.Scopes
	}
	setString(body, "audience", f.Audience)
	setString(body, "auth_style", f.AuthStyle)
	setString(body, "refresh_token", f.RefreshToken.Value())
	setString(body, "private_key", f.PrivateKey.Value())
	setString(body, "key_id", f.KeyID)
	setString(body, "signing_alg", f.SigningAlg)
	setString(body, "assertion_audience", f.AssertionAudience)
	setString(body, "issuer", f.Issuer)
	setString(body, "subject", f.Subject)
	setString(body, "service_account_json", f.ServiceAccountJSON.Value())
}

func (f *Generated) fields(body map[string]any) {
	if f.Length != 0 {
		body["length"] = f.Length
	}
	setString(body, "charset", f.Charset)
	setString(body, "value", f.Value.Value())
}

// typeFields are the type-specific fields of a credential, one of which is
// set. Writes send only the fields that are not empty.
type typeFields struct {
	APIKey    *APIKey
	BasicAuth *BasicAuth
	Bearer    *Bearer
	OAuth2    *OAuth2
	Generated *Generated
}

// typeName is the type whose fields are set; "" when none is; an error when
// more than one is.
func (t *typeFields) typeName() (string, error) {
	name := ""
	for _, set := range []struct {
		name string
		set  bool
	}{
		{TypeAPIKey, t.APIKey != nil}, {TypeBasicAuth, t.BasicAuth != nil}, {TypeBearer, t.Bearer != nil},
		{TypeOAuth2, t.OAuth2 != nil}, {TypeGenerated, t.Generated != nil},
	} {
		if !set.set {
			continue
		}
		if name != "" {
			return "", clientError(InvalidInput, "fields of two types given (%s and %s); set the fields of one type", name, set.name)
		}
		name = set.name
	}
	return name, nil
}

func (t *typeFields) fields(body map[string]any) {
	switch {
	case t.APIKey != nil:
		t.APIKey.fields(body)
	case t.BasicAuth != nil:
		t.BasicAuth.fields(body)
	case t.Bearer != nil:
		t.Bearer.fields(body)
	case t.OAuth2 != nil:
		t.OAuth2.fields(body)
	case t.Generated != nil:
		t.Generated.fields(body)
	}
}
