package nebula

import (
	"context"
	"net/http"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

func TestConfigDefaults(t *testing.T) {
	e := newTestBackend(t)
	resp := e.mustRequest(t, logical.ReadOperation, "config", nil)
	require.Equal(t, true, resp.Data["cache_enabled"])
	require.Equal(t, true, resp.Data["audit_enabled"])
	require.EqualValues(t, 300, resp.Data["cache_ttl"])
	require.EqualValues(t, 10000, resp.Data["cache_max_size"])
	require.EqualValues(t, 3600, resp.Data["default_token_lifetime"])
	require.Equal(t, []string{}, resp.Data["allowed_hosts"])
	require.Equal(t, false, resp.Data["allow_private_networks"])
}

func TestConfigAllowPrivateNetworks(t *testing.T) {
	e := newTestBackend(t)
	e.b.upstreamBackoff = 0
	srv := newCountingTLSServer(t, e, http.HandlerFunc(tokenHandler))
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"allow_private_networks": true})
	e.b.invalidate(context.Background(), configKey)
	resp := e.mustRequest(t, logical.ReadOperation, "config", nil)
	require.Equal(t, true, resp.Data["allow_private_networks"])

	// Private networks do not include loopback.
	e.mustRequest(t, logical.CreateOperation, "creds/lo", map[string]any{
		"type": "oauth2", "client_id": "c", "client_secret": "s", "token_url": srv.URL + "/token"})
	_, err := e.request(t, logical.ReadOperation, "token/lo", nil)
	requireKind(t, err, KindRefreshFailed, "loopback")
	require.Zero(t, srv.accepted.Load())

	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"allow_private_networks": false})
	require.Equal(t, false, e.mustRequest(t, logical.ReadOperation, "config", nil).Data["allow_private_networks"])
}

func TestConfigHostListed(t *testing.T) {
	c := &Config{
		AllowedHosts:      []string{"idp.example.com", "*.corp.example", "10.0.0.5", "::1"},
		InsecureHTTPHosts: []string{"127.0.0.1", "localhost:8080"},
	}
	for hostport, want := range map[string]bool{
		"idp.example.com:443":  true,
		"IDP.example.com":      true,
		"a.corp.example:443":   false, // a pattern allows the name, not any address
		"10.0.0.5:443":         true,
		"[::1]:443":            true,
		"[0:0::1]:8443":        true,
		"127.0.0.1:9000":       true,
		"localhost:8080":       true,
		"localhost:8081":       false,
		"other.example.com:80": false,
		"169.254.169.254:80":   false,
	} {
		require.Equal(t, want, c.HostListed(hostport), hostport)
	}
	require.True(t, c.HostAllowed("https", "a.corp.example:443"), "patterns still allow the host")
	require.False(t, c.PrivateNetworksAllowed())
}

func TestConfigWriteChangesOnlyNamedFields(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{
		"cache_ttl":           "90s",
		"insecure_http_hosts": "127.0.0.1,localhost:8080",
	})
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"cache_max_size": 50})

	// A fresh backend on the same storage reads it back.
	e.b.invalidate(context.Background(), configKey)
	resp := e.mustRequest(t, logical.ReadOperation, "config", nil)
	require.EqualValues(t, 90, resp.Data["cache_ttl"])
	require.EqualValues(t, 50, resp.Data["cache_max_size"])
	require.Equal(t, []string{"127.0.0.1", "localhost:8080"}, resp.Data["insecure_http_hosts"])
	require.Equal(t, true, resp.Data["cache_enabled"])
}

func TestConfigRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    map[string]any
		mention []string
	}{
		{"negative ttl", map[string]any{"cache_ttl": -5}, []string{"cache_ttl"}},
		{"zero cache size", map[string]any{"cache_max_size": 0}, []string{"cache_max_size"}},
		{"huge cache size", map[string]any{"cache_max_size": 1 << 30}, []string{"cache_max_size"}},
		{"flow ttl too short", map[string]any{"flow_ttl": "5s"}, []string{"flow_ttl"}},
		{"bad host", map[string]any{"allowed_hosts": "exa mple.com"}, []string{"allowed_hosts"}},
		{"several at once", map[string]any{"cache_max_size": 0, "allowed_hosts": "bad host"}, []string{"cache_max_size", "allowed_hosts"}},
		{"wrong type", map[string]any{"cache_enabled": "maybe"}, []string{"cache_enabled"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestBackend(t)
			_, err := e.request(t, logical.UpdateOperation, "config", tc.data)
			requireKind(t, err, KindInvalidInput, tc.mention...)
			require.Empty(t, e.storage.snapshot(t), "a rejected write stores nothing")
		})
	}
}

func TestConfigStorageFailure(t *testing.T) {
	e := newTestBackend(t)
	e.storage.failPutsAfter(0)
	_, err := e.request(t, logical.UpdateOperation, "config", map[string]any{"cache_ttl": 10})
	requireKind(t, err, KindStorage)
	e.storage.failPutsAfter(-1)
	resp := e.mustRequest(t, logical.ReadOperation, "config", nil)
	require.EqualValues(t, 300, resp.Data["cache_ttl"], "a failed write must not change the served config")

	e.b.invalidate(context.Background(), configKey)
	e.storage.failGet.Store(true)
	_, err = e.request(t, logical.ReadOperation, "config", nil)
	requireKind(t, err, KindStorage)
}

func TestHostAllowed(t *testing.T) {
	c := DefaultConfig()
	c.InsecureHTTPHosts = []string{"127.0.0.1"}
	require.True(t, c.HostAllowed("https", "oauth2.googleapis.com"))
	require.True(t, c.HostAllowed("http", "127.0.0.1:9000"))
	require.False(t, c.HostAllowed("http", "example.com"))
	require.False(t, c.HostAllowed("ftp", "127.0.0.1"))

	c.AllowedHosts = []string{"*.example.com", "login.microsoftonline.com"}
	require.True(t, c.HostAllowed("https", "auth.example.com"))
	require.True(t, c.HostAllowed("https", "LOGIN.microsoftonline.com:443"))
	require.False(t, c.HostAllowed("https", "example.com.evil.org"))
	require.False(t, c.HostAllowed("https", "oauth2.googleapis.com"))
}
