package nebula

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

func TestStaticTokens(t *testing.T) {
	for _, tc := range []struct {
		name   string
		input  map[string]any
		expect map[string]any
	}{
		{"api key in header", map[string]any{"type": "api_key", "api_key": "k1"},
			map[string]any{"access_token": "k1", "token_type": "api_key", "header_name": "X-API-Key", "header_value": "k1", "expires_at": nil}},
		{"api key custom header", validCreds["api_key"],
			map[string]any{"access_token": secretKeyValue, "header_name": "X-Custom-Key", "header_value": secretKeyValue}},
		{"api key in query", map[string]any{"type": "api_key", "api_key": "k2", "placement": "query"},
			map[string]any{"access_token": "k2", "header_name": "", "header_value": "", "query_param": "api_key"}},
		{"basic auth", validCreds["basic_auth"],
			map[string]any{"access_token": secretPassword, "token_type": "Basic", "header_name": "Authorization",
				"header_value": "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:"+secretPassword))}},
		{"bearer", validCreds["bearer"],
			map[string]any{"access_token": secretBearer, "token_type": "Bearer", "header_value": "Bearer " + secretBearer,
				"expires_at": "2027-01-01T00:00:00Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestBackend(t)
			e.mustRequest(t, logical.CreateOperation, "creds/c", tc.input)
			resp := e.mustRequest(t, logical.ReadOperation, "token/c", nil)
			for k, v := range tc.expect {
				require.Equal(t, v, resp.Data[k], k)
			}
			require.Equal(t, 1, resp.Data["version"])
		})
	}
}

func TestBearerTokenTTL(t *testing.T) {
	e := newTestBackend(t)
	expires := e.clock.Now().Add(time.Hour)
	e.mustRequest(t, logical.CreateOperation, "creds/b", map[string]any{"type": "bearer", "token": "t", "expires_at": expires.Format(time.RFC3339)})
	resp := e.mustRequest(t, logical.ReadOperation, "token/b", nil)
	require.EqualValues(t, 3600, resp.Data["ttl"])
	require.EqualValues(t, 3600, resp.Data["rotation_period"])

	e.clock.Advance(2 * time.Hour)
	_, err := e.request(t, logical.ReadOperation, "token/b", nil)
	requireKind(t, err, KindExpired, "b")
}

func TestTokenWriteTakesCallerContext(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	resp := e.mustRequest(t, logical.UpdateOperation, "token/k", map[string]any{"execution_id": "ex-1", "workflow_id": "wf", "user_id": "u"})
	require.Equal(t, secretKeyValue, resp.Data["access_token"])

	_, err := e.request(t, logical.UpdateOperation, "token/k", map[string]any{"execution_id": string(make([]byte, 300))})
	requireKind(t, err, KindInvalidInput, "execution_id")
}

func TestTokenErrors(t *testing.T) {
	e := newTestBackend(t)
	_, err := e.request(t, logical.ReadOperation, "token/missing", nil)
	requireKind(t, err, KindNotFound, "missing")
	_, err = e.request(t, logical.ReadOperation, "token/bad$name", nil)
	requireKind(t, err, KindInvalidInput)

	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	_, err = e.request(t, logical.UpdateOperation, "refresh/k", nil)
	requireKind(t, err, KindRefreshNotSupported, "api_key")

	e.mustRequest(t, logical.CreateOperation, "creds/user", map[string]any{
		"type": "oauth2", "grant_type": "authorization_code", "client_id": "c", "token_url": "https://auth.example.com/token"})
	_, err = e.request(t, logical.ReadOperation, "token/user", nil)
	requireKind(t, err, KindInteractionRequired, "flows/start")
}

func TestCachedReadTouchesNoStorage(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	e.mustRequest(t, logical.ReadOperation, "token/k", nil) // fills the cache
	gets, puts := e.storage.gets.Load(), e.storage.puts.Load()

	for range 100 {
		e.mustRequest(t, logical.ReadOperation, "token/k", nil)
	}
	require.Equal(t, gets, e.storage.gets.Load(), "cached reads do no storage reads")
	require.Equal(t, puts, e.storage.puts.Load(), "cached reads do no storage writes")
	require.EqualValues(t, 100, e.b.stats.cacheHits.Load())
}

func TestCacheIsDroppedOnChange(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	require.Equal(t, secretKeyValue, e.mustRequest(t, logical.ReadOperation, "token/k", nil).Data["access_token"])

	e.mustRequest(t, logical.UpdateOperation, "creds/k", map[string]any{"api_key": "second"})
	require.Equal(t, "second", e.mustRequest(t, logical.ReadOperation, "token/k", nil).Data["access_token"], "update drops the entry")

	// A change written by another node arrives as Invalidate.
	e.mustRequest(t, logical.ReadOperation, "token/k", nil)
	require.NoError(t, e.storage.Delete(t.Context(), credKey("k")))
	e.b.invalidate(t.Context(), credKey("k"))
	_, err := e.request(t, logical.ReadOperation, "token/k", nil)
	requireKind(t, err, KindNotFound)
}

func TestCacheClearPaths(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/a", validCreds["api_key"])
	e.mustRequest(t, logical.CreateOperation, "creds/b", validCreds["basic_auth"])
	for _, name := range []string{"a", "b"} {
		e.mustRequest(t, logical.ReadOperation, "token/"+name, nil)
	}
	require.Equal(t, 2, e.b.cache.Len())
	e.mustRequest(t, logical.DeleteOperation, "cache/a", nil)
	require.Equal(t, []string{"b"}, e.b.cache.Keys())
	e.mustRequest(t, logical.DeleteOperation, "cache", nil)
	require.Zero(t, e.b.cache.Len())
}

func TestCacheLifetimeAndBounds(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"cache_ttl": "30s", "cache_max_size": 2})
	for _, name := range []string{"a", "b", "c"} {
		e.mustRequest(t, logical.CreateOperation, "creds/"+name, validCreds["api_key"])
		e.mustRequest(t, logical.ReadOperation, "token/"+name, nil)
	}
	require.Equal(t, []string{"b", "c"}, e.b.cache.Keys(), "LRU keeps max_size entries")

	gets := e.storage.gets.Load()
	e.mustRequest(t, logical.ReadOperation, "token/c", nil)
	require.Equal(t, gets, e.storage.gets.Load())
	e.clock.Advance(31 * time.Second)
	e.mustRequest(t, logical.ReadOperation, "token/c", nil)
	require.Greater(t, e.storage.gets.Load(), gets, "an entry past cache_ttl is reloaded")

	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"cache_enabled": false})
	gets = e.storage.gets.Load()
	e.mustRequest(t, logical.ReadOperation, "token/c", nil)
	require.Greater(t, e.storage.gets.Load(), gets, "with the cache off every read loads")
}

func TestProviders(t *testing.T) {
	e := newTestBackend(t)
	list := e.mustRequest(t, logical.ListOperation, "providers/", nil)
	require.Equal(t, []string{"github", "gitlab", "google", "google-service-account", "microsoft", "slack"}, list.Data["keys"])

	_, err := e.request(t, logical.UpdateOperation, "providers/google", map[string]any{"token_url": "https://x"})
	requireKind(t, err, KindInvalidInput, "built in")

	_, err = e.request(t, logical.CreateOperation, "providers/corp", map[string]any{"auth_url": "https://sso.corp.example/auth"})
	requireKind(t, err, KindInvalidInput, "token_url")

	e.mustRequest(t, logical.CreateOperation, "providers/corp", map[string]any{"token_url": "https://sso.corp.example/token", "scopes": "api"})
	read := e.mustRequest(t, logical.ReadOperation, "providers/corp", nil)
	require.Equal(t, []string{"api"}, read.Data["scopes"])
	require.Equal(t, false, read.Data["built_in"])

	e.mustRequest(t, logical.CreateOperation, "creds/c", map[string]any{"type": "oauth2", "provider": "corp", "client_id": "c", "client_secret": "s"})
	e.mustRequest(t, logical.DeleteOperation, "providers/corp", nil)
	_, err = e.request(t, logical.ReadOperation, "providers/corp", nil)
	requireKind(t, err, KindNotFound)

	ms, err := e.b.resolveProvider(t.Context(), e.storage, map[string]any{"provider": "microsoft", "tenant": "contoso.onmicrosoft.com"})
	require.NoError(t, err)
	require.Equal(t, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token", ms.TokenURL)
}

func TestPlainHTTPTokenURLNeedsConfig(t *testing.T) {
	e := newTestBackend(t)
	input := map[string]any{"type": "oauth2", "client_id": "c", "client_secret": "s", "token_url": "http://127.0.0.1:9/token"}
	_, err := e.request(t, logical.CreateOperation, "creds/o", input)
	requireKind(t, err, KindInvalidInput, "token_url", "insecure_http_hosts")

	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1"})
	e.mustRequest(t, logical.CreateOperation, "creds/o", input)
}
