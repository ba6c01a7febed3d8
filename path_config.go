package nebula

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathConfig(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "config",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "nebula",
			OperationSuffix: "configuration",
		},
		Fields: map[string]*framework.FieldSchema{
			"cache_enabled":          {Type: framework.TypeBool, Description: "Cache tokens in memory.", Default: true},
			"cache_ttl":              {Type: framework.TypeDurationSecond, Description: "Longest time a token stays cached.", Default: "5m"},
			"cache_max_size":         {Type: framework.TypeInt, Description: "Most tokens kept in the cache (LRU).", Default: 10000},
			"refresh_ahead":          {Type: framework.TypeDurationSecond, Description: "How long before expiry a token is refreshed. Background refresh starts up to min(10% of the token's lifetime, refresh_ahead) earlier still, spread per credential, so tokens that expire together are not refreshed in the same minute.", Default: "5m"},
			"allowed_hosts":          {Type: framework.TypeCommaStringSlice, Description: "Upstream hosts credentials may call (https); empty means any public host. A leading '*.' matches subdomains. A host listed by name or address may resolve to loopback, link-local and private addresses."},
			"insecure_http_hosts":    {Type: framework.TypeCommaStringSlice, Description: "Hosts (or host:port) that may be called over plain http, for development on loopback. Listed hosts may resolve to any address."},
			"allow_private_networks": {Type: framework.TypeBool, Description: "Let hosts that are not listed resolve to private addresses (RFC 1918, 100.64.0.0/10, fc00::/7), for identity providers inside the network. Loopback, link-local and unspecified addresses stay refused unless listed.", Default: false},
			"audit_enabled":          {Type: framework.TypeBool, Description: "Keep the engine's audit trail.", Default: true},
			"audit_retention":        {Type: framework.TypeDurationSecond, Description: "How long audit events are kept.", Default: "720h"},
			"audit_sync":             {Type: framework.TypeBool, Description: "Write audit events on the request path instead of in batches."},
			"flow_ttl":               {Type: framework.TypeDurationSecond, Description: "How long an interactive OAuth flow stays open.", Default: "10m"},
			"default_token_lifetime": {Type: framework.TypeDurationSecond, Description: "Lifetime assumed for tokens whose issuer omits expires_in.", Default: "1h"},
			"notify_url":             {Type: framework.TypeString, Description: "URL (https, or a host in insecure_http_hosts) that receives signed JSON events: needs_reconnect, refresh_failed, recovered, rotation_failed, rotation_due. Empty turns notifications off."},
			"notify_secret":          {Type: framework.TypeString, Description: "HMAC key (at least 16 characters) of notification signatures, as for rotation webhooks; required with a new notify_url. Write-only: stored seal-wrapped, never returned."},

			// Background refresh at scale.
			"upstream_concurrency_per_host": {Type: framework.TypeInt, Description: "Most requests in flight to one upstream host (host:port) at once, from token reads, refreshes, rotations, webhooks, flows and mirrors together (1 to 1024).", Default: 8},
			"refresh_concurrency":           {Type: framework.TypeInt, Description: "Number of workers refreshing due tokens at once, in background refresh-ahead and refresh (1 to 256).", Default: 16},
			"standby_token_reads":           {Type: framework.TypeString, Description: "Token reads on a node that cannot write storage (OpenBao standby, Vault performance standby): forward (default; the active node serves and audits them) or local (served on the standby; the engine's audit trail does not get them, the host's audit device does).", Default: StandbyTokenReadsForward, AllowedValues: []any{StandbyTokenReadsForward, StandbyTokenReadsLocal}},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation:   &framework.PathOperation{Callback: b.pathConfigRead, Responses: configResponses},
			logical.UpdateOperation: &framework.PathOperation{Callback: b.pathConfigWrite, Responses: configResponses},
		},
		HelpSynopsis:    "Configure the token cache, upstream security and the audit trail.",
		HelpDescription: "Reads or changes the engine's configuration. A write changes only the fields it names; the others keep their values.",
	}
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	c, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: c.responseData()}, nil
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	current, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	c := *current
	if v, ok := d.GetOk("cache_enabled"); ok {
		c.CacheEnabled = v.(bool)
	}
	if v, ok := d.GetOk("cache_max_size"); ok {
		c.CacheMaxSize = v.(int)
	}
	if v, ok := d.GetOk("allowed_hosts"); ok {
		c.AllowedHosts = v.([]string)
	}
	if v, ok := d.GetOk("insecure_http_hosts"); ok {
		c.InsecureHTTPHosts = v.([]string)
	}
	if v, ok := d.GetOk("allow_private_networks"); ok {
		c.AllowPrivateNetworks = v.(bool)
	}
	if v, ok := d.GetOk("upstream_concurrency_per_host"); ok {
		c.UpstreamConcurrencyPerHost = v.(int)
	}
	if v, ok := d.GetOk("refresh_concurrency"); ok {
		c.RefreshConcurrency = v.(int)
	}
	if v, ok := d.GetOk("audit_enabled"); ok {
		c.AuditEnabled = v.(bool)
	}
	if v, ok := d.GetOk("audit_sync"); ok {
		c.AuditSync = v.(bool)
	}
	if v, ok := d.GetOk("standby_token_reads"); ok {
		c.StandbyTokenReads = v.(string)
	}
	for name, dst := range map[string]*time.Duration{
		"cache_ttl":              &c.CacheTTL,
		"refresh_ahead":          &c.RefreshAhead,
		"audit_retention":        &c.AuditRetention,
		"flow_ttl":               &c.FlowTTL,
		"default_token_lifetime": &c.DefaultTokenLifetime,
	} {
		if v, ok := d.GetOk(name); ok {
			*dst = time.Duration(v.(int)) * time.Second
		}
	}
	if err := c.validate(); err != nil {
		return nil, invalidInput(err)
	}
	if err := b.notifyConfigInput(ctx, req.Storage, current, &c, d); err != nil {
		return nil, err
	}
	if err := b.putConfig(ctx, req.Storage, &c); err != nil {
		return nil, err
	}
	b.audit(ctx, req, auditEvent{Action: actionConfig, Success: true}, nil)
	return &logical.Response{Data: c.responseData()}, nil
}

func (c *Config) responseData() map[string]any {
	return map[string]any{
		"cache_enabled":          c.CacheEnabled,
		"cache_ttl":              int64(c.CacheTTL.Seconds()),
		"cache_max_size":         c.CacheMaxSize,
		"refresh_ahead":          int64(c.RefreshAhead.Seconds()),
		"allowed_hosts":          nonNil(c.AllowedHosts),
		"insecure_http_hosts":    nonNil(c.InsecureHTTPHosts),
		"allow_private_networks": c.AllowPrivateNetworks,
		"audit_enabled":          c.AuditEnabled,
		"audit_retention":        int64(c.AuditRetention.Seconds()),
		"audit_sync":             c.AuditSync,
		"flow_ttl":               int64(c.FlowTTL.Seconds()),
		"default_token_lifetime": int64(c.DefaultTokenLifetime.Seconds()),
		"notify_url":             c.NotifyURL,
		"notify_secret_set":      c.NotifySecretSet,

		"upstream_concurrency_per_host": c.UpstreamConcurrencyPerHost,
		"refresh_concurrency":           c.RefreshConcurrency,
		"standby_token_reads":           c.standbyTokenReads(),
	}
}

// nonNil returns an empty slice for nil, so responses show [] not null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
