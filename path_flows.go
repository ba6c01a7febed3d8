package nebula

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/hashicorp/go-uuid"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/types"
)

// Limits of flows/start input.
const (
	maxRedirectURI    = 2048
	maxAuthParams     = 16
	maxAuthParamKey   = 64
	maxAuthParamValue = 1024
)

// flowOAuthFields are the oauth2 credential fields flows/start takes
// (grant_type is the flow's own, refresh_token comes from the flow).
var flowOAuthFields = []string{
	"provider", "tenant", "client_id", "client_secret", "auth_url", "token_url",
	"device_url", "revocation_url", "scopes", "audience", "auth_style",
	"private_key", "key_id", "signing_alg", "assertion_audience", // auth_style private_key_jwt
}

// reservedAuthParams are the authorization request parameters the engine
// sets itself.
var reservedAuthParams = []string{
	"client_id", "redirect_uri", "response_type", "scope", "state",
	"code_challenge", "code_challenge_method",
}

func flowStartSchema() map[string]*framework.FieldSchema {
	schema := map[string]*framework.FieldSchema{
		"name":         {Type: framework.TypeString, Description: "Name of the oauth2 credential the flow creates when the user has signed in.", Required: true},
		"grant_type":   {Type: framework.TypeString, Description: "authorization_code (the user signs in through a browser redirect; PKCE S256 and state) or device_code (RFC 8628: the user enters a code on another device).", Default: types.GrantAuthorizationCode, AllowedValues: []any{types.GrantAuthorizationCode, types.GrantDeviceCode}},
		"redirect_uri": {Type: framework.TypeString, Description: "Where the provider sends the browser back (authorization_code; required). Normally this mount's callback as clients reach Vault, e.g. https://vault.example.com/v1/nebula/callback; it must be registered with the provider. An application that receives the redirect itself passes code and state to flows/<flow_id>/complete."},
		"auth_params":  {Type: framework.TypeKVPairs, Description: "Extra authorization request parameters (authorization_code), e.g. access_type=offline,prompt=consent for Google."},
		"description":  commonFields["description"],
		"tags":         commonFields["tags"],
		"metadata":     commonFields["metadata"],
	}
	for _, name := range flowOAuthFields {
		f, _ := types.OAuth2.Field(name)
		desc := f.Description
		if f.Secret {
			desc += " Secret: never returned by reads."
		}
		schema[name] = &framework.FieldSchema{Type: frameworkType(f.Kind), Description: desc}
	}
	return schema
}

// reconnectSchema is flows/start's schema for creds/<name>/reconnect: the
// name is the path's, and the credential keeps its description, tags and
// metadata.
func reconnectSchema() map[string]*framework.FieldSchema {
	schema := flowStartSchema()
	for _, common := range []string{"description", "tags", "metadata"} {
		delete(schema, common)
	}
	schema["name"] = &framework.FieldSchema{Type: framework.TypeString, Description: "Name of the oauth2 credential to reconnect; its status must be needs_reconnect."}
	return schema
}

func pathFlows(b *backend) []*framework.Path {
	flowID := &framework.FieldSchema{Type: framework.TypeString, Description: "The flow id flows/start answered."}
	return []*framework.Path{
		{
			Pattern:      "flows/start$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationVerb: "start", OperationSuffix: "flow"},
			Fields:       flowStartSchema(),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathFlowStart, Responses: flowResponses},
			},
			HelpSynopsis:    "Start an interactive OAuth2 flow that creates an oauth2 credential.",
			HelpDescription: flowStartHelp,
		},
		{
			Pattern:      "creds/(?P<name>[^/]+)/reconnect$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationVerb: "reconnect", OperationSuffix: "credential"},
			Fields:       reconnectSchema(),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathCredReconnect, Responses: flowResponses},
			},
			HelpSynopsis:    "Start an interactive OAuth2 flow that reconnects a credential whose grant is dead (status needs_reconnect).",
			HelpDescription: reconnectHelp,
		},
		{
			Pattern:      "flows/(?P<flow_id>[^/]+)/complete$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationVerb: "complete", OperationSuffix: "flow"},
			Fields: map[string]*framework.FieldSchema{
				"flow_id": flowID,
				"code":    {Type: framework.TypeString, Description: "The authorization code the provider redirected back with."},
				"state":   {Type: framework.TypeString, Description: "The state the provider redirected back with."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathFlowComplete, Responses: flowResponses},
			},
			HelpSynopsis:    "Complete an authorization code flow with the code and state of its redirect.",
			HelpDescription: "For applications that receive the provider's redirect themselves (redirect_uri not this mount's callback). The state must be the flow's and works once.",
		},
		{
			Pattern:      "flows/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "flows"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathFlowsList, Responses: listResponses("ids of the flows")},
			},
			HelpSynopsis:    "List flows.",
			HelpDescription: "Lists the ids of the flows in this mount: pending ones, and ended ones for a day after they ended.",
		},
		{
			Pattern:      "flows/(?P<flow_id>[^/]+)$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "flow"},
			Fields:       map[string]*framework.FieldSchema{"flow_id": flowID},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathFlowRead, Responses: flowResponses},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathFlowDelete, Responses: respNoContent, DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "cancel"}},
			},
			HelpSynopsis:    "Read a flow's status, or cancel it.",
			HelpDescription: flowReadHelp,
		},
		{
			Pattern:      "callback$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "flow-callback"},
			Fields: map[string]*framework.FieldSchema{
				"code":              {Type: framework.TypeString, Description: "Authorization code."},
				"state":             {Type: framework.TypeString, Description: "The flow's state; it authenticates the callback and works once."},
				"error":             {Type: framework.TypeString, Description: "OAuth2 error code, when the provider did not issue a code."},
				"error_description": {Type: framework.TypeString, Description: "Provider's error text; ignored."},
				"error_uri":         {Type: framework.TypeString, Description: "Provider's error page; ignored."},
				"iss":               {Type: framework.TypeString, Description: "Issuer (RFC 9207); ignored."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathFlowCallback, Responses: callbackResponses},
			},
			HelpSynopsis:    "The OAuth2 redirect target of authorization code flows (unauthenticated).",
			HelpDescription: callbackHelp,
		},
	}
}

// flowStart is a parsed flows/start request.
type flowStart struct {
	Name  string
	Grant string
	// Reconnect is set for creds/<name>/reconnect: the flow replaces the
	// grant of the existing credential Name instead of creating one.
	Reconnect bool
	// Values are the oauth2 fields supplied (not grant_type).
	Values      types.Values
	Description string
	Tags        []string
	Metadata    map[string]string
	RedirectURI string
	AuthParams  map[string]string
}

// parseFlowStart reads a flows/start request, or a creds/<name>/reconnect
// one (reconnect: no common fields, the credential keeps its own).
func parseFlowStart(d *framework.FieldData, reconnect bool) (*flowStart, error) {
	in := &flowStart{
		Name:        d.Get("name").(string),
		Grant:       d.Get("grant_type").(string),
		Reconnect:   reconnect,
		Values:      types.Values{},
		RedirectURI: d.Get("redirect_uri").(string),
		AuthParams:  d.Get("auth_params").(map[string]string),
	}
	if !reconnect {
		in.Description = d.Get("description").(string)
		in.Tags = d.Get("tags").([]string)
		in.Metadata = d.Get("metadata").(map[string]string)
	}
	for _, name := range flowOAuthFields {
		if v, ok := d.GetOk(name); ok {
			in.Values[name] = v
		}
	}
	errs := []error{validateName(in.Name), validateTags(in.Tags), validateMetadata(in.Metadata), types.OAuth2.CheckInput(in.Values)}
	if len(in.Description) > maxDescription {
		errs = append(errs, fmt.Errorf("field \"description\" is %d bytes long; at most %d are allowed", len(in.Description), maxDescription))
	}
	switch in.Grant {
	case types.GrantAuthorizationCode:
		errs = append(errs, validateRedirectURI(in.RedirectURI), validateAuthParams(in.AuthParams))
	case types.GrantDeviceCode:
		if in.RedirectURI != "" || len(in.AuthParams) > 0 {
			errs = append(errs, errors.New(`fields "redirect_uri" and "auth_params" apply to grant_type authorization_code only`))
		}
	default:
		errs = append(errs, fmt.Errorf("field \"grant_type\" must be %s or %s", types.GrantAuthorizationCode, types.GrantDeviceCode))
	}
	return in, errors.Join(errs...)
}

func validateRedirectURI(raw string) error {
	switch u, err := url.Parse(raw); {
	case raw == "":
		return errors.New(`field "redirect_uri" is required for grant_type authorization_code: this mount's callback URL as clients reach Vault (e.g. https://vault.example.com/v1/nebula/callback)`)
	case len(raw) > maxRedirectURI:
		return fmt.Errorf("field \"redirect_uri\" is %d bytes long; at most %d are allowed", len(raw), maxRedirectURI)
	case err != nil || !upstream.IsWebURL(raw) || u.Fragment != "" || u.User != nil:
		return errors.New(`field "redirect_uri" must be an absolute http(s) URL without user information or fragment`)
	}
	return nil
}

func validateAuthParams(params map[string]string) error {
	if len(params) > maxAuthParams {
		return fmt.Errorf("field \"auth_params\" has %d entries; at most %d are allowed", len(params), maxAuthParams)
	}
	var errs []error
	for k, v := range params {
		switch {
		case slices.Contains(reservedAuthParams, k):
			errs = append(errs, fmt.Errorf("field \"auth_params\": %q is set by the engine", k))
		case k == "" || len(k) > maxAuthParamKey || len(v) > maxAuthParamValue:
			errs = append(errs, fmt.Errorf("field \"auth_params\": %q must be 1 to %d bytes with a value of at most %d", truncate(k, 40), maxAuthParamKey, maxAuthParamValue))
		}
	}
	return errors.Join(errs...)
}

// pathFlowStart checks the credential the flow will create, starts the
// interaction (an authorization URL, or a device authorization request) and
// stores the flow.
func (b *backend) pathFlowStart(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	in, err := parseFlowStart(d, false)
	if err != nil {
		return nil, invalidInput(err)
	}
	return b.startFlow(ctx, req, in)
}

// pathCredReconnect starts a flow for an existing credential that needs
// reconnecting. It is a path of its own, under creds/<name>, so a Vault
// policy decides per name who may replace a credential's grant: flows/start
// only ever creates credentials.
func (b *backend) pathCredReconnect(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	in, err := parseFlowStart(d, true)
	if err != nil {
		return nil, invalidInput(err)
	}
	return b.startFlow(ctx, req, in)
}

// startFlow starts the flow in describes and answers what the user needs.
func (b *backend) startFlow(ctx context.Context, req *logical.Request, in *flowStart) (*logical.Response, error) {
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	ep, err := b.checkFlowStart(ctx, req.Storage, cfg, in)
	if err != nil {
		return nil, err
	}
	id, err := newFlowID()
	if err != nil {
		return nil, err
	}
	now := b.now()
	f := &flow{
		ID: id, Name: in.Name, Grant: in.Grant, Reconnect: in.Reconnect, Status: flowPending,
		CreatedAt: now, ExpiresAt: now.Add(cfg.FlowTTL),
		Values: in.Values, Description: in.Description, Tags: in.Tags, Metadata: in.Metadata,
	}
	if f.ProviderEndpoints, err = b.providerEndpoints(ctx, req.Storage, in.Values); err != nil {
		return nil, err
	}
	var (
		data      map[string]any
		stateHash string
	)
	if in.Grant == types.GrantDeviceCode {
		data, err = b.startDeviceFlow(ctx, cfg, ep, f)
	} else {
		data, stateHash, err = startRedirectFlow(ep, f, in)
	}
	if err != nil {
		return nil, err
	}
	if err := saveFlow(ctx, req.Storage, f, stateHash); err != nil {
		return nil, err
	}
	for k, v := range f.responseData(now) {
		if _, set := data[k]; !set {
			data[k] = v
		}
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathFlowRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	id, err := flowIDField(d)
	if err != nil {
		return nil, err
	}
	lock := flowLock(id)
	lock.Lock()
	defer lock.Unlock()
	f, err := loadFlow(ctx, req.Storage, id)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, newError(KindNotFound, "flow %s does not exist", id)
	}
	if err := b.pollFlow(ctx, req.Storage, f); err != nil && !recordedOnFlow(err) {
		return nil, err
	}
	return flowResponse(f, f.responseData(b.now())), nil
}

func (b *backend) pathFlowsList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ids, err := req.Storage.List(ctx, flowPrefix)
	if err != nil {
		return nil, flowStorageError("listing flows", err)
	}
	return logical.ListResponse(ids), nil
}

// pathFlowDelete cancels a flow (or forgets an ended one): its state stops
// working at once. Deleting a flow that does not exist succeeds.
func (b *backend) pathFlowDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	id, err := flowIDField(d)
	if err != nil {
		return nil, err
	}
	lock := flowLock(id)
	lock.Lock()
	defer lock.Unlock()
	f, err := loadFlow(ctx, req.Storage, id)
	if err != nil || f == nil {
		return nil, err
	}
	return nil, deleteFlow(ctx, req.Storage, f)
}

func (b *backend) pathFlowComplete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	id, err := flowIDField(d)
	if err != nil {
		return nil, err
	}
	code, state := d.Get("code").(string), d.Get("state").(string)
	if code == "" || state == "" {
		return nil, newError(KindInvalidInput, `fields "code" and "state" are required`)
	}
	if f, err := loadFlow(ctx, req.Storage, id); err != nil {
		return nil, err
	} else if f == nil {
		return nil, newError(KindNotFound, "flow %s does not exist", id)
	}
	if _, err := takeState(ctx, req.Storage, state, id); err != nil {
		return nil, err
	}
	f, err := b.redeem(ctx, req.Storage, id, code, "")
	if err != nil {
		return nil, err
	}
	return flowResponse(f, f.responseData(b.now())), nil
}

// pathFlowCallback is the redirect target: the state names the flow (and
// is spent), then the code is exchanged and the credential created.
func (b *backend) pathFlowCallback(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	state := d.Get("state").(string)
	if state == "" {
		return nil, newError(KindInvalidCallback, "the callback has no state")
	}
	id, err := takeState(ctx, req.Storage, state, "")
	if err != nil {
		return nil, err
	}
	f, err := b.redeem(ctx, req.Storage, id, d.Get("code").(string), d.Get("error").(string))
	if err != nil {
		return nil, err
	}
	return flowResponse(f, map[string]any{
		"status":  f.Status,
		"flow_id": f.ID,
		"name":    f.Name,
		"message": fmt.Sprintf("Signed in: credential %s is ready. You can close this window.", f.Name),
	}), nil
}

// flowIDField reads and checks the flow_id path field.
func flowIDField(d *framework.FieldData) (string, error) {
	id := d.Get("flow_id").(string)
	if _, err := uuid.ParseUUID(id); err != nil {
		return "", newError(KindInvalidInput, "flow id %q is not a flow id (a UUID)", truncate(id, 40))
	}
	return strings.ToLower(id), nil
}

func flowResponse(f *flow, data map[string]any) *logical.Response {
	resp := &logical.Response{Data: data}
	if f.Warning != "" {
		resp.AddWarning(f.Warning)
	}
	return resp
}

const flowStartHelp = `
Starts an interactive OAuth2 flow that creates the oauth2 credential "name"
when the user has signed in. Give the credential's oauth2 fields (provider or
explicit URLs, client_id, client_secret unless the client is public, scopes)
and the common fields (description, tags, metadata).

grant_type=authorization_code (default) answers auth_url: send the user's
browser there. The request carries a random state and a PKCE S256 challenge
(unless the provider preset has pkce=false). The provider redirects the
browser to redirect_uri, which is required because the engine does not know
the address clients reach Vault at: normally this mount's callback, e.g.
https://vault.example.com/v1/nebula/callback, registered with the provider.

grant_type=device_code (RFC 8628) answers user_code and verification_uri
(and verification_uri_complete): show them to the user. Reading
flows/<flow_id> polls the token endpoint (at most once per interval), and so
does the engine's background work.

The flow ends at flow_ttl (config) or when the provider's device code
expires. Ask for offline access (e.g. scope offline_access) so the
credential gets a refresh token.
`

const reconnectHelp = `
Starts an interactive OAuth2 flow, as flows/start does, for the existing
oauth2 credential "name" whose grant is dead (status needs_reconnect: the
provider answered invalid_grant, invalid_client or unauthorized_client).
Give the oauth2 fields the flow needs (client_id, client_secret unless the
client is public, provider or explicit URLs, scopes): the flow sends only
what this request supplies, never the stored secrets. When the user has
signed in, the credential gets the new grant as its next version, keeps its
description, tags, metadata and rotation policy, and is active again.

flows/start never replaces a credential: a Vault policy on
creds/<name>/reconnect decides who may reconnect which credential.
`

const flowReadHelp = `
Answers the flow's status: pending, completed (name is the credential
created, id its version), failed (error says why) or expired. Reading a
pending device_code flow polls the token endpoint once when its interval has
passed. Ended flows are kept for a day.

Deleting a flow cancels it: its state no longer works, and it creates no
credential.
`

const callbackHelp = `
The OAuth2 redirect target of authorization code flows, reached by the
user's browser without a Vault token: ?code=...&state=... The state is the
only authentication; it works once, whatever the outcome. The code is
exchanged with the flow's PKCE verifier and the credential is created. A
provider's error (?error=access_denied) fails the flow. No failure leaves a
credential behind.
`
