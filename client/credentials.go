package client

import (
	"context"
	"time"
)

// Credential types of the engine (see Types).
const (
	TypeAPIKey    = "api_key"
	TypeBasicAuth = "basic_auth"
	TypeBearer    = "bearer"
	TypeOAuth2    = "oauth2"
	TypeGenerated = "generated"
)

// Credential statuses, as Credential.Status shows them.
const (
	StatusActive  = "active"
	StatusExpired = "expired"
	StatusError   = "error"
)

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

// CreateInput is what Create takes.
type CreateInput struct {
	// Type is the credential type (see Types). It may be left empty when
	// the fields of one type are set.
	Type string
	// The type's fields: set the one of Type.
	APIKey    *APIKey
	BasicAuth *BasicAuth
	Bearer    *Bearer
	OAuth2    *OAuth2
	Generated *Generated
	// Description is free text.
	Description string
	// Tags group and find credentials.
	Tags []string
	// Metadata is non-secret key/value data.
	Metadata map[string]string
	// IdempotencyKey makes a repeated Create with the same input answer
	// the same id and change nothing; the same key with other input
	// answers ErrDuplicate.
	IdempotencyKey string
	// Mirror names mirror targets (aws, azure) to copy the credential to.
	Mirror []string
	// MirrorContent is what mirrors hold: token or secret.
	MirrorContent string
	// Verify makes the engine contact the provider on create.
	Verify bool
}

func (in *CreateInput) typeFields() *typeFields {
	return &typeFields{in.APIKey, in.BasicAuth, in.Bearer, in.OAuth2, in.Generated}
}

func (in *CreateInput) body() (map[string]any, error) {
	tf := in.typeFields()
	typ, err := tf.typeName()
	if err != nil {
		return nil, err
	}
	switch {
	case in.Type == "" && typ == "":
		return nil, clientError(InvalidInput, "no credential type: set Type or the fields of one type")
	case in.Type != "" && typ != "" && in.Type != typ:
		return nil, clientError(InvalidInput, "Type is %s but the fields given are of type %s", in.Type, typ)
	case in.Type != "":
		typ = in.Type
	}
	body := map[string]any{"type": typ}
	tf.fields(body)
	setString(body, "description", in.Description)
	setCommon(body, in.Tags, in.Metadata, in.IdempotencyKey, in.Mirror, in.MirrorContent)
	if in.Verify {
		body["verify"] = true
	}
	return body, nil
}

// UpdateInput is what Update takes. Nil and empty fields leave the stored
// values as they are; a non-nil empty Tags or Metadata clears them.
type UpdateInput struct {
	// New values of the credential's type fields (set the one of its
	// type). Secret values that differ from the stored ones make a new
	// version, as a rotation with supplied values does.
	APIKey    *APIKey
	BasicAuth *BasicAuth
	Bearer    *Bearer
	OAuth2    *OAuth2
	Generated *Generated
	// Description, when not nil, replaces the description.
	Description *string
	// Tags, when not nil, replace the tags.
	Tags []string
	// Metadata, when not nil, replaces the metadata.
	Metadata map[string]string
	// IdempotencyKey: see CreateInput.
	IdempotencyKey string
	// Mirror, when not nil, replaces the mirror targets.
	Mirror []string
	// MirrorContent, when not empty, replaces what mirrors hold.
	MirrorContent string
}

func (in *UpdateInput) body() (map[string]any, error) {
	tf := &typeFields{in.APIKey, in.BasicAuth, in.Bearer, in.OAuth2, in.Generated}
	if _, err := tf.typeName(); err != nil {
		return nil, err
	}
	body := map[string]any{}
	tf.fields(body)
	if in.Description != nil {
		body["description"] = *in.Description
	}
	setCommon(body, in.Tags, in.Metadata, in.IdempotencyKey, in.Mirror, in.MirrorContent)
	return body, nil
}

// setCommon sets the fields every credential write takes, those given.
func setCommon(body map[string]any, tags []string, metadata map[string]string, idempotencyKey string, mirror []string, mirrorContent string) {
	if tags != nil {
		body["tags"] = tags
	}
	if metadata != nil {
		body["metadata"] = metadata
	}
	setString(body, "idempotency_key", idempotencyKey)
	if mirror != nil {
		body["mirror"] = mirror
	}
	setString(body, "mirror_content", mirrorContent)
}

// Credential is a credential as Get answers it: everything but its secret
// values.
type Credential struct {
	// ID is the id (UUID) of the current version.
	ID string
	// Name is the credential's name.
	Name string
	// Type is the credential type.
	Type string
	// Version is the current version number, from 1.
	Version int
	// Description is free text.
	Description string
	// Tags group and find credentials.
	Tags []string
	// Metadata is non-secret key/value data.
	Metadata map[string]string
	// The type's non-secret fields, in the one struct of the credential's
	// type (the others are nil); secret fields are empty.
	APIKey    *APIKey
	BasicAuth *BasicAuth
	Bearer    *Bearer
	OAuth2    *OAuth2
	Generated *Generated
	// Mirror names the mirror targets the credential is copied to.
	Mirror []string
	// MirrorContent is what mirrors hold: token or secret.
	MirrorContent string
	// CreatedAt is when the credential was created.
	CreatedAt time.Time
	// UpdatedAt is when it last changed.
	UpdatedAt time.Time
	// ExpiresAt is when its token expires (bearer); zero means never.
	ExpiresAt time.Time
	// Status is active, expired, error (see LastError) or needs_reconnect
	// (the provider refused the grant: write new secret material or
	// complete a flow).
	Status string
	// LastError is the last failure of background work; empty when the
	// last attempt succeeded.
	LastError string
	// Rotation is the rotation policy and state.
	Rotation *RotationStatus
}

// credentialWire is the engine's creds/<name> response.
type credentialWire struct {
	ID            string            `json:"id"`
	Name          string            `json:"name"`
	Type          string            `json:"type"`
	Version       int               `json:"version"`
	Description   string            `json:"description"`
	Tags          []string          `json:"tags"`
	Metadata      map[string]string `json:"metadata"`
	Mirror        []string          `json:"mirror"`
	MirrorContent string            `json:"mirror_content"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
	ExpiresAt     time.Time         `json:"expires_at"`
	Status        string            `json:"status"`
	LastError     string            `json:"last_error"`
	Rotation      *rotationWire     `json:"rotation"`

	// Type fields (non-secret ones; the engine never answers the others).
	ParamName     string   `json:"param_name"`
	Placement     string   `json:"placement"`
	Username      string   `json:"username"`
	GrantType     string   `json:"grant_type"`
	Provider      string   `json:"provider"`
	Tenant        string   `json:"tenant"`
	ClientID      string   `json:"client_id"`
	TokenURL      string   `json:"token_url"`
	AuthURL       string   `json:"auth_url"`
	DeviceURL     string   `json:"device_url"`
	RevocationURL string   `json:"revocation_url"`
	Scopes        []string `json:"scopes"`
	Audience      string   `json:"audience"`
	AuthStyle     string   `json:"auth_style"`
	KeyID         string   `json:"key_id"`
	SigningAlg    string   `json:"signing_alg"`
	AssertionAud  string   `json:"assertion_audience"`
	Issuer        string   `json:"issuer"`
	Subject       string   `json:"subject"`
	Length        int      `json:"length"`
	Charset       string   `json:"charset"`
}

func (w *credentialWire) credential() *Credential {
	c := &Credential{
		ID: w.ID, Name: w.Name, Type: w.Type, Version: w.Version, Description: w.Description,
		Tags: w.Tags, Metadata: w.Metadata, Mirror: w.Mirror, MirrorContent: w.MirrorContent,
		CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt, ExpiresAt: w.ExpiresAt,
		Status: w.Status, LastError: w.LastError,
	}
	if w.Rotation != nil {
		c.Rotation = w.Rotation.status()
	}
	switch w.Type {
	case TypeAPIKey:
		c.APIKey = &APIKey{ParamName: w.ParamName, Placement: w.Placement}
	case TypeBasicAuth:
		c.BasicAuth = &BasicAuth{Username: w.Username}
	case TypeBearer:
		c.Bearer = &Bearer{ExpiresAt: w.ExpiresAt}
	case TypeOAuth2:
		c.OAuth2 = &OAuth2{
			GrantType: w.GrantType, Provider: w.Provider, Tenant: w.Tenant, ClientID: w.ClientID,
			TokenURL: w.TokenURL, AuthURL: w.AuthURL, DeviceURL: w.DeviceURL, RevocationURL: w.RevocationURL,
			Scopes: w.Scopes, Audience: w.Audience, AuthStyle: w.AuthStyle,
			KeyID: w.KeyID, SigningAlg: w.SigningAlg, AssertionAudience: w.AssertionAud,
			Issuer: w.Issuer, Subject: w.Subject,
		}
	case TypeGenerated:
		c.Generated = &Generated{Length: w.Length, Charset: w.Charset}
	}
	return c
}

// Create creates the credential name, or, when it exists, writes the input
// over it as Update does (the engine's create-or-update). The engine does
// not contact the credential's provider unless Verify is set; the first
// GetToken does.
func (c *Client) Create(ctx context.Context, name string, in CreateInput) (*Credential, error) {
	path, err := c.pathOf("creds", name)
	if err != nil {
		return nil, err
	}
	body, err := in.body()
	if err != nil {
		return nil, err
	}
	var w credentialWire
	if _, err := c.write(ctx, replayIf(in.IdempotencyKey != ""), path, body, &w); err != nil {
		return nil, err
	}
	return w.credential(), nil
}

// Get returns the credential without its secret values.
func (c *Client) Get(ctx context.Context, name string) (*Credential, error) {
	path, err := c.pathOf("creds", name)
	if err != nil {
		return nil, err
	}
	var w credentialWire
	if _, err := c.read(ctx, path, nil, &w); err != nil {
		return nil, err
	}
	return w.credential(), nil
}

// List returns the names of the mount's credentials.
func (c *Client) List(ctx context.Context) ([]string, error) {
	var keys listKeys
	if err := c.list(ctx, c.mount+"/creds/", &keys); err != nil {
		return nil, err
	}
	return keys.Keys, nil
}

// Update changes an existing credential: the fields the input sets. It
// reads the credential first (so the token needs read on creds/<name>) and
// answers ErrNotFound when it does not exist.
func (c *Client) Update(ctx context.Context, name string, in UpdateInput) (*Credential, error) {
	path, err := c.pathOf("creds", name)
	if err != nil {
		return nil, err
	}
	body, err := in.body()
	if err != nil {
		return nil, err
	}
	// A write to a name that does not exist would be a create (and fail
	// for want of a type); answer not_found instead.
	if _, err := c.Get(ctx, name); err != nil {
		return nil, err
	}
	var w credentialWire
	if _, err := c.write(ctx, replayIf(in.IdempotencyKey != ""), path, body, &w); err != nil {
		return nil, err
	}
	return w.credential(), nil
}

// Delete deletes the credential and all its versions. Deleting a
// credential that does not exist succeeds.
func (c *Client) Delete(ctx context.Context, name string) error {
	path, err := c.pathOf("creds", name)
	if err != nil {
		return err
	}
	return c.delete(ctx, path)
}

// setTime sets body[key] to t in RFC 3339 when t is not zero.
func setTime(body map[string]any, key string, t time.Time) {
	if !t.IsZero() {
		body[key] = t.UTC().Format(time.RFC3339)
	}
}
