package nebula

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

// Secret values used in tests; no response may contain them.
const (
	secretKeyValue    = "sk-live-4f6d1c2e9a"
	secretPassword    = "hunter2-pa55w0rd"
	secretBearer      = "eyJhbGciOi.bearer-value"
	secretClient      = "client-s3cret-xyz"
	secretRefreshTokn = "refresh-t0ken-abc"
)

var secrets = []string{secretKeyValue, secretPassword, secretBearer, secretClient, secretRefreshTokn}

// validCreds is one valid create input per type.
var validCreds = map[string]map[string]any{
	"api_key":    {"type": "api_key", "api_key": secretKeyValue, "param_name": "X-Custom-Key"},
	"basic_auth": {"type": "basic_auth", "username": "alice", "password": secretPassword},
	"bearer":     {"type": "bearer", "token": secretBearer, "expires_at": "2027-01-01T00:00:00Z"},
	"oauth2": {"type": "oauth2", "client_id": "my-client", "client_secret": secretClient,
		"token_url": "https://auth.example.com/token", "scopes": "read,write"},
	"oauth2_refresh": {"type": "oauth2", "grant_type": "refresh_token", "provider": "google",
		"client_id": "cid", "client_secret": secretClient, "refresh_token": secretRefreshTokn},
}

// requireNoSecrets fails when any test secret appears in v's JSON form.
func requireNoSecrets(tb testing.TB, v any) {
	tb.Helper()
	raw, err := json.Marshal(v)
	require.NoError(tb, err)
	for _, s := range secrets {
		require.NotContains(tb, string(raw), s)
	}
}

func TestCredentialCRUD(t *testing.T) {
	for name, input := range validCreds {
		t.Run(name, func(t *testing.T) {
			e := newTestBackend(t)
			path := "creds/" + name

			created := e.mustRequest(t, logical.CreateOperation, path, input)
			requireNoSecrets(t, created.Data)
			require.Equal(t, input["type"], created.Data["type"])
			require.Equal(t, 1, created.Data["version"])
			require.NotEmpty(t, created.Data["id"])

			read := e.mustRequest(t, logical.ReadOperation, path, nil)
			requireNoSecrets(t, read.Data)
			require.Equal(t, created.Data["id"], read.Data["id"])
			require.Equal(t, "active", read.Data["status"])

			list := e.mustRequest(t, logical.ListOperation, "creds/", nil)
			require.Equal(t, []string{name}, list.Data["keys"])

			updated := e.mustRequest(t, logical.UpdateOperation, path, map[string]any{
				"description": "rotated quarterly", "tags": "prod,team-a", "metadata": map[string]any{"owner": "ops"},
			})
			requireNoSecrets(t, updated.Data)
			require.Equal(t, "rotated quarterly", updated.Data["description"])
			require.Equal(t, []string{"prod", "team-a"}, updated.Data["tags"])
			require.Equal(t, map[string]string{"owner": "ops"}, updated.Data["metadata"])
			require.Equal(t, created.Data["id"], updated.Data["id"], "metadata changes keep the version")

			e.mustRequest(t, logical.DeleteOperation, path, nil)
			_, err := e.request(t, logical.ReadOperation, path, nil)
			requireKind(t, err, KindNotFound, name)
			require.Empty(t, e.storage.snapshotWithout(t, saltKey), "delete removes every version")
		})
	}
}

func TestCredentialReadShowsNonSecretFields(t *testing.T) {
	e := newTestBackend(t)
	resp := e.mustRequest(t, logical.CreateOperation, "creds/gh", validCreds["oauth2"])
	require.Equal(t, "my-client", resp.Data["client_id"])
	require.Equal(t, []string{"read", "write"}, resp.Data["scopes"])
	require.Equal(t, "client_credentials", resp.Data["grant_type"], "defaults are applied")
	require.NotContains(t, resp.Data, "client_secret")

	resp = e.mustRequest(t, logical.CreateOperation, "creds/tok", validCreds["bearer"])
	require.Equal(t, "2027-01-01T00:00:00Z", resp.Data["expires_at"])
}

func TestCredentialExpiredStatus(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/b", map[string]any{
		"type": "bearer", "token": secretBearer, "expires_at": e.clock.Now().Add(time2h).Format("2006-01-02T15:04:05Z07:00"),
	})
	require.Equal(t, "active", e.mustRequest(t, logical.ReadOperation, "creds/b", nil).Data["status"])
	e.clock.Advance(3 * time2h)
	require.Equal(t, "expired", e.mustRequest(t, logical.ReadOperation, "creds/b", nil).Data["status"])
}

func TestCredentialUpdateSecrets(t *testing.T) {
	e := newTestBackend(t)
	created := e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])

	same := e.mustRequest(t, logical.UpdateOperation, "creds/k", map[string]any{"type": "api_key", "api_key": secretKeyValue})
	require.Equal(t, created.Data["id"], same.Data["id"], "an equal secret changes nothing")
	require.Equal(t, 1, same.Data["version"])

	changed := e.mustRequest(t, logical.UpdateOperation, "creds/k", map[string]any{"api_key": "sk-new-value"})
	require.NotEqual(t, created.Data["id"], changed.Data["id"], "a new secret makes a new version")
	require.Equal(t, 2, changed.Data["version"])

	keys, err := e.storage.List(t.Context(), secretPrefix+"k/")
	require.NoError(t, err)
	require.Equal(t, []string{changed.Data["id"].(string)}, keys, "the superseded version is destroyed")
}

func TestCredentialUpdateValidatesMergedValues(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/o", validCreds["oauth2"])

	_, err := e.request(t, logical.UpdateOperation, "creds/o", map[string]any{"grant_type": "refresh_token"})
	requireKind(t, err, KindInvalidInput, "refresh_token")

	_, err = e.request(t, logical.UpdateOperation, "creds/o", map[string]any{"type": "api_key"})
	requireKind(t, err, KindInvalidInput, "type")

	_, err = e.request(t, logical.UpdateOperation, "creds/o", map[string]any{"password": "x"})
	requireKind(t, err, KindInvalidInput, "password", "oauth2")

	resp := e.mustRequest(t, logical.ReadOperation, "creds/o", nil)
	require.Equal(t, "client_credentials", resp.Data["grant_type"], "rejected updates change nothing")
}

func TestCredentialIdempotency(t *testing.T) {
	e := newTestBackend(t)
	input := map[string]any{"type": "basic_auth", "username": "bob", "password": secretPassword, "idempotency_key": "run-42"}

	first := e.mustRequest(t, logical.CreateOperation, "creds/db", input)
	before := e.storage.snapshot(t)
	again := e.mustRequest(t, logical.UpdateOperation, "creds/db", input)
	require.Equal(t, first.Data["id"], again.Data["id"])
	require.Equal(t, before, e.storage.snapshot(t), "a replay writes nothing")

	other := map[string]any{"type": "basic_auth", "username": "bob", "password": "different", "idempotency_key": "run-42"}
	_, err := e.request(t, logical.UpdateOperation, "creds/db", other)
	requireKind(t, err, KindDuplicate)
	requireNoSecrets(t, err.Error())

	_, err = e.request(t, logical.CreateOperation, "creds/db2", input)
	requireKind(t, err, KindDuplicate)

	e.mustRequest(t, logical.DeleteOperation, "creds/db", nil)
	recreated := e.mustRequest(t, logical.CreateOperation, "creds/db", input)
	require.NotEqual(t, first.Data["id"], recreated.Data["id"], "after delete the key starts afresh")
}

func TestCredentialBadInput(t *testing.T) {
	long := strings.Repeat("x", 5000)
	for _, tc := range []struct {
		name    string
		path    string
		data    map[string]any
		kind    Kind
		mention []string
	}{
		{"unknown type", "creds/a", map[string]any{"type": "kerberos"}, KindUnsupportedType, []string{"kerberos"}},
		{"missing type", "creds/a", map[string]any{"api_key": "k"}, KindInvalidInput, []string{`"type"`}},
		{"missing required", "creds/a", map[string]any{"type": "basic_auth", "username": "u"}, KindInvalidInput, []string{`"password"`}},
		{"missing several", "creds/a", map[string]any{"type": "oauth2"}, KindInvalidInput, []string{`"client_id"`, `"token_url"`, `"client_secret"`}},
		{"wrong field type", "creds/a", map[string]any{"type": "api_key", "api_key": "k", "tags": map[string]any{"a": 1}}, KindInvalidInput, []string{`"tags"`}},
		{"field of another type", "creds/a", map[string]any{"type": "api_key", "api_key": "k", "username": "u"}, KindInvalidInput, []string{`"username"`}},
		{"not allowed value", "creds/a", map[string]any{"type": "api_key", "api_key": "k", "placement": "cookie"}, KindInvalidInput, []string{`"placement"`, "header"}},
		{"invalid name", "creds/bad$name", map[string]any{"type": "api_key", "api_key": "k"}, KindInvalidInput, []string{"bad$name"}},
		{"name too long", "creds/" + strings.Repeat("n", 200), map[string]any{"type": "api_key", "api_key": "k"}, KindInvalidInput, []string{"at most 128"}},
		{"oversized description", "creds/a", map[string]any{"type": "api_key", "api_key": "k", "description": long}, KindInvalidInput, []string{`"description"`}},
		{"oversized secret", "creds/a", map[string]any{"type": "api_key", "api_key": long + long + long + long}, KindInvalidInput, []string{`"api_key"`}},
		{"too many tags", "creds/a", map[string]any{"type": "api_key", "api_key": "k", "tags": strings.Repeat("t,", 70)}, KindInvalidInput, []string{`"tags"`}},
		{"bad tag", "creds/a", map[string]any{"type": "api_key", "api_key": "k", "tags": "has space"}, KindInvalidInput, []string{`"tags"`}},
		{"bad url", "creds/a", map[string]any{"type": "oauth2", "client_id": "c", "client_secret": "s", "token_url": "ftp://x"}, KindInvalidInput, []string{`"token_url"`}},
		{"unknown provider", "creds/a", map[string]any{"type": "oauth2", "client_id": "c", "client_secret": "s", "provider": "nope"}, KindInvalidInput, []string{`"provider"`}},
		{"bad time", "creds/a", map[string]any{"type": "bearer", "token": "t", "expires_at": "tomorrow"}, KindInvalidInput, []string{`"expires_at"`}},
		{"colon in username", "creds/a", map[string]any{"type": "basic_auth", "username": "a:b", "password": "p"}, KindInvalidInput, []string{`"username"`}},
		{"line break in value", "creds/a", map[string]any{"type": "api_key", "api_key": "k\r\nX-Evil: 1"}, KindInvalidInput, []string{`"api_key"`}},
		{"long idempotency key", "creds/a", map[string]any{"type": "api_key", "api_key": "k", "idempotency_key": long}, KindInvalidInput, []string{"idempotency_key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestBackend(t)
			_, err := e.request(t, logical.CreateOperation, tc.path, tc.data)
			requireKind(t, err, tc.kind, tc.mention...)
			require.Empty(t, e.storage.snapshotWithout(t, saltKey), "rejected input stores nothing")
		})
	}
}

func TestCredentialNotFound(t *testing.T) {
	e := newTestBackend(t)
	_, err := e.request(t, logical.ReadOperation, "creds/missing", nil)
	requireKind(t, err, KindNotFound, "missing")
	// Deleting what does not exist is not an error (Vault convention).
	e.mustRequest(t, logical.DeleteOperation, "creds/missing", nil)
}

func TestCredentialStorageFailuresLeaveNoPartialWrites(t *testing.T) {
	for puts := 0; puts < 4; puts++ {
		t.Run(fmt.Sprintf("create fails after %d puts", puts), func(t *testing.T) {
			e := newTestBackend(t)
			input := map[string]any{"type": "api_key", "api_key": secretKeyValue, "idempotency_key": "k1"}
			before := e.storage.snapshot(t)

			e.storage.failPutsAfter(puts)
			_, err := e.request(t, logical.CreateOperation, "creds/a", input)
			e.storage.failPutsAfter(-1)
			if err == nil {
				return // enough puts were allowed: nothing to check
			}
			requireKind(t, err, KindStorage)
			requireNoSecrets(t, err.Error())
			require.Equal(t, before, e.storage.snapshotWithout(t, saltKey))
		})
		t.Run(fmt.Sprintf("secret update fails after %d puts", puts), func(t *testing.T) {
			e := newTestBackend(t)
			e.mustRequest(t, logical.CreateOperation, "creds/a", validCreds["api_key"])
			before := e.storage.snapshot(t)

			e.storage.failPutsAfter(puts)
			_, err := e.request(t, logical.UpdateOperation, "creds/a", map[string]any{"api_key": "new-key", "description": "d", "idempotency_key": "k2"})
			e.storage.failPutsAfter(-1)
			if err == nil {
				return
			}
			requireKind(t, err, KindStorage)
			require.Equal(t, before, e.storage.snapshotWithout(t, saltKey))
			e.mustRequest(t, logical.ReadOperation, "creds/a", nil)
		})
	}
}

func TestCredentialStorageReadFailures(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/a", validCreds["api_key"])

	e.storage.failGet.Store(true)
	_, err := e.request(t, logical.ReadOperation, "creds/a", nil)
	requireKind(t, err, KindStorage)
	_, err = e.request(t, logical.UpdateOperation, "creds/a", map[string]any{"description": "x"})
	requireKind(t, err, KindStorage)
	e.storage.failGet.Store(false)

	e.storage.failList.Store(true)
	_, err = e.request(t, logical.ListOperation, "creds/", nil)
	requireKind(t, err, KindStorage)
	e.storage.failList.Store(false)

	e.storage.failDelete.Store(true)
	_, err = e.request(t, logical.DeleteOperation, "creds/a", nil)
	requireKind(t, err, KindStorage)
	e.storage.failDelete.Store(false)
	e.mustRequest(t, logical.ReadOperation, "creds/a", nil)
}

func TestDeleteRetrySweepsLeftoverVersions(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/a", validCreds["api_key"])
	// Simulate a delete that removed the metadata and then failed.
	require.NoError(t, e.storage.Delete(t.Context(), credKey("a")))
	e.mustRequest(t, logical.DeleteOperation, "creds/a", nil)
	require.Empty(t, e.storage.snapshotWithout(t, saltKey))
}

func TestSecretsAreSealWrapped(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/a", validCreds["basic_auth"])
	for key, value := range e.storage.snapshot(t) {
		if strings.Contains(value, secretPassword) {
			require.True(t, strings.HasPrefix(key, secretPrefix), "secret stored at %s", key)
			require.True(t, e.b.isSealWrapped(key))
		}
	}
	require.True(t, e.b.isSealWrapped(saltKey))
	require.False(t, e.b.isSealWrapped(credKey("a")))
}

func TestTypesPaths(t *testing.T) {
	e := newTestBackend(t)
	list := e.mustRequest(t, logical.ListOperation, "types/", nil)
	require.Equal(t, []string{"api_key", "basic_auth", "bearer", "generated", "oauth2"}, list.Data["keys"])

	read := e.mustRequest(t, logical.ReadOperation, "types/oauth2", nil)
	require.Equal(t, []string{"client_secret", "refresh_token", "private_key", "service_account_json"}, read.Data["secret_fields"])
	require.Equal(t, true, read.Data["supports_refresh"])
	require.Contains(t, read.Data["grants"], "client_credentials")

	_, err := e.request(t, logical.ReadOperation, "types/nope", nil)
	requireKind(t, err, KindNotFound)
}
