package nebula

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

func TestIdempotencyKeysPerCredentialAreBounded(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	const n = 2000
	var last map[string]any
	for i := range n {
		last = map[string]any{"description": fmt.Sprintf("update %d", i), "idempotency_key": fmt.Sprintf("key-%04d", i)}
		e.mustRequest(t, logical.UpdateOperation, "creds/k", last)
	}
	entry, err := e.storage.Get(t.Context(), credKey("k"))
	require.NoError(t, err)
	require.Less(t, len(entry.Value), 16<<10, "the credential entry stays small")
	c, err := loadCredential(t.Context(), e.storage, "k")
	require.NoError(t, err)
	require.Len(t, c.IdempotencyKeys, maxIdempotencyKeys)
	records, err := e.storage.List(t.Context(), idemPrefix)
	require.NoError(t, err)
	require.Len(t, records, maxIdempotencyKeys, "trimmed keys' records are deleted")

	// The newest key still replays: same id, nothing written.
	puts := e.storage.puts.Load()
	again := e.mustRequest(t, logical.UpdateOperation, "creds/k", last)
	require.Equal(t, c.ID, again.Data["id"])
	require.Equal(t, puts, e.storage.puts.Load(), "a replay writes nothing")
	_, err = e.request(t, logical.UpdateOperation, "creds/k", map[string]any{"description": "other", "idempotency_key": last["idempotency_key"]})
	requireKind(t, err, KindDuplicate)

	// A trimmed key behaves like a new one.
	e.mustRequest(t, logical.UpdateOperation, "creds/k", map[string]any{"description": "reused", "idempotency_key": "key-0000"})
}

func TestIdempotencyKeysExpireAfterADay(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", map[string]any{
		"type": "api_key", "api_key": secretKeyValue, "idempotency_key": "create-1",
	})
	e.clock.Advance(idempotencyKeyTTL + time.Minute)
	// Past the TTL the key is new again: other input is no conflict.
	e.mustRequest(t, logical.UpdateOperation, "creds/k", map[string]any{"description": "later", "idempotency_key": "create-1"})
	e.clock.Advance(idempotencyKeyTTL + time.Minute)
	e.mustRequest(t, logical.UpdateOperation, "creds/k", map[string]any{"description": "even later", "idempotency_key": "fresh"})
	c, err := loadCredential(t.Context(), e.storage, "k")
	require.NoError(t, err)
	require.Len(t, c.IdempotencyKeys, 1, "keys older than the TTL are dropped on the next write")
	records, err := e.storage.List(t.Context(), idemPrefix)
	require.NoError(t, err)
	require.Equal(t, []string{idemStorageID("fresh")}, records)
}

func TestIdempotencyKeysStoredAsBareIdsStillDecode(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", map[string]any{
		"type": "api_key", "api_key": secretKeyValue, "idempotency_key": "old-key",
	})
	raw := map[string]any{}
	entry, err := e.storage.Get(t.Context(), credKey("k"))
	require.NoError(t, err)
	require.NoError(t, entry.DecodeJSON(&raw))
	raw["idempotency_keys"] = []string{idemStorageID("old-key")}
	entry, err = logical.StorageEntryJSON(credKey("k"), raw)
	require.NoError(t, err)
	require.NoError(t, e.storage.Put(t.Context(), entry))

	c, err := loadCredential(t.Context(), e.storage, "k")
	require.NoError(t, err)
	require.Len(t, c.IdempotencyKeys, 1)
	// An entry without a time counts as old: the next write drops it.
	e.mustRequest(t, logical.UpdateOperation, "creds/k", map[string]any{"description": "x", "idempotency_key": "new-key"})
	records, err := e.storage.List(t.Context(), idemPrefix)
	require.NoError(t, err)
	require.Equal(t, []string{idemStorageID("new-key")}, records)
	e.mustRequest(t, logical.DeleteOperation, "creds/k", nil)
	require.Empty(t, e.storage.snapshotWithout(t, saltKey))
}
