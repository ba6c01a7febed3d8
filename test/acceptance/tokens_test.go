package acceptance

import (
	"encoding/base64"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/test/harness"
	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// tokenCase is a static credential and the token/<name> answer it gives.
type tokenCase struct {
	name   string
	create map[string]any
	// want are the fields of the token answer ("" = absent or empty).
	want map[string]string
	// expires says whether the answer carries ttl and rotation_period.
	expires bool
}

var staticTokenCases = []tokenCase{
	{
		name:   "api_key header",
		create: map[string]any{"type": "api_key", "api_key": "tk-SECRET-a1", "param_name": "X-Service-Key"},
		want: map[string]string{
			"access_token": "tk-SECRET-a1", "token_type": "api_key", "header_name": "X-Service-Key",
			"header_value": "tk-SECRET-a1", "query_param": "", "expires_at": "", "ttl": "", "rotation_period": "",
		},
	},
	{
		name:   "api_key header default name",
		create: map[string]any{"type": "api_key", "api_key": "tk-SECRET-a2"},
		want:   map[string]string{"access_token": "tk-SECRET-a2", "header_name": "X-API-Key", "header_value": "tk-SECRET-a2"},
	},
	{
		name:   "api_key query",
		create: map[string]any{"type": "api_key", "api_key": "tk-SECRET-a3", "placement": "query", "param_name": "key"},
		want: map[string]string{
			"access_token": "tk-SECRET-a3", "token_type": "api_key", "query_param": "key",
			"header_name": "", "header_value": "", "expires_at": "",
		},
	},
	{
		name:   "basic_auth",
		create: map[string]any{"type": "basic_auth", "username": "alice", "password": "tk-SECRET-b1"},
		want: map[string]string{
			"access_token": "tk-SECRET-b1", "token_type": "Basic", "header_name": "Authorization",
			"header_value": "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:tk-SECRET-b1")),
			"expires_at":   "",
		},
	},
	{
		name:   "bearer without expiry",
		create: map[string]any{"type": "bearer", "token": "tk-SECRET-c1"},
		want: map[string]string{
			"access_token": "tk-SECRET-c1", "token_type": "Bearer", "header_name": "Authorization",
			"header_value": "Bearer tk-SECRET-c1", "expires_at": "", "ttl": "", "rotation_period": "",
		},
	},
	{
		name:   "bearer with expiry",
		create: map[string]any{"type": "bearer", "token": "tk-SECRET-c2", "expires_at": "2040-01-02T03:04:05Z"},
		want: map[string]string{
			"access_token": "tk-SECRET-c2", "token_type": "Bearer", "header_name": "Authorization",
			"header_value": "Bearer tk-SECRET-c2", "expires_at": "2040-01-02T03:04:05Z",
		},
		expires: true,
	},
}

// TestStaticTokens reads token/<name> of every static type (and of a
// generated secret) through the HTTP API and `vault read -format=json`.
func TestStaticTokens(t *testing.T) {
	v := harness.SharedDev(t)
	forEachDriver(t, v, func(t *testing.T, d driver) {
		for _, tc := range staticTokenCases {
			t.Run(tc.name, func(t *testing.T) {
				name := newName("tok-static")
				mustWrite(t, d, credPath(v, name), tc.create)
				tok := mustRead(t, d, v.Mount+"/token/"+name)
				requireFields(t, tok.Data, tc.want)
				requireFields(t, tok.Data, map[string]string{"version": "1"})
				if tc.expires {
					requireTokenTimes(t, tok.Data, 0, 0)
				}
			})
		}
		t.Run("generated", func(t *testing.T) {
			name := newName("tok-gen")
			mustWrite(t, d, credPath(v, name), map[string]any{"type": "generated", "length": 40, "charset": "hex"})
			tok := mustRead(t, d, v.Mount+"/token/"+name)
			value := field(tok.Data, "access_token")
			if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(value) {
				t.Errorf("generated access_token %q: want 40 hex characters", value)
			}
			requireFields(t, tok.Data, map[string]string{"header_value": value, "version": "1", "expires_at": ""})
			// The value is stable between reads.
			requireFields(t, mustRead(t, d, v.Mount+"/token/"+name).Data, map[string]string{"access_token": value})
		})
	})
}

// TestOAuth2Token: an oauth2 client_credentials credential against the
// loopback OAuth2 server. The first read obtains a token upstream; further
// reads, a cache clear and reads after it are served without another
// upstream request; refresh/<name> obtains a new one.
func TestOAuth2Token(t *testing.T) {
	v := harness.SharedDev(t)
	mount := ownMount(t, v, "nebula-tokens")
	srv := oauthserver.Start(t)
	cliWrite(t, v, mount+"/config", "insecure_http_hosts=127.0.0.1", "refresh_ahead=1m")

	name := newName("tok-oauth")
	id, secret := srv.ClientCredentialsClient()
	cliWrite(t, v, mount+"/creds/"+name, "type=oauth2", "grant_type=client_credentials",
		"client_id="+id, "client_secret="+secret, "token_url="+srv.TokenURL(), "auth_style=header", "scopes=read")
	if n := srv.TokenRequests(); n != 0 {
		t.Fatalf("creating the credential made %d token requests; want none", n)
	}

	path := mount + "/token/" + name
	first := cliRead(t, v, path)
	requireNoSecrets(t, "token answer", first.Raw, []string{secret})
	token := field(first.Data, "access_token")
	if token == "" {
		t.Fatalf("no access_token: %s", first.Raw)
	}
	requireFields(t, first.Data, map[string]string{
		"token_type": "Bearer", "header_name": "Authorization", "header_value": "Bearer " + token,
		"version": "1",
	})
	// The server issues hour-long tokens (its expires_in may round down a
	// second); with refresh_ahead 1m (set above) a new token is served a
	// minute before the hour ends.
	requireTokenTimes(t, first.Data, time.Hour-time.Minute, time.Hour)
	wantRequests(t, srv, 1, "after the first read")

	requireFields(t, cliRead(t, v, path).Data, map[string]string{"access_token": token})
	wantRequests(t, srv, 1, "after a second read (cached)")

	refreshed := cliWrite(t, v, mount+"/refresh/"+name)
	newToken := field(refreshed.Data, "access_token")
	if newToken == "" || newToken == token {
		t.Fatalf("refresh answered access_token %q; want a new token (old %q)", newToken, token)
	}
	requireFields(t, refreshed.Data, map[string]string{"header_value": "Bearer " + newToken, "version": "1"})
	wantRequests(t, srv, 2, "after refresh")
	requireFields(t, cliRead(t, v, path).Data, map[string]string{"access_token": newToken})

	// Clearing the cache serves the stored token: still valid, so no new
	// upstream request.
	if _, err := v.CLI(t, "delete", mount+"/cache/"+name); err != nil {
		t.Fatalf("vault delete cache: %v", err)
	}
	requireFields(t, cliRead(t, v, path).Data, map[string]string{"access_token": newToken})
	if _, err := v.CLI(t, "delete", mount+"/cache"); err != nil {
		t.Fatalf("vault delete cache (all): %v", err)
	}
	requireFields(t, cliRead(t, v, path).Data, map[string]string{"access_token": newToken})
	wantRequests(t, srv, 2, "after reads following cache clears")
}

// requireTokenTimes checks expires_at, ttl and rotation_period of an
// expiring token. When wantTTL is not zero, ttl must be within 30s below
// it; when wantPeriod is not zero, rotation_period must be within 2s below
// it.
func requireTokenTimes(tb testing.TB, data map[string]any, wantTTL, wantPeriod time.Duration) {
	tb.Helper()
	expires, err := time.Parse(time.RFC3339, field(data, "expires_at"))
	if err != nil {
		tb.Errorf("expires_at %q: %v", field(data, "expires_at"), err)
		return
	}
	ttl, err1 := strconv.ParseInt(field(data, "ttl"), 10, 64)
	period, err2 := strconv.ParseInt(field(data, "rotation_period"), 10, 64)
	if err1 != nil || err2 != nil {
		tb.Errorf("ttl %q, rotation_period %q: want whole seconds", field(data, "ttl"), field(data, "rotation_period"))
		return
	}
	left := time.Until(expires)
	if ttl < 1 || time.Duration(ttl)*time.Second > left+2*time.Second {
		tb.Errorf("ttl = %d s; want between 1 s and the %s left until expires_at", ttl, left.Round(time.Second))
	}
	if period < ttl {
		tb.Errorf("rotation_period = %d s; want at least ttl (%d s)", period, ttl)
	}
	if wantTTL > 0 {
		if got := time.Duration(ttl) * time.Second; got > wantTTL || got < wantTTL-30*time.Second {
			tb.Errorf("ttl = %s; want about %s", got, wantTTL)
		}
	}
	if wantPeriod > 0 {
		if got := time.Duration(period) * time.Second; got > wantPeriod || got < wantPeriod-2*time.Second {
			tb.Errorf("rotation_period = %s; want about %s", got, wantPeriod)
		}
	}
}

func wantRequests(tb testing.TB, srv *oauthserver.Server, want int64, when string) {
	tb.Helper()
	if got := srv.TokenRequests(); got != want {
		tb.Errorf("%s: the OAuth2 server had %d token requests; want %d", when, got, want)
	}
}

// ownMount mounts the plugin at a path of the test's own (named after
// base) and unmounts it when the test ends, for tests that change config.
func ownMount(tb testing.TB, v *harness.Vault, base string) string {
	tb.Helper()
	mount := newName(base)
	if _, err := v.CLI(tb, "secrets", "enable", "-path="+mount, "-plugin-version="+v.Plugin.Version, v.Plugin.Name); err != nil {
		tb.Fatalf("mounting the plugin at %s/: %v", mount, err)
	}
	tb.Cleanup(func() {
		if _, err := v.CLI(tb, "secrets", "disable", mount); err != nil {
			tb.Errorf("unmounting %s/: %v", mount, err)
		}
	})
	return mount
}

// cliRead runs `vault read -format=json path k=v...` with the root token.
func cliRead(tb testing.TB, v *harness.Vault, path string, kv ...string) *response {
	tb.Helper()
	out, err := v.CLI(tb, append([]string{"read", "-format=json", path}, kv...)...)
	if err != nil {
		tb.Fatalf("vault read %s: %v", path, err)
	}
	resp, _ := decodeResponse(tb, []byte(out))
	return resp
}

// cliWrite runs `vault write -format=json path k=v...` (with -f when there
// are no k=v arguments) with the root token.
func cliWrite(tb testing.TB, v *harness.Vault, path string, kv ...string) *response {
	tb.Helper()
	args := []string{"write", "-format=json"}
	if len(kv) == 0 {
		args = append(args, "-f")
	}
	out, err := v.CLI(tb, append(append(args, path), kv...)...)
	if err != nil {
		tb.Fatalf("vault write %s: %v", path, err)
	}
	resp, _ := decodeResponse(tb, []byte(out))
	return resp
}
