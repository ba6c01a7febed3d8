package nebula

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Config is the engine's mount-wide configuration (path "config").
type Config struct {
	// CacheEnabled turns the in-memory token cache on.
	CacheEnabled bool `json:"cache_enabled"`
	// CacheTTL bounds how long a token stays cached.
	CacheTTL time.Duration `json:"cache_ttl"`
	// CacheMaxSize bounds the number of cached tokens (LRU).
	CacheMaxSize int `json:"cache_max_size"`
	// RefreshAhead is how long before expiry a token counts as expiring: it
	// leaves the cache then and background refresh renews it.
	RefreshAhead time.Duration `json:"refresh_ahead"`
	// AllowedHosts lists the upstream hosts credentials may call; empty
	// means any https host. A host listed by name or address (not by a "*."
	// pattern) may resolve to any address, loopback and private included.
	AllowedHosts []string `json:"allowed_hosts"`
	// InsecureHTTPHosts lists hosts that may be called over plain http
	// (development and tests on loopback). Entries are host or host:port.
	// Like AllowedHosts' entries they may resolve to any address.
	InsecureHTTPHosts []string `json:"insecure_http_hosts"`
	// AllowPrivateNetworks lets hosts that are not listed resolve to private
	// addresses (RFC 1918, 100.64.0.0/10, fc00::/7), for identity providers
	// inside the network. Loopback, link-local and unspecified addresses stay
	// refused unless the host is listed.
	AllowPrivateNetworks bool `json:"allow_private_networks"`
	// AuditEnabled turns the engine's audit trail on.
	AuditEnabled bool `json:"audit_enabled"`
	// AuditRetention is how long audit events are kept.
	AuditRetention time.Duration `json:"audit_retention"`
	// AuditSync writes audit events on the request path instead of in
	// batches (slower reads, nothing lost in a crash).
	AuditSync bool `json:"audit_sync"`
	// FlowTTL is how long an interactive flow stays open.
	FlowTTL time.Duration `json:"flow_ttl"`
	// DefaultTokenLifetime is assumed for tokens whose issuer omits
	// expires_in.
	DefaultTokenLifetime time.Duration `json:"default_token_lifetime"`
	// UpstreamConcurrencyPerHost bounds the requests in flight to one
	// upstream host (upstream.HostLimiter).
	UpstreamConcurrencyPerHost int `json:"upstream_concurrency_per_host"`
	// NotifyURL receives signed notification events (notify.go); empty
	// means none. Its secret is stored apart, seal-wrapped.
	NotifyURL       string `json:"notify_url,omitempty"`
	NotifySecretSet bool   `json:"notify_secret_set,omitempty"`
	// RefreshConcurrency is the number of workers that refresh due tokens
	// (background refresh-ahead and refresh) at once.
	RefreshConcurrency int `json:"refresh_concurrency"`
	// StandbyTokenReads is what a node that cannot write storage (OpenBao
	// standby serving reads, Vault performance standby) does with a token
	// read: StandbyTokenReadsForward (default; "" in configs stored before
	// the field existed) or StandbyTokenReadsLocal.
	StandbyTokenReads string `json:"standby_token_reads,omitempty"`
}

// Values of standby_token_reads.
const (
	// StandbyTokenReadsForward answers token reads on a standby with
	// logical.ErrReadOnly, so the host forwards them to the active node,
	// which serves them and records them in the engine's audit trail.
	StandbyTokenReadsForward = "forward"
	// StandbyTokenReadsLocal serves token reads on a standby from its
	// cache or storage (a token that needs a refresh is still forwarded).
	// The engine's audit trail does not get those reads: a standby cannot
	// store events. The host's audit device logs them.
	StandbyTokenReadsLocal = "local"
)

// standbyTokenReads is StandbyTokenReads with the default applied.
func (c *Config) standbyTokenReads() string {
	if c.StandbyTokenReads == "" {
		return StandbyTokenReadsForward
	}
	return c.StandbyTokenReads
}

// Limits of configuration values.
const (
	maxCacheSize          = 10_000_000
	maxHostEntries        = 256
	maxRefreshConcurrency = 256
)

// Defaults of the background refresh (see the README's "Background refresh
// at scale"): refresh_ahead covers one periodic run, the time to work
// through what is due and the jitter that spreads tokens expiring together.
const (
	defaultRefreshAhead       = 5 * time.Minute
	defaultRefreshConcurrency = 16
)

// DefaultConfig is the configuration of a mount that never wrote config.
func DefaultConfig() *Config {
	return &Config{
		CacheEnabled:         true,
		CacheTTL:             5 * time.Minute,
		CacheMaxSize:         10_000,
		RefreshAhead:         defaultRefreshAhead,
		AuditEnabled:         true,
		AuditRetention:       30 * 24 * time.Hour,
		FlowTTL:              10 * time.Minute,
		DefaultTokenLifetime: time.Hour,

		UpstreamConcurrencyPerHost: 8,
		RefreshConcurrency:         defaultRefreshConcurrency,
		StandbyTokenReads:          StandbyTokenReadsForward,
	}
}

var hostRe = regexp.MustCompile(`^(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)

// validate checks every field and reports all problems at once.
func (c *Config) validate() error {
	var errs []error
	nonNegative := func(name string, d time.Duration) {
		if d < 0 {
			errs = append(errs, fmt.Errorf("field %q must not be negative", name))
		}
	}
	nonNegative("cache_ttl", c.CacheTTL)
	nonNegative("refresh_ahead", c.RefreshAhead)
	nonNegative("audit_retention", c.AuditRetention)
	if c.CacheMaxSize < 1 || c.CacheMaxSize > maxCacheSize {
		errs = append(errs, fmt.Errorf("field %q must be between 1 and %d", "cache_max_size", maxCacheSize))
	}
	if c.FlowTTL < time.Minute || c.FlowTTL > 24*time.Hour {
		errs = append(errs, fmt.Errorf("field %q must be between 1m and 24h", "flow_ttl"))
	}
	if c.DefaultTokenLifetime < time.Second || c.DefaultTokenLifetime > 30*24*time.Hour {
		errs = append(errs, fmt.Errorf("field %q must be between 1s and 720h", "default_token_lifetime"))
	}
	if c.UpstreamConcurrencyPerHost < 1 || c.UpstreamConcurrencyPerHost > 1024 {
		errs = append(errs, fmt.Errorf("field %q must be between 1 and 1024", "upstream_concurrency_per_host"))
	}
	if c.RefreshConcurrency < 1 || c.RefreshConcurrency > maxRefreshConcurrency {
		errs = append(errs, fmt.Errorf("field %q must be between 1 and %d", "refresh_concurrency", maxRefreshConcurrency))
	}
	if v := c.standbyTokenReads(); v != StandbyTokenReadsForward && v != StandbyTokenReadsLocal {
		errs = append(errs, fmt.Errorf("field %q must be %s or %s", "standby_token_reads", StandbyTokenReadsForward, StandbyTokenReadsLocal))
	}
	errs = append(errs, validateHosts("allowed_hosts", c.AllowedHosts, false))
	errs = append(errs, validateHosts("insecure_http_hosts", c.InsecureHTTPHosts, true))
	return errors.Join(errs...)
}

func validateHosts(field string, hosts []string, withPort bool) error {
	if len(hosts) > maxHostEntries {
		return fmt.Errorf("field %q has %d entries; at most %d are allowed", field, len(hosts), maxHostEntries)
	}
	var errs []error
	for _, h := range hosts {
		host := h
		if withPort {
			if hp, port, err := net.SplitHostPort(h); err == nil && port != "" {
				host = hp
			}
		}
		if net.ParseIP(host) == nil && !hostRe.MatchString(host) {
			errs = append(errs, fmt.Errorf("field %q: %q is not a host name or IP address", field, h))
		}
	}
	return errors.Join(errs...)
}

// HostAllowed reports whether an upstream URL's scheme and host may be
// called: https to an allowed host (any, when AllowedHosts is empty), or
// http to a host listed in InsecureHTTPHosts.
func (c *Config) HostAllowed(scheme, hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	switch scheme {
	case "http":
		return matchHost(c.InsecureHTTPHosts, hostport) || matchHost(c.InsecureHTTPHosts, host)
	case "https":
		return len(c.AllowedHosts) == 0 || matchHost(c.AllowedHosts, host)
	}
	return false
}

// HostListed reports whether a host (host or host:port) is listed by name
// or address in AllowedHosts or InsecureHTTPHosts; "*." patterns do not
// count. Listed hosts are exempt from the address check of outbound
// connections (upstream.Policy).
func (c *Config) HostListed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	exact := func(entries []string, name string) bool {
		for _, e := range entries {
			if !strings.HasPrefix(e, "*.") && sameHost(e, name) {
				return true
			}
		}
		return false
	}
	return exact(c.AllowedHosts, host) || exact(c.InsecureHTTPHosts, host) || exact(c.InsecureHTTPHosts, hostport)
}

// sameHost compares host names case-insensitively and IP addresses by
// value (so "::1" matches "0:0::1").
func sameHost(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	ipA, ipB := net.ParseIP(a), net.ParseIP(b)
	return ipA != nil && ipB != nil && ipA.Equal(ipB)
}

// PrivateNetworksAllowed reports AllowPrivateNetworks (upstream.Policy).
func (c *Config) PrivateNetworksAllowed() bool { return c.AllowPrivateNetworks }

func matchHost(patterns []string, host string) bool {
	host = strings.ToLower(host)
	for _, p := range patterns {
		p = strings.ToLower(p)
		if p == host || (strings.HasPrefix(p, "*.") && strings.HasSuffix(host, p[1:])) {
			return true
		}
	}
	return false
}

// getConfig returns the mount's configuration, from memory when loaded.
// The returned value must not be modified.
func (b *backend) getConfig(ctx context.Context, s logical.Storage) (*Config, error) {
	b.configMu.RLock()
	c := b.config
	b.configMu.RUnlock()
	if c != nil {
		return c, nil
	}

	b.configMu.Lock()
	defer b.configMu.Unlock()
	if b.config != nil {
		return b.config, nil
	}
	entry, err := s.Get(ctx, configKey)
	if err != nil {
		return nil, storageError("reading config", err)
	}
	c = DefaultConfig()
	if entry != nil {
		if err := entry.DecodeJSON(c); err != nil {
			return nil, storageError("decoding config", err)
		}
	}
	b.config = c
	b.applyConfig(c)
	return c, nil
}

// putConfig stores the configuration and makes it current.
func (b *backend) putConfig(ctx context.Context, s logical.Storage, c *Config) error {
	entry, err := logical.StorageEntryJSON(configKey, c)
	if err != nil {
		return storageError("encoding config", err)
	}
	b.configMu.Lock()
	defer b.configMu.Unlock()
	if err := s.Put(ctx, entry); err != nil {
		return storageError("writing config", err)
	}
	b.config = c
	b.applyConfig(c)
	return nil
}

// applyConfig brings in-memory state in line with a new configuration:
// cached tokens were computed under the old one.
func (b *backend) applyConfig(c *Config) {
	b.cache.Resize(c.CacheMaxSize)
	b.purgeCache()
}
