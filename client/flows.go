package client

import (
	"context"
	"time"
)

// Grant types of interactive flows.
const (
	// GrantAuthorizationCode: the user signs in through a browser
	// redirect (PKCE S256 and state).
	GrantAuthorizationCode = "authorization_code"
	// GrantDeviceCode: the user enters a code on another device (RFC 8628).
	GrantDeviceCode = "device_code"
)

// Interaction types: what the user of a flow does.
const (
	// InteractionRedirect: open AuthURL in a browser and sign in.
	InteractionRedirect = "redirect"
	// InteractionDeviceCode: enter UserCode at VerificationURI.
	InteractionDeviceCode = "device_code"
)

// Flow statuses: a flow is pending until it completes (the credential
// exists), fails, or expires.
const (
	FlowStatusPending   = "pending"
	FlowStatusCompleted = "completed"
	FlowStatusFailed    = "failed"
	FlowStatusExpired   = "expired"
)

// FlowInput is what StartFlow takes: the oauth2 credential the flow creates
// when the user has signed in, and how the user signs in.
type FlowInput struct {
	// Name is the name of the credential the flow creates.
	Name string
	// GrantType is GrantAuthorizationCode (default) or GrantDeviceCode.
	GrantType string
	// RedirectURI is where the provider sends the browser back
	// (authorization_code; required): normally the mount's callback as
	// clients reach Vault, e.g. https://vault.example.com/v1/nebula/callback.
	RedirectURI string
	// AuthParams are extra authorization request parameters, e.g.
	// access_type=offline for Google.
	AuthParams map[string]string

	// Provider names a provider preset (see Providers).
	Provider string
	// Tenant is the tenant of presets whose URLs name one (microsoft).
	Tenant string
	// ClientID is the OAuth2 client identifier.
	ClientID string
	// ClientSecret is the client secret; empty for public clients.
	ClientSecret Secret
	// AuthURL is the authorization endpoint, unless the preset has one.
	AuthURL string
	// TokenURL is the token endpoint, unless the preset has one.
	TokenURL string
	// DeviceURL is the device authorization endpoint (device_code).
	DeviceURL string
	// RevocationURL is the token revocation endpoint.
	RevocationURL string
	// Scopes are the scopes to request (ask for offline access to get a
	// refresh token).
	Scopes []string
	// Audience is sent with token requests, for providers that need it.
	Audience string
	// AuthStyle is auto (default), header or body.
	AuthStyle string

	// Description is the created credential's description.
	Description string
	// Tags are the created credential's tags.
	Tags []string
	// Metadata is the created credential's metadata.
	Metadata map[string]string
}

func (in *FlowInput) body() map[string]any {
	body := map[string]any{"name": in.Name}
	setString(body, "grant_type", in.GrantType)
	setString(body, "redirect_uri", in.RedirectURI)
	if len(in.AuthParams) > 0 {
		body["auth_params"] = in.AuthParams
	}
	(&OAuth2{
		Provider: in.Provider, Tenant: in.Tenant, ClientID: in.ClientID, ClientSecret: in.ClientSecret,
		AuthURL: in.AuthURL, TokenURL: in.TokenURL, DeviceURL: in.DeviceURL, RevocationURL: in.RevocationURL,
		Scopes: in.Scopes, Audience: in.Audience, AuthStyle: in.AuthStyle,
	}).fields(body)
	setString(body, "description", in.Description)
	if in.Tags != nil {
		body["tags"] = in.Tags
	}
	if in.Metadata != nil {
		body["metadata"] = in.Metadata
	}
	return body
}

// Flow is an interactive flow's state.
type Flow struct {
	// ID is the flow id.
	ID string
	// Name is the name of the credential the flow creates.
	Name string
	// Reconnect is true for a flow ReconnectFlow started: it gives the
	// existing credential Name a new grant.
	Reconnect bool
	// GrantType is GrantAuthorizationCode or GrantDeviceCode.
	GrantType string
	// InteractionType says what the user does: InteractionRedirect or
	// InteractionDeviceCode.
	InteractionType string
	// Status is FlowStatusPending, FlowStatusCompleted, FlowStatusFailed
	// or FlowStatusExpired.
	Status string
	// CreatedAt is when the flow started.
	CreatedAt time.Time
	// ExpiresAt is when a pending flow expires.
	ExpiresAt time.Time
	// EndedAt is when the flow ended; zero while pending.
	EndedAt time.Time
	// AuthURL is where to send the user's browser (authorization_code;
	// answered by StartFlow only).
	AuthURL string
	// RedirectURI is the flow's redirect URI (authorization_code).
	RedirectURI string
	// UserCode is the code the user enters (device_code, while pending).
	UserCode string
	// VerificationURI is where the user enters it.
	VerificationURI string
	// VerificationURIComplete is VerificationURI with the code filled in.
	VerificationURIComplete string
	// Interval is the polling interval (device_code).
	Interval time.Duration
	// LastPollError is the last polling error of a pending device flow.
	LastPollError string
	// CredentialID is the id of the credential a completed flow created.
	CredentialID string
	// Error says why a failed flow failed.
	Error string
	// Warnings are the engine's warnings about the flow.
	Warnings []string
}

// flowWire is the engine's flow response.
type flowWire struct {
	FlowID                  string    `json:"flow_id"`
	Name                    string    `json:"name"`
	Reconnect               bool      `json:"reconnect"`
	GrantType               string    `json:"grant_type"`
	InteractionType         string    `json:"interaction_type"`
	Status                  string    `json:"status"`
	CreatedAt               time.Time `json:"created_at"`
	ExpiresAt               time.Time `json:"expires_at"`
	EndedAt                 time.Time `json:"ended_at"`
	AuthURL                 string    `json:"auth_url"`
	RedirectURI             string    `json:"redirect_uri"`
	UserCode                string    `json:"user_code"`
	VerificationURI         string    `json:"verification_uri"`
	VerificationURIComplete string    `json:"verification_uri_complete"`
	Interval                int64     `json:"interval"`
	LastPollError           string    `json:"last_poll_error"`
	ID                      string    `json:"id"`
	Error                   string    `json:"error"`
}

func (w *flowWire) flow(warnings []string) *Flow {
	return &Flow{
		ID: w.FlowID, Name: w.Name, Reconnect: w.Reconnect, GrantType: w.GrantType, InteractionType: w.InteractionType,
		Status: w.Status, CreatedAt: w.CreatedAt, ExpiresAt: w.ExpiresAt, EndedAt: w.EndedAt,
		AuthURL: w.AuthURL, RedirectURI: w.RedirectURI, UserCode: w.UserCode,
		VerificationURI: w.VerificationURI, VerificationURIComplete: w.VerificationURIComplete,
		Interval: seconds(w.Interval), LastPollError: w.LastPollError, CredentialID: w.ID,
		Error: w.Error, Warnings: warnings,
	}
}

// StartFlow starts an interactive OAuth2 flow that creates an oauth2
// credential when the user has signed in. Send the user to AuthURL
// (authorization_code), or show UserCode and VerificationURI
// (device_code) and poll GetFlow.
func (c *Client) StartFlow(ctx context.Context, in FlowInput) (*Flow, error) {
	var w flowWire
	// Replayable: a repeated start makes another pending flow, and the
	// one whose answer was lost expires unused.
	warnings, err := c.write(ctx, replayable, c.mount+"/flows/start", in.body(), &w)
	if err != nil {
		return nil, err
	}
	return w.flow(warnings), nil
}

// ReconnectFlow starts an interactive OAuth2 flow for the existing oauth2
// credential in.Name whose grant is dead (Status needs_reconnect): when the
// user has signed in, the credential gets the new grant and is active
// again. It keeps its description, tags and metadata, so in's must be
// empty. The flow sends only in's client secret, never the stored one.
// flows/start (StartFlow) never replaces a credential; a Vault policy on
// creds/<name>/reconnect says who may.
func (c *Client) ReconnectFlow(ctx context.Context, in FlowInput) (*Flow, error) {
	path, err := c.pathOf("creds", in.Name, "reconnect")
	if err != nil {
		return nil, err
	}
	if in.Description != "" || in.Tags != nil || in.Metadata != nil {
		return nil, clientError(InvalidInput, "a reconnected credential keeps its description, tags and metadata: leave them empty")
	}
	body := in.body()
	delete(body, "name")
	var w flowWire
	// Replayable as StartFlow is.
	warnings, err := c.write(ctx, replayable, path, body, &w)
	if err != nil {
		return nil, err
	}
	return w.flow(warnings), nil
}

// GetFlow returns a flow's status. Reading a pending device_code flow
// polls the provider once its interval has passed.
func (c *Client) GetFlow(ctx context.Context, id string) (*Flow, error) {
	path, err := c.pathOf("flows", id)
	if err != nil {
		return nil, err
	}
	var w flowWire
	warnings, err := c.read(ctx, path, nil, &w)
	if err != nil {
		return nil, err
	}
	return w.flow(warnings), nil
}

// CompleteFlow completes an authorization_code flow with the code and
// state the provider redirected back with, for applications that receive
// the redirect themselves. A state that is not the flow's answers
// ErrInvalidCallback; a flow past its time, ErrFlowExpired.
func (c *Client) CompleteFlow(ctx context.Context, id, code, state string) (*Flow, error) {
	path, err := c.pathOf("flows", id, "complete")
	if err != nil {
		return nil, err
	}
	var w flowWire
	warnings, err := c.write(ctx, once, path, map[string]any{"code": code, "state": state}, &w)
	if err != nil {
		return nil, err
	}
	return w.flow(warnings), nil
}

// CancelFlow cancels a flow (or forgets an ended one): its state stops
// working at once. Cancelling a flow that does not exist succeeds.
func (c *Client) CancelFlow(ctx context.Context, id string) error {
	path, err := c.pathOf("flows", id)
	if err != nil {
		return err
	}
	return c.delete(ctx, path)
}

// ListFlows returns the ids of the mount's flows: pending ones, and ended
// ones for a day after they ended.
func (c *Client) ListFlows(ctx context.Context) ([]string, error) {
	var keys listKeys
	if err := c.list(ctx, c.mount+"/flows/", &keys); err != nil {
		return nil, err
	}
	return keys.Keys, nil
}
