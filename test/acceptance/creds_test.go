package acceptance

import (
	"slices"
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

// typeCase is one credential type's create and update input.
type typeCase struct {
	name string
	// create is the input besides type (secret fields included).
	create map[string]any
	// secrets are the secret values; no creds/ answer may show them.
	secrets []string
	// shown are non-secret fields a read must show after create.
	shown map[string]string
	// update changes a non-secret field.
	update map[string]any
	// updated are the fields a read must show after update.
	updated map[string]string
}

var typeCases = []typeCase{
	{
		name:    "api_key",
		create:  map[string]any{"type": "api_key", "api_key": "ak-SECRET-3f9c1e", "param_name": "X-Custom-Key"},
		secrets: []string{"ak-SECRET-3f9c1e"},
		shown:   map[string]string{"param_name": "X-Custom-Key", "placement": "header"},
		update:  map[string]any{"param_name": "X-Other-Key"},
		updated: map[string]string{"param_name": "X-Other-Key"},
	},
	{
		name:    "basic_auth",
		create:  map[string]any{"type": "basic_auth", "username": "alice", "password": "pw-SECRET-77aa01"},
		secrets: []string{"pw-SECRET-77aa01"},
		shown:   map[string]string{"username": "alice"},
		update:  map[string]any{"username": "bob"},
		updated: map[string]string{"username": "bob"},
	},
	{
		name:    "bearer",
		create:  map[string]any{"type": "bearer", "token": "bt-SECRET-c0ffee", "expires_at": "2030-01-02T03:04:05Z"},
		secrets: []string{"bt-SECRET-c0ffee"},
		shown:   map[string]string{"expires_at": "2030-01-02T03:04:05Z", "status": "active"},
		update:  map[string]any{"expires_at": "2031-06-07T08:09:10Z"},
		updated: map[string]string{"expires_at": "2031-06-07T08:09:10Z"},
	},
	{
		name: "oauth2_client_credentials",
		create: map[string]any{
			"type": "oauth2", "grant_type": "client_credentials", "client_id": "client-1",
			"client_secret": "cs-SECRET-5eed42", "token_url": "https://auth.example.com/oauth/token",
			"scopes": []string{"read", "write"},
		},
		secrets: []string{"cs-SECRET-5eed42"},
		shown: map[string]string{
			"grant_type": "client_credentials", "client_id": "client-1",
			"token_url": "https://auth.example.com/oauth/token", "scopes": "read,write",
		},
		update:  map[string]any{"scopes": []string{"read"}, "audience": "https://api.example.com"},
		updated: map[string]string{"scopes": "read", "audience": "https://api.example.com"},
	},
	{
		name: "oauth2_google",
		create: map[string]any{
			"type": "oauth2", "provider": "google", "client_id": "google-client",
			"client_secret": "gs-SECRET-900d1e",
		},
		secrets: []string{"gs-SECRET-900d1e"},
		shown:   map[string]string{"provider": "google", "client_id": "google-client", "grant_type": "client_credentials"},
		update:  map[string]any{"client_id": "google-client-2"},
		updated: map[string]string{"client_id": "google-client-2"},
	},
}

// TestCredentialLifecycle creates, reads, lists, updates and deletes a
// credential of every type, through the HTTP API and the CLI, and checks
// that no answer shows a secret value.
func TestCredentialLifecycle(t *testing.T) {
	v := harness.SharedDev(t)
	forEachDriver(t, v, func(t *testing.T, d driver) {
		for _, tc := range typeCases {
			t.Run(tc.name, func(t *testing.T) {
				testLifecycle(t, v, d, tc)
			})
		}
	})
}

func testLifecycle(t *testing.T, v *harness.Vault, d driver, tc typeCase) {
	name := newName(strings.ReplaceAll(tc.name, "_", "-"))
	path := credPath(v, name)
	typ := tc.create["type"].(string)

	created := mustWrite(t, d, path, tc.create)
	requireNoSecrets(t, "create answer", created.Raw, tc.secrets)
	id := field(created.Data, "id")
	if id == "" {
		t.Fatalf("create answered no id: %s", created.Raw)
	}
	requireFields(t, created.Data, map[string]string{"name": name, "type": typ, "version": "1"})

	read := mustRead(t, d, path)
	requireNoSecrets(t, "read answer", read.Raw, tc.secrets)
	requireFields(t, read.Data, map[string]string{"id": id, "name": name, "type": typ, "version": "1"})
	requireFields(t, read.Data, tc.shown)
	for _, key := range []string{"created_at", "updated_at", "status"} {
		if field(read.Data, key) == "" {
			t.Errorf("read shows no %s: %s", key, read.Raw)
		}
	}

	names, err := d.List(t, v.Mount+"/creds/")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if !slices.Contains(names, name) {
		t.Errorf("list %v does not hold %q", names, name)
	}

	update := map[string]any{
		"description": "updated by " + t.Name(),
		"tags":        []string{"team-a", "env:test"},
		"metadata":    map[string]string{"owner": "alice", "cost_center": "42"},
	}
	for k, val := range tc.update {
		update[k] = val
	}
	updatedResp := mustWrite(t, d, path, update)
	requireNoSecrets(t, "update answer", updatedResp.Raw, tc.secrets)
	read = mustRead(t, d, path)
	requireNoSecrets(t, "read answer after update", read.Raw, tc.secrets)
	requireFields(t, read.Data, map[string]string{
		"id": id, "version": "1", "type": typ,
		"description": "updated by " + t.Name(),
		"tags":        "team-a,env:test",
		"metadata":    "cost_center=42,owner=alice",
	})
	requireFields(t, read.Data, tc.updated)

	if err := d.Delete(t, path); err != nil {
		t.Fatalf("delete: %v", err)
	}
	_, err = d.Read(t, path)
	requireError(t, err, 404, "not_found")
	names, err = d.List(t, v.Mount+"/creds/")
	if err != nil {
		t.Fatalf("list after delete: %v", err)
	}
	if slices.Contains(names, name) {
		t.Errorf("list %v still holds %q after delete", names, name)
	}
}

func mustWrite(tb testing.TB, d driver, path string, data map[string]any) *response {
	tb.Helper()
	resp, err := d.Write(tb, path, data)
	if err != nil {
		tb.Fatalf("%s write %s: %v", d.Name(), path, err)
	}
	return resp
}

func mustRead(tb testing.TB, d driver, path string) *response {
	tb.Helper()
	resp, err := d.Read(tb, path)
	if err != nil {
		tb.Fatalf("%s read %s: %v", d.Name(), path, err)
	}
	return resp
}
