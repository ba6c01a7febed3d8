package acceptance

import (
	"testing"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

// TestIdempotentCreate: the same idempotency_key with the same input
// answers the same id and changes nothing; with other input (or another
// name) it is a 409 duplicate; after a delete the key can create afresh.
func TestIdempotentCreate(t *testing.T) {
	v := harness.SharedDev(t)
	forEachDriver(t, v, func(t *testing.T, d driver) {
		name := newName("idem")
		path := credPath(v, name)
		key := "idem-key-" + name
		input := map[string]any{
			"type": "api_key", "api_key": "idem-SECRET-1", "description": "first",
			"idempotency_key": key,
		}

		first := mustWrite(t, d, path, input)
		id := field(first.Data, "id")
		requireFields(t, first.Data, map[string]string{"version": "1"})

		again := mustWrite(t, d, path, input)
		requireFields(t, again.Data, map[string]string{"id": id, "version": "1"})
		requireFields(t, mustRead(t, d, path).Data, map[string]string{"id": id, "version": "1", "description": "first"})

		conflicts := []struct {
			name string
			path string
			data map[string]any
		}{
			{"other description", path, with(input, "description", "second")},
			{"other secret", path, with(input, "api_key", "idem-SECRET-2")},
			{"other name", credPath(v, newName("idem-other")), input},
		}
		for _, c := range conflicts {
			t.Run(c.name, func(t *testing.T) {
				_, err := d.Write(t, c.path, c.data)
				requireError(t, err, 409, "duplicate")
			})
		}
		requireFields(t, mustRead(t, d, path).Data, map[string]string{"id": id, "version": "1", "description": "first"})

		if err := d.Delete(t, path); err != nil {
			t.Fatalf("delete: %v", err)
		}
		recreated := mustWrite(t, d, path, input)
		if newID := field(recreated.Data, "id"); newID == "" || newID == id {
			t.Errorf("re-create after delete answered id %q; want a new id (old %q)", newID, id)
		}
		requireFields(t, recreated.Data, map[string]string{"version": "1"})
	})
}

// secretCase is a type with two values of its secret field.
type secretCase struct {
	name   string
	create map[string]any
	field  string
	other  string
}

var secretCases = []secretCase{
	{"api_key", map[string]any{"type": "api_key", "api_key": "rot-SECRET-a1"}, "api_key", "rot-SECRET-a2"},
	{"basic_auth", map[string]any{"type": "basic_auth", "username": "u", "password": "rot-SECRET-b1"}, "password", "rot-SECRET-b2"},
	{"bearer", map[string]any{"type": "bearer", "token": "rot-SECRET-c1"}, "token", "rot-SECRET-c2"},
	{"oauth2", map[string]any{
		"type": "oauth2", "client_id": "c", "client_secret": "rot-SECRET-d1",
		"token_url": "https://auth.example.com/token",
	}, "client_secret", "rot-SECRET-d2"},
}

// TestSecretUpdateVersions: writing a secret field with its stored value
// changes nothing; another value makes a new version with a new id.
func TestSecretUpdateVersions(t *testing.T) {
	v := harness.SharedDev(t)
	forEachDriver(t, v, func(t *testing.T, d driver) {
		for _, tc := range secretCases {
			t.Run(tc.name, func(t *testing.T) {
				path := credPath(v, newName("ver-"+tc.name))
				created := mustWrite(t, d, path, tc.create)
				id := field(created.Data, "id")
				before := mustRead(t, d, path)

				// The whole definition again, as Terraform writes it.
				same := mustWrite(t, d, path, tc.create)
				requireFields(t, same.Data, map[string]string{"id": id, "version": "1"})
				after := mustRead(t, d, path)
				requireFields(t, after.Data, map[string]string{"id": id, "version": "1"})
				if b, a := field(before.Data, "updated_at"), field(after.Data, "updated_at"); b != a {
					t.Logf("note: rewriting the same definition moved updated_at from %s to %s", b, a)
				}

				changed := mustWrite(t, d, path, map[string]any{tc.field: tc.other})
				requireNoSecrets(t, "update answer", changed.Raw, []string{tc.other, tc.create[tc.field].(string)})
				newID := field(changed.Data, "id")
				if newID == "" || newID == id {
					t.Errorf("a new secret value answered id %q; want a new id (old %q)", newID, id)
				}
				requireFields(t, changed.Data, map[string]string{"version": "2"})
				requireFields(t, mustRead(t, d, path).Data, map[string]string{"id": newID, "version": "2"})

				// The new value again: nothing changes.
				requireFields(t, mustWrite(t, d, path, map[string]any{tc.field: tc.other}).Data,
					map[string]string{"id": newID, "version": "2"})
			})
		}
	})
}

// with returns a copy of m with key set to value.
func with(m map[string]any, key string, value any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	out[key] = value
	return out
}
