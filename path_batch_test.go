package nebula

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

func TestBatchCreateThousandWithSomeInvalid(t *testing.T) {
	e := newTestBackend(t)
	const n = 1000
	items := make([]any, n)
	invalid := map[int]string{}
	for i := range n {
		item := map[string]any{"name": fmt.Sprintf("svc-%04d", i), "type": "api_key", "api_key": fmt.Sprintf("key-%d", i),
			"idempotency_key": fmt.Sprintf("batch-1-%d", i)}
		switch i % 100 {
		case 7:
			item["type"] = "kerberos"
			invalid[i] = "unsupported_type: "
		case 42:
			delete(item, "api_key")
			invalid[i] = "invalid_input: "
		case 99:
			item["name"] = "bad name"
			invalid[i] = "invalid_input: "
		}
		items[i] = item
	}
	resp := e.mustRequest(t, logical.UpdateOperation, "batch/create", map[string]any{"items": items})
	results := resp.Data["results"].([]map[string]any)
	require.Len(t, results, n)
	require.Equal(t, n-len(invalid), resp.Data["succeeded"])
	require.Equal(t, len(invalid), resp.Data["failed"])
	for i, r := range results {
		if prefix, bad := invalid[i]; bad {
			require.True(t, strings.HasPrefix(r["error"].(string), prefix), "item %d: %v", i, r)
			require.NotContains(t, r, "id")
			continue
		}
		require.NotEmpty(t, r["id"], "item %d", i)
		require.NotContains(t, r, "error")
	}
	list := e.mustRequest(t, logical.ListOperation, "creds/", nil)
	require.Len(t, list.Data["keys"], n-len(invalid), "the valid items were created")
	require.Equal(t, "key-5", e.tokenOf(t, "svc-0005"))

	// The same batch again: idempotency keys make it a no-op.
	before := e.storage.snapshotWithout(t, saltKey)
	again := e.mustRequest(t, logical.UpdateOperation, "batch/create", map[string]any{"items": items})
	for i, r := range again.Data["results"].([]map[string]any) {
		if _, bad := invalid[i]; !bad {
			require.Equal(t, results[i]["id"], r["id"], "item %d answers the same id", i)
		}
	}
	after := e.storage.snapshotWithout(t, saltKey)
	for k := range after {
		if !strings.HasPrefix(k, auditPrefix) {
			require.Equal(t, before[k], after[k], "nothing new stored at %s", k)
		}
	}
}

func TestBatchDelete(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/a", validCreds["api_key"])
	e.mustRequest(t, logical.CreateOperation, "creds/b", validCreds["basic_auth"])
	resp := e.mustRequest(t, logical.UpdateOperation, "batch/delete", map[string]any{"names": []string{"a", "missing", "bad/name", "b"}})
	results := resp.Data["results"].([]map[string]any)
	require.Equal(t, map[string]any{"name": "a", "deleted": true}, results[0])
	require.Equal(t, map[string]any{"name": "missing", "deleted": false}, results[1])
	require.True(t, strings.HasPrefix(results[2]["error"].(string), "invalid_input: "))
	require.Equal(t, map[string]any{"name": "b", "deleted": true}, results[3])
	require.Equal(t, 1, resp.Data["failed"])
	_, err := e.request(t, logical.ListOperation, "creds/", nil)
	require.NoError(t, err)
	require.Empty(t, e.mustRequest(t, logical.ListOperation, "creds/", nil).Data["keys"])
}

func TestBatchLimits(t *testing.T) {
	e := newTestBackend(t)
	_, err := e.request(t, logical.UpdateOperation, "batch/create", map[string]any{"items": []any{}})
	requireKind(t, err, KindInvalidInput, "items")
	resp := e.mustRequest(t, logical.UpdateOperation, "batch/create", map[string]any{"items": []any{"not an object", map[string]any{"type": "api_key"}}})
	results := resp.Data["results"].([]map[string]any)
	require.Contains(t, results[0]["error"], "not an object")
	require.Contains(t, results[1]["error"], "no name")
}

func TestBatchItemNamesAreValidatedBeforeRouting(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/victim", validCreds["api_key"])
	resp := e.mustRequest(t, logical.UpdateOperation, "batch/create", map[string]any{"items": []any{
		map[string]any{"name": "victim/rotation", "webhook_url": "https://hooks.example.com/x", "webhook_secret": "0123456789abcdef"},
		map[string]any{"name": "../victim", "type": "api_key", "api_key": "k"},
	}})
	results := resp.Data["results"].([]map[string]any)
	require.Len(t, results, 2)
	for i, r := range results {
		require.Contains(t, r["error"], "invalid_input: ", "item %d", i)
		require.Contains(t, r["error"], "is invalid", "item %d", i)
	}
	require.Equal(t, 2, resp.Data["failed"])
	policy := e.mustRequest(t, logical.ReadOperation, "creds/victim/rotation", nil)
	require.Empty(t, policy.Data["webhook_url"], "a batch item reached another credential's rotation policy")

	del := e.mustRequest(t, logical.UpdateOperation, "batch/delete", map[string]any{"names": "victim/rotation"})
	require.Contains(t, del.Data["results"].([]map[string]any)[0]["error"], "invalid_input: ")
	e.mustRequest(t, logical.ReadOperation, "creds/victim", nil)
}
