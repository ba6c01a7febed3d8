package acceptance

import (
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

// TestBadInput: client mistakes answer 400 with the code prefix of
// DESIGN.md's error table, name the offending field, never echo a secret,
// and leave nothing behind.
func TestBadInput(t *testing.T) {
	v := harness.SharedDev(t)
	cases := []struct {
		name string
		// path is relative to the mount; "creds/" paths get a fresh name
		// appended unless they end in a name already.
		path     string
		data     map[string]any
		prefix   string
		mentions []string
		secrets  []string
	}{
		{
			name: "unknown type", path: "creds/",
			data:   map[string]any{"type": "carrier_pigeon", "api_key": "x"},
			prefix: "unsupported_type", mentions: []string{"carrier_pigeon"},
		},
		{
			name: "no type", path: "creds/",
			data:   map[string]any{"api_key": "bi-SECRET-0"},
			prefix: "invalid_input", mentions: []string{"type"}, secrets: []string{"bi-SECRET-0"},
		},
		{
			name: "api_key without api_key", path: "creds/",
			data:   map[string]any{"type": "api_key", "param_name": "X-Key"},
			prefix: "invalid_input", mentions: []string{"api_key"},
		},
		{
			name: "basic_auth without password", path: "creds/",
			data:   map[string]any{"type": "basic_auth", "username": "alice"},
			prefix: "invalid_input", mentions: []string{"password"},
		},
		{
			name: "oauth2 client_credentials without client_secret", path: "creds/",
			data:   map[string]any{"type": "oauth2", "client_id": "c", "token_url": "https://auth.example.com/token"},
			prefix: "invalid_input", mentions: []string{"client_secret"},
		},
		{
			name: "oauth2 without token_url or provider", path: "creds/",
			data:   map[string]any{"type": "oauth2", "client_id": "c", "client_secret": "bi-SECRET-1"},
			prefix: "invalid_input", mentions: []string{"token_url"}, secrets: []string{"bi-SECRET-1"},
		},
		{
			name: "config cache_max_size not a number", path: "config",
			data:   map[string]any{"cache_max_size": "abc"},
			prefix: "invalid_input", mentions: []string{"cache_max_size"},
		},
		{
			name: "tags as an object", path: "creds/",
			data:   map[string]any{"type": "api_key", "api_key": "bi-SECRET-2", "tags": map[string]any{"a": map[string]any{"b": 1}}},
			prefix: "invalid_input", mentions: []string{"tags"}, secrets: []string{"bi-SECRET-2"},
		},
		{
			name: "secret field as an object", path: "creds/",
			data:   map[string]any{"type": "api_key", "api_key": map[string]any{"value": "bi-SECRET-9"}},
			prefix: "invalid_input", mentions: []string{"api_key"}, secrets: []string{"bi-SECRET-9"},
		},
		{
			name: "expires_at not a time", path: "creds/",
			data:   map[string]any{"type": "bearer", "token": "bi-SECRET-3", "expires_at": "next tuesday"},
			prefix: "invalid_input", mentions: []string{"expires_at"}, secrets: []string{"bi-SECRET-3"},
		},
		{
			name: "placement not allowed", path: "creds/",
			data:   map[string]any{"type": "api_key", "api_key": "bi-SECRET-4", "placement": "body"},
			prefix: "invalid_input", mentions: []string{"placement"}, secrets: []string{"bi-SECRET-4"},
		},
		{
			name: "secret with a line break", path: "creds/",
			data:   map[string]any{"type": "api_key", "api_key": "bi-SECRET-5\nX"},
			prefix: "invalid_input", mentions: []string{"api_key"}, secrets: []string{"bi-SECRET-5"},
		},
		{
			name: "invalid name", path: "creds/bad$name",
			data:   map[string]any{"type": "api_key", "api_key": "bi-SECRET-6"},
			prefix: "invalid_input", mentions: []string{"name"}, secrets: []string{"bi-SECRET-6"},
		},
		{
			name: "description of 5000 bytes", path: "creds/",
			data:   map[string]any{"type": "api_key", "api_key": "bi-SECRET-7", "description": strings.Repeat("d", 5000)},
			prefix: "invalid_input", mentions: []string{"description"}, secrets: []string{"bi-SECRET-7"},
		},
		{
			name: "unknown oauth2 provider", path: "creds/",
			data:   map[string]any{"type": "oauth2", "provider": "no-such-provider", "client_id": "c", "client_secret": "bi-SECRET-8"},
			prefix: "invalid_input", mentions: []string{"provider"}, secrets: []string{"bi-SECRET-8"},
		},
	}
	forEachDriver(t, v, func(t *testing.T, d driver) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				path := v.Mount + "/" + tc.path
				if strings.HasSuffix(path, "/") {
					path += newName("bad")
				}
				_, err := d.Write(t, path, tc.data)
				requireError(t, err, 400, tc.prefix)
				requireErrorMentions(t, err, tc.mentions...)
				if ve, ok := err.(*vaultError); ok {
					requireNoSecrets(t, "error", ve.Raw, tc.secrets)
				}
				if strings.HasPrefix(tc.path, "creds/") && !strings.Contains(path, "$") {
					_, err := d.Read(t, path)
					requireError(t, err, 404, "not_found")
				}
			})
		}
	})
}

// TestUpdateCannotChangeType: a write naming another type to an existing
// credential is invalid_input and changes nothing.
func TestUpdateCannotChangeType(t *testing.T) {
	v := harness.SharedDev(t)
	forEachDriver(t, v, func(t *testing.T, d driver) {
		path := credPath(v, newName("typechange"))
		id := field(mustWrite(t, d, path, map[string]any{"type": "api_key", "api_key": "tc-SECRET-1"}).Data, "id")
		_, err := d.Write(t, path, map[string]any{"type": "bearer", "token": "tc-SECRET-2"})
		requireError(t, err, 400, "invalid_input")
		requireErrorMentions(t, err, "type")
		requireFields(t, mustRead(t, d, path).Data, map[string]string{"id": id, "type": "api_key", "version": "1"})
	})
}
