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
	// StatusNeedsReconnect: the provider refused the grant (invalid_grant,
	// invalid_client, unauthorized_client); see ReconnectFlow.
	StatusNeedsReconnect = "needs_reconnect"
)

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
