package nebula

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/types"
)

const providersPrefix = "providers/"

func pathProviders(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "providers/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "providers"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathProvidersList, Responses: listResponses("names of the provider presets")},
			},
			HelpSynopsis:    "List OAuth2 provider presets.",
			HelpDescription: "Lists the built-in presets (google, github, microsoft, gitlab, slack) and the custom ones written to this mount.",
		},
		{
			Pattern:      "providers/(?P<name>[^/]+)$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "provider"},
			Fields: map[string]*framework.FieldSchema{
				"name":           {Type: framework.TypeString, Description: "Name of the preset."},
				"auth_url":       {Type: framework.TypeString, Description: "Authorization endpoint."},
				"token_url":      {Type: framework.TypeString, Description: "Token endpoint (required)."},
				"device_url":     {Type: framework.TypeString, Description: "Device authorization endpoint (RFC 8628)."},
				"revocation_url": {Type: framework.TypeString, Description: "Token revocation endpoint (RFC 7009)."},
				"scopes":         {Type: framework.TypeCommaStringSlice, Description: "Default scopes."},
				"pkce":           {Type: framework.TypeBool, Description: "Whether the provider supports PKCE S256.", Default: true},
				"auth_style":     {Type: framework.TypeString, Description: "Client authentication: auto, header or body.", Default: "auto"},
			},
			ExistenceCheck: b.providerExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathProviderRead, Responses: providerResponses},
				logical.CreateOperation: &framework.PathOperation{Callback: b.pathProviderWrite, Responses: providerResponses},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathProviderWrite, Responses: providerResponses},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathProviderDelete, Responses: respNoContent},
			},
			HelpSynopsis:    "Read, write or delete an OAuth2 provider preset.",
			HelpDescription: "An oauth2 credential with provider=<name> takes its endpoints and default scopes from the preset. The endpoints are resolved when the credential is written and kept with it: changing a preset's URLs here does not move existing credentials (or running flows); rewrite a credential with provider=<name> and its secrets to adopt them. Built-in presets are read-only; the microsoft preset takes the credential's tenant field.",
		},
	}
}

func (b *backend) providerExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	p, err := b.lookupProvider(ctx, req.Storage, d.Get("name").(string))
	return p != nil, err
}

// lookupProvider returns a built-in or custom preset; nil when none.
func (b *backend) lookupProvider(ctx context.Context, s logical.Storage, name string) (*types.Provider, error) {
	if p, ok := types.BuiltinProviders[name]; ok {
		return &p, nil
	}
	if validateName(name) != nil {
		return nil, nil
	}
	entry, err := s.Get(ctx, providerKey(name))
	if err != nil {
		return nil, storageError("reading provider", err)
	}
	if entry == nil {
		return nil, nil
	}
	p := &types.Provider{}
	if err := entry.DecodeJSON(p); err != nil {
		return nil, storageError("decoding provider", err)
	}
	return p, nil
}

// resolveProvider returns the preset a credential names, with its tenant
// applied; an empty preset when it names none.
func (b *backend) resolveProvider(ctx context.Context, s logical.Storage, v types.Values) (types.Provider, error) {
	name := v.String("provider")
	if name == "" {
		return types.Provider{}, nil
	}
	p, err := b.lookupProvider(ctx, s, name)
	if err != nil {
		return types.Provider{}, err
	}
	if p == nil {
		return types.Provider{}, newError(KindInvalidInput, "field \"provider\": provider %q does not exist (see providers/)", name)
	}
	resolved, err := p.WithTenant(v.String("tenant"))
	if err != nil {
		return types.Provider{}, invalidInput(err)
	}
	return resolved, nil
}

// providerEndpoints resolves the preset that oauth2 values name and
// returns its endpoint URLs by field name (the snapshot a credential keeps);
// nil when they name none.
func (b *backend) providerEndpoints(ctx context.Context, s logical.Storage, v types.Values) (map[string]string, error) {
	if v.String("provider") == "" {
		return nil, nil
	}
	p, err := b.resolveProvider(ctx, s, v)
	if err != nil {
		return nil, err
	}
	urls := map[string]string{}
	for field, u := range map[string]string{
		"token_url": p.TokenURL, "auth_url": p.AuthURL, "device_url": p.DeviceURL, "revocation_url": p.RevocationURL,
	} {
		if u != "" {
			urls[field] = u
		}
	}
	return urls, nil
}

// snapshotOf returns the provider endpoints a stored credential sends its
// secrets to: its snapshot, or for a credential stored without one, the
// preset's endpoints as they are now.
func (b *backend) snapshotOf(ctx context.Context, s logical.Storage, c *credential) (map[string]string, error) {
	if c.ProviderEndpoints != nil || c.typ() != types.OAuth2 {
		return c.ProviderEndpoints, nil
	}
	return b.providerEndpoints(ctx, s, c.Fields)
}

// snapshotUsers gives the credentials that name a preset and were stored
// without an endpoint snapshot the preset's endpoints as they are, before a
// write changes them; credentials stored since have a snapshot already.
func (b *backend) snapshotUsers(ctx context.Context, s logical.Storage, provider string) error {
	names, err := s.List(ctx, credsPrefix)
	if err != nil {
		return storageError("listing credentials", err)
	}
	for _, name := range names {
		if err := b.snapshotUser(ctx, s, provider, name); err != nil {
			return err
		}
	}
	return nil
}

func (b *backend) snapshotUser(ctx context.Context, s logical.Storage, provider, name string) error {
	lock := b.lock(name)
	lock.Lock()
	defer lock.Unlock()
	c, err := loadCredential(ctx, s, name)
	if err != nil || c == nil || c.typ() != types.OAuth2 || c.ProviderEndpoints != nil || c.Fields.String("provider") != provider {
		return err
	}
	if c.ProviderEndpoints, err = b.providerEndpoints(ctx, s, c.Fields); err != nil {
		return fmt.Errorf("credential %q: %w", name, err)
	}
	return b.putMeta(ctx, s, c)
}

func (b *backend) pathProvidersList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	custom, err := req.Storage.List(ctx, providersPrefix)
	if err != nil {
		return nil, storageError("listing providers", err)
	}
	names := append(slices.Sorted(maps.Keys(types.BuiltinProviders)), custom...)
	slices.Sort(names)
	return logical.ListResponse(names), nil
}

func (b *backend) pathProviderRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	p, err := b.lookupProvider(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, newError(KindNotFound, "provider %q does not exist", name)
	}
	return &logical.Response{Data: map[string]any{
		"name": p.Name, "auth_url": p.AuthURL, "token_url": p.TokenURL, "device_url": p.DeviceURL,
		"revocation_url": p.RevocationURL, "scopes": nonNil(p.Scopes), "pkce": p.PKCE,
		"auth_style": p.AuthStyle, "built_in": p.BuiltIn,
	}}, nil
}

func (b *backend) pathProviderWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName(name); err != nil {
		return nil, invalidInput(err)
	}
	if _, ok := types.BuiltinProviders[name]; ok {
		return nil, newError(KindInvalidInput, "provider %q is built in and cannot be changed; write a preset under another name", name)
	}
	p, err := b.lookupProvider(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	existed := p != nil
	if p == nil {
		p = &types.Provider{Name: name, PKCE: true, AuthStyle: "auto"}
	}
	before := *p
	for field, dst := range map[string]*string{
		"auth_url": &p.AuthURL, "token_url": &p.TokenURL, "device_url": &p.DeviceURL,
		"revocation_url": &p.RevocationURL, "auth_style": &p.AuthStyle,
	} {
		if v, ok := d.GetOk(field); ok {
			*dst = v.(string)
		}
	}
	if v, ok := d.GetOk("scopes"); ok {
		p.Scopes = v.([]string)
	}
	if v, ok := d.GetOk("pkce"); ok {
		p.PKCE = v.(bool)
	}
	if err := p.Validate(); err != nil {
		return nil, invalidInput(err)
	}
	moved := before.TokenURL != p.TokenURL || before.AuthURL != p.AuthURL || before.DeviceURL != p.DeviceURL || before.RevocationURL != p.RevocationURL
	if existed && moved {
		// Credentials keep the endpoints they were written with: a preset
		// change must not send their secrets elsewhere.
		if err := b.snapshotUsers(ctx, req.Storage, name); err != nil {
			return nil, err
		}
	}
	entry, err := logical.StorageEntryJSON(providerKey(name), p)
	if err != nil {
		return nil, err
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, storageError("writing provider", err)
	}
	b.purgeCache() // credentials naming the preset may now resolve differently
	return b.pathProviderRead(ctx, req, d)
}

func (b *backend) pathProviderDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if _, ok := types.BuiltinProviders[name]; ok {
		return nil, newError(KindInvalidInput, "provider %q is built in and cannot be deleted", name)
	}
	if err := validateName(name); err != nil {
		return nil, invalidInput(err)
	}
	if err := req.Storage.Delete(ctx, providerKey(name)); err != nil {
		return nil, storageError("deleting provider", err)
	}
	b.purgeCache()
	return nil, nil
}
