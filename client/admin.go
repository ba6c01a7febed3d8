package client

import (
	"context"
	"encoding/json"
	"time"
)

// Config is the engine's configuration.
type Config struct {
	// CacheEnabled turns the token cache on.
	CacheEnabled bool
	// CacheTTL is the longest time a token stays cached.
	CacheTTL time.Duration
	// CacheMaxSize is the most tokens cached (LRU).
	CacheMaxSize int
	// RefreshAhead is how long before expiry a token is refreshed.
	RefreshAhead time.Duration
	// AllowedHosts are the upstream hosts credentials may call over https;
	// empty means any. A leading "*." matches subdomains.
	AllowedHosts []string
	// InsecureHTTPHosts are hosts (or host:port) that may be called over
	// plain http, for development on loopback.
	InsecureHTTPHosts []string
	// AuditEnabled turns the engine's audit trail on.
	AuditEnabled bool
	// AuditRetention is how long audit events are kept.
	AuditRetention time.Duration
	// AuditSync writes audit events on the request path instead of in
	// batches.
	AuditSync bool
	// FlowTTL is how long an interactive flow stays open (1m to 24h).
	FlowTTL time.Duration
	// DefaultTokenLifetime is assumed for tokens whose issuer omits
	// expires_in.
	DefaultTokenLifetime time.Duration
	// AllowPrivateNetworks lets hosts that are not listed resolve to
	// private addresses (in-house identity providers).
	AllowPrivateNetworks bool
	// RefreshConcurrency is the number of workers refreshing due tokens.
	RefreshConcurrency int
	// UpstreamConcurrencyPerHost bounds the requests in flight to one
	// upstream host.
	UpstreamConcurrencyPerHost int
	// NotifyURL receives the engine's signed notification events; empty
	// turns them off.
	NotifyURL string
	// NotifySecret is the notifications' HMAC key. Write-only: SetConfig
	// sends it when set; Config never answers it (see NotifySecretSet).
	NotifySecret Secret
	// NotifySecretSet reports whether a notification secret is stored.
	NotifySecretSet bool
	// StandbyTokenReads is forward (token reads on a standby go to the
	// active node) or local (served by the standby, without engine audit
	// events).
	StandbyTokenReads string
}

// configWire is the engine's config response (durations in seconds).
type configWire struct {
	CacheEnabled         bool     `json:"cache_enabled"`
	CacheTTL             int64    `json:"cache_ttl"`
	CacheMaxSize         int      `json:"cache_max_size"`
	RefreshAhead         int64    `json:"refresh_ahead"`
	AllowedHosts         []string `json:"allowed_hosts"`
	InsecureHTTPHosts    []string `json:"insecure_http_hosts"`
	AuditEnabled         bool     `json:"audit_enabled"`
	AuditRetention       int64    `json:"audit_retention"`
	AuditSync            bool     `json:"audit_sync"`
	FlowTTL              int64    `json:"flow_ttl"`
	DefaultTokenLifetime int64    `json:"default_token_lifetime"`
	AllowPrivateNetworks bool     `json:"allow_private_networks"`
	RefreshConcurrency   int      `json:"refresh_concurrency"`
	UpstreamPerHost      int      `json:"upstream_concurrency_per_host"`
	NotifyURL            string   `json:"notify_url"`
	NotifySecretSet      bool     `json:"notify_secret_set"`
	StandbyTokenReads    string   `json:"standby_token_reads"`
}

func (w *configWire) config() *Config {
	return &Config{
		CacheEnabled: w.CacheEnabled, CacheTTL: seconds(w.CacheTTL), CacheMaxSize: w.CacheMaxSize,
		RefreshAhead: seconds(w.RefreshAhead), AllowedHosts: w.AllowedHosts, InsecureHTTPHosts: w.InsecureHTTPHosts,
		AuditEnabled: w.AuditEnabled, AuditRetention: seconds(w.AuditRetention), AuditSync: w.AuditSync,
		FlowTTL: seconds(w.FlowTTL), DefaultTokenLifetime: seconds(w.DefaultTokenLifetime),
		AllowPrivateNetworks: w.AllowPrivateNetworks, RefreshConcurrency: w.RefreshConcurrency,
		UpstreamConcurrencyPerHost: w.UpstreamPerHost, NotifyURL: w.NotifyURL, NotifySecretSet: w.NotifySecretSet,
		StandbyTokenReads: w.StandbyTokenReads,
	}
}

// Config returns the engine's configuration.
func (c *Client) Config(ctx context.Context) (*Config, error) {
	var w configWire
	if _, err := c.read(ctx, c.mount+"/config", nil, &w); err != nil {
		return nil, err
	}
	return w.config(), nil
}

// SetConfig writes every field of cfg and answers the stored
// configuration. Start from Config to change some fields only:
//
//	cfg, err := c.Config(ctx)
//	...
//	cfg.InsecureHTTPHosts = []string{"127.0.0.1"}
//	_, err = c.SetConfig(ctx, *cfg)
func (c *Client) SetConfig(ctx context.Context, cfg Config) (*Config, error) {
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	body := map[string]any{
		"cache_enabled":          cfg.CacheEnabled,
		"cache_ttl":              int64(cfg.CacheTTL / time.Second),
		"cache_max_size":         cfg.CacheMaxSize,
		"refresh_ahead":          int64(cfg.RefreshAhead / time.Second),
		"allowed_hosts":          nonNil(cfg.AllowedHosts),
		"insecure_http_hosts":    nonNil(cfg.InsecureHTTPHosts),
		"audit_enabled":          cfg.AuditEnabled,
		"audit_retention":        int64(cfg.AuditRetention / time.Second),
		"audit_sync":             cfg.AuditSync,
		"flow_ttl":               int64(cfg.FlowTTL / time.Second),
		"default_token_lifetime": int64(cfg.DefaultTokenLifetime / time.Second),
		"allow_private_networks": cfg.AllowPrivateNetworks,
		"notify_url":             cfg.NotifyURL,
	}
	// Zero means "leave as stored" for the limits (the engine refuses 0).
	if cfg.RefreshConcurrency > 0 {
		body["refresh_concurrency"] = cfg.RefreshConcurrency
	}
	if cfg.UpstreamConcurrencyPerHost > 0 {
		body["upstream_concurrency_per_host"] = cfg.UpstreamConcurrencyPerHost
	}
	if cfg.StandbyTokenReads != "" {
		body["standby_token_reads"] = cfg.StandbyTokenReads
	}
	if cfg.NotifySecret.Value() != "" {
		body["notify_secret"] = cfg.NotifySecret.Value()
	}
	var w configWire
	if _, err := c.write(ctx, replayable, c.mount+"/config", body, &w); err != nil {
		return nil, err
	}
	return w.config(), nil
}

// TypeSummary names a credential type.
type TypeSummary struct {
	// Name is the type's name, e.g. api_key.
	Name string
	// Description says what the type is for.
	Description string
}

// Types lists the credential types the engine supports.
func (c *Client) Types(ctx context.Context) ([]TypeSummary, error) {
	var w struct {
		Keys    []string `json:"keys"`
		KeyInfo map[string]struct {
			Description string `json:"description"`
		} `json:"key_info"`
	}
	if err := c.list(ctx, c.mount+"/types/", &w); err != nil {
		return nil, err
	}
	out := make([]TypeSummary, 0, len(w.Keys))
	for _, k := range w.Keys {
		out = append(out, TypeSummary{Name: k, Description: w.KeyInfo[k].Description})
	}
	return out, nil
}

// TypeInfo is a credential type's schema.
type TypeInfo struct {
	// Name is the type's name.
	Name string
	// Description says what the type is for.
	Description string
	// Fields are the type's fields.
	Fields []TypeField
	// SecretFields names the fields that are secret.
	SecretFields []string
	// Grants are the OAuth2 grants (oauth2 only).
	Grants []string
	// SupportsRefresh reports whether tokens can be refreshed.
	SupportsRefresh bool
	// SupportsRotation reports whether the type can be rotated.
	SupportsRotation bool
}

// TypeField is one field of a credential type.
type TypeField struct {
	// Name is the field's name in requests.
	Name string
	// Kind is string, string_list, int, bool or time.
	Kind string
	// Description says what the field is.
	Description string
	// Secret fields are never returned by Get.
	Secret bool
	// Required fields must be given on create.
	Required bool
	// Default is the default value as text ("32", "header"); empty when
	// there is none.
	Default string
	// Allowed lists the allowed values; empty means any.
	Allowed []string
}

// typeFieldWire is a field of the engine's types/<type> response.
type typeFieldWire struct {
	Name        string          `json:"name"`
	Kind        string          `json:"kind"`
	Description string          `json:"description"`
	Secret      bool            `json:"secret"`
	Required    bool            `json:"required"`
	Default     json.RawMessage `json:"default"`
	Allowed     []string        `json:"allowed"`
}

func (w *typeFieldWire) field() TypeField {
	f := TypeField{Name: w.Name, Kind: w.Kind, Description: w.Description, Secret: w.Secret, Required: w.Required, Allowed: w.Allowed}
	var s string
	switch {
	case json.Unmarshal(w.Default, &s) == nil:
		f.Default = s
	case len(w.Default) > 0 && string(w.Default) != "null":
		f.Default = string(w.Default)
	}
	return f
}

// Type returns a credential type's schema.
func (c *Client) Type(ctx context.Context, name string) (*TypeInfo, error) {
	path, err := c.pathOf("types", name)
	if err != nil {
		return nil, err
	}
	var w struct {
		Name             string          `json:"name"`
		Description      string          `json:"description"`
		Fields           []typeFieldWire `json:"fields"`
		SecretFields     []string        `json:"secret_fields"`
		Grants           []string        `json:"grants"`
		SupportsRefresh  bool            `json:"supports_refresh"`
		SupportsRotation bool            `json:"supports_rotation"`
	}
	if _, err := c.read(ctx, path, nil, &w); err != nil {
		return nil, err
	}
	fields := make([]TypeField, 0, len(w.Fields))
	for i := range w.Fields {
		fields = append(fields, w.Fields[i].field())
	}
	return &TypeInfo{
		Name: w.Name, Description: w.Description, Fields: fields, SecretFields: w.SecretFields,
		Grants: w.Grants, SupportsRefresh: w.SupportsRefresh, SupportsRotation: w.SupportsRotation,
	}, nil
}

// Provider is an OAuth2 provider preset.
type Provider struct {
	// Name is the preset's name.
	Name string `json:"name"`
	// AuthURL is the authorization endpoint.
	AuthURL string `json:"auth_url"`
	// TokenURL is the token endpoint (required).
	TokenURL string `json:"token_url"`
	// DeviceURL is the device authorization endpoint (RFC 8628).
	DeviceURL string `json:"device_url"`
	// RevocationURL is the token revocation endpoint (RFC 7009).
	RevocationURL string `json:"revocation_url"`
	// Scopes are the default scopes.
	Scopes []string `json:"scopes"`
	// PKCE reports whether the provider supports PKCE S256.
	PKCE bool `json:"pkce"`
	// AuthStyle is auto, header or body.
	AuthStyle string `json:"auth_style"`
	// BuiltIn marks the read-only built-in presets (read only; ignored by
	// SetProvider).
	BuiltIn bool `json:"built_in"`
}

// Providers lists the provider presets: the built-in ones and the custom
// ones written to the mount.
func (c *Client) Providers(ctx context.Context) ([]string, error) {
	var keys listKeys
	if err := c.list(ctx, c.mount+"/providers/", &keys); err != nil {
		return nil, err
	}
	return keys.Keys, nil
}

// Provider returns a provider preset.
func (c *Client) Provider(ctx context.Context, name string) (*Provider, error) {
	path, err := c.pathOf("providers", name)
	if err != nil {
		return nil, err
	}
	var p Provider
	if _, err := c.read(ctx, path, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// SetProvider writes a custom provider preset named p.Name, every field of
// it (set PKCE explicitly: false turns it off; an empty AuthStyle is
// auto), and answers the stored preset. Built-in presets cannot be
// changed.
func (c *Client) SetProvider(ctx context.Context, p Provider) (*Provider, error) {
	path, err := c.pathOf("providers", p.Name)
	if err != nil {
		return nil, err
	}
	scopes := p.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	style := p.AuthStyle
	if style == "" {
		style = "auto"
	}
	body := map[string]any{
		"auth_url": p.AuthURL, "token_url": p.TokenURL, "device_url": p.DeviceURL,
		"revocation_url": p.RevocationURL, "scopes": scopes, "pkce": p.PKCE, "auth_style": style,
	}
	var out Provider
	if _, err := c.write(ctx, replayable, path, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteProvider deletes a custom provider preset.
func (c *Client) DeleteProvider(ctx context.Context, name string) error {
	path, err := c.pathOf("providers", name)
	if err != nil {
		return err
	}
	return c.delete(ctx, path)
}
