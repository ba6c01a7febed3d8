package nebula

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// maxCallerField bounds execution_id, workflow_id and user_id.
const maxCallerField = 256

func pathTokens(b *backend) []*framework.Path {
	nameField := map[string]*framework.FieldSchema{
		"name": {Type: framework.TypeString, Description: "Name of the credential."},
	}
	return []*framework.Path{
		{
			Pattern:      "token/(?P<name>[^/]+)$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "token"},
			Fields: map[string]*framework.FieldSchema{
				"name":         nameField["name"],
				"execution_id": {Type: framework.TypeString, Description: "Caller context for the audit trail: the workflow execution."},
				"workflow_id":  {Type: framework.TypeString, Description: "Caller context for the audit trail: the workflow."},
				"user_id":      {Type: framework.TypeString, Description: "Caller context for the audit trail: the user on whose behalf the token is used."},
				"version":      {Type: framework.TypeString, Description: `"current" (default) or "previous": the version a blue/green rotation keeps readable during its grace period.`},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathTokenRead, Responses: tokenResponses},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathTokenRead, Responses: tokenResponses, DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "token-with-caller-context"}},
			},
			HelpSynopsis:    "Read a credential's ready-to-use token.",
			HelpDescription: tokenHelp,
		},
		{
			Pattern:      "refresh/(?P<name>[^/]+)$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationVerb: "refresh", OperationSuffix: "token"},
			Fields:       nameField,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathRefreshOne, Responses: tokenResponses},
			},
			HelpSynopsis:    "Refresh a credential's token now.",
			HelpDescription: "Obtains a new token from the credential's token endpoint, stores it and returns it. Only oauth2 credentials can be refreshed.",
		},
		{
			Pattern:      "refresh/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationVerb: "refresh", OperationSuffix: "due"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathRefreshDue, Responses: refreshDueResponses, DisplayAttrs: &framework.DisplayAttributes{OperationSuffix: "due-tokens"}},
			},
			HelpSynopsis:    "Refresh every expired or expiring token.",
			HelpDescription: "Refreshes the tokens that expire within refresh_ahead, as the background refresh does, and returns the names refreshed and failed.",
		},
		{
			Pattern:      "cache/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationVerb: "clear", OperationSuffix: "cache"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathCacheClear, Responses: respNoContent},
			},
			HelpSynopsis:    "Clear the token cache.",
			HelpDescription: "Drops every cached token on this node; the next reads load them from storage.",
		},
		{
			Pattern:      "cache/(?P<name>[^/]+)$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationVerb: "clear", OperationSuffix: "cache-entry"},
			Fields:       nameField,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathCacheClearOne, Responses: respNoContent},
			},
			HelpSynopsis:    "Clear one credential's cached token.",
			HelpDescription: "Drops the credential's cached token on this node.",
		},
	}
}

// callerContext is who uses a token, as token/<name> writes state it.
type callerContext struct {
	ExecutionID string `json:"execution_id,omitempty"`
	WorkflowID  string `json:"workflow_id,omitempty"`
	UserID      string `json:"user_id,omitempty"`
}

func parseCaller(d *framework.FieldData) (callerContext, error) {
	var c callerContext
	for field, dst := range map[string]*string{"execution_id": &c.ExecutionID, "workflow_id": &c.WorkflowID, "user_id": &c.UserID} {
		v, ok := d.GetOk(field)
		if !ok {
			continue
		}
		*dst = v.(string)
		if len(*dst) > maxCallerField {
			return c, newError(KindInvalidInput, "field %q is %d bytes long; at most %d are allowed", field, len(*dst), maxCallerField)
		}
	}
	return c, nil
}

func (b *backend) pathTokenRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName(name); err != nil {
		return nil, invalidInput(err)
	}
	caller, err := parseCaller(d)
	if err != nil {
		return nil, err
	}
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	// On a node that cannot write storage (an OpenBao standby serving
	// reads, a Vault performance standby) the read's audit event could
	// never be stored. standby_token_reads=forward (the default) sends the
	// read to the active node, which serves and audits it; local serves it
	// here without an engine audit event (the host's audit device still
	// logs the request).
	local := !b.writable()
	if local && cfg.standbyTokenReads() != StandbyTokenReadsLocal {
		return nil, logical.ErrReadOnly
	}
	var t *servedToken
	switch version := d.Get("version").(string); version {
	case "", "current":
		t, err = b.tokenFor(ctx, req.Storage, name)
	case "previous":
		t, err = b.previousToken(ctx, req.Storage, name)
	default:
		err = newError(KindInvalidInput, "field \"version\" must be current or previous")
	}
	ev := auditEvent{Action: actionReadToken, Credential: name}
	if isReadOnly(err) {
		return nil, err // forwarded to the active node, which audits the read
	}
	if err != nil {
		b.stats.observeReadFailure(err)
		if !local {
			b.audit(ctx, req, auditOutcome(ev, err), &caller)
		}
		return nil, err
	}
	now := b.now()
	b.stats.observeRead(name, now)
	ev.Version = t.Version
	if !local {
		b.audit(ctx, req, auditOutcome(ev, nil), &caller)
	}
	return &logical.Response{Data: t.responseData(now)}, nil
}

// previousToken serves the version a blue/green rotation keeps during its
// grace period. It is read from storage (uncached) and never refreshed.
func (b *backend) previousToken(ctx context.Context, s logical.Storage, name string) (*servedToken, error) {
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	lock := b.lock(name)
	lock.RLock()
	defer lock.RUnlock()
	c, err := loadCredentialRequired(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if c.Previous == nil || !b.now().Before(c.Previous.GraceUntil) {
		return nil, newError(KindNotFound, "credential %q has no previous version in a grace period", name)
	}
	sv, err := loadSecret(ctx, s, name, c.Previous.ID)
	if err != nil {
		return nil, err
	}
	prev := *c
	prev.Version = c.Previous.Version
	if c.typ().IsStatic() {
		return b.staticToken(cfg, &prev, sv)
	}
	if sv.Token == nil {
		return nil, newError(KindNoToken, "the previous version of %q has no token", name)
	}
	return b.served(cfg, &prev, sv.Token), nil
}

func (b *backend) pathRefreshOne(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName(name); err != nil {
		return nil, invalidInput(err)
	}
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	t, err := b.loadToken(ctx, req.Storage, cfg, name, true)
	b.dropCached(name) // the next read loads the new token
	ev := auditEvent{Action: actionRefresh, Credential: name}
	if isReadOnly(err) {
		return nil, err // forwarded to the active node, which audits the refresh
	}
	if err != nil {
		b.audit(ctx, req, auditOutcome(ev, err), nil)
		return nil, err
	}
	ev.Version = t.Version
	b.audit(ctx, req, auditOutcome(ev, nil), nil)
	return &logical.Response{Data: t.responseData(b.now())}, nil
}

func (b *backend) pathRefreshDue(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	res, err := b.refreshDue(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	failed := make([]map[string]any, 0, len(res.Failed))
	names := make([]string, 0, len(res.Failed))
	for name := range res.Failed {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		failed = append(failed, map[string]any{"name": name, "error": res.Failed[name]})
	}
	return &logical.Response{Data: map[string]any{
		"refreshed": res.Refreshed,
		"failed":    failed,
	}}, nil
}

func (b *backend) pathCacheClear(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
	b.purgeCache()
	return nil, nil
}

func (b *backend) pathCacheClearOne(_ context.Context, _ *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName(name); err != nil {
		return nil, invalidInput(err)
	}
	b.dropCached(name)
	return nil, nil
}

// purgeCache drops every cached token.
func (b *backend) purgeCache() {
	b.cacheGen.Add(1)
	b.cache.Purge()
}

// periodicRefresh is the background refresh-ahead task. It first stores
// tokens held in memory because storage failed to take them.
func (b *backend) periodicRefresh(ctx context.Context, s logical.Storage) error {
	heldErr := b.storeHeldTokens(ctx, s)
	res, err := b.refreshAhead(ctx, s)
	if err != nil {
		return errors.Join(heldErr, err)
	}
	if heldErr != nil {
		return heldErr
	}
	if len(res.Failed) > 0 {
		return fmt.Errorf("%d of %d due tokens failed to refresh", len(res.Failed), len(res.Failed)+len(res.Refreshed))
	}
	return nil
}

const tokenHelp = `
Returns the credential's ready-to-use token: access_token (the API key,
password or bearer/access token), token_type, header_name and header_value
(put "<header_name>: <header_value>" on the request), expires_at, and for
expiring tokens ttl (seconds until the engine serves a new one) and
rotation_period (the token's lifetime), which make Vault Agent re-render as
soon as a new token exists. oauth2 tokens are obtained and refreshed as
needed. A write does the same and takes a caller context (execution_id,
workflow_id, user_id) for the audit trail.
`
