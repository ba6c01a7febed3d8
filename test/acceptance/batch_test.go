package acceptance

import (
	"context"
	"fmt"
	"testing"

	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/test/harness"
)

// batchLimitItems is the size of TestBatchListenerLimit's batches: 200
// api_key items of 6 JSON strings, 1,201 strings in one request body, more
// than OpenBao's default listener limit (max_request_json_strings = 1000).
const batchLimitItems = 200

// TestBatchListenerLimit: batches are sized to the listener's limit.
//
//   - The Go client's BatchCreate and BatchDelete (default chunking,
//     WithBatchMaxStrings = 1000) create and delete 200 credentials on
//     either host: it splits them into requests OpenBao's default listener
//     takes.
//   - One 200-item batch/create request: Vault takes it; OpenBao's default
//     listener refuses it before the plugin sees it (400, "exceeded maximum
//     number of strings"), and an OpenBao listener with a raised
//     max_request_json_strings takes it (harness.WithListenerLimits, a file
//     server of its own).
func TestBatchListenerLimit(t *testing.T) {
	t.Parallel()
	v := harness.SharedDev(t)
	mount := ownMount(t, v, "nebula-batch")
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()

	t.Run("client chunks", func(t *testing.T) {
		nc := client.New(v.Client(), client.WithMount(mount))
		items := make([]client.BatchItem, batchLimitItems)
		names := make([]string, batchLimitItems)
		for i := range items {
			names[i] = newName("batch-client")
			items[i] = client.BatchItem{Name: names[i], CreateInput: client.CreateInput{
				APIKey: &client.APIKey{Key: client.NewSecret(fmt.Sprintf("batch-SECRET-%d", i))},
			}}
		}
		results, err := nc.BatchCreate(ctx, items)
		if err != nil || len(results) != len(items) {
			t.Fatalf("BatchCreate of %d items: %d results, %v", len(items), len(results), err)
		}
		for i, r := range results {
			if r.Err != nil || r.Name != names[i] || r.Version != 1 {
				t.Fatalf("result %d = %+v; want %s created", i, r, names[i])
			}
		}
		deleted, err := nc.BatchDelete(ctx, names)
		if err != nil || len(deleted) != len(names) {
			t.Fatalf("BatchDelete of %d names: %d results, %v", len(names), len(deleted), err)
		}
		for i, r := range deleted {
			if r.Err != nil || !r.Deleted {
				t.Fatalf("delete result %d = %+v; want deleted", i, r)
			}
		}
	})

	t.Run("one request", func(t *testing.T) {
		resp, err := apiDriver{c: v.Client()}.Write(t, mount+"/batch/create", batchBody("batch-one"))
		if v.Host == harness.HostOpenBao {
			requireError(t, err, 400, "")
			requireErrorMentions(t, err, "exceeded maximum number of strings")
			return
		}
		if err != nil {
			t.Fatalf("Vault refused a %d-item batch/create: %v", batchLimitItems, err)
		}
		requireBatchCreated(t, resp)
	})

	t.Run("raised listener limit", func(t *testing.T) {
		if !harness.IsOpenBao() {
			t.Skip("OpenBao only: Vault's listener has no max_request_json_strings")
		}
		big := harness.StartFile(t, harness.WithListenerLimits(10_000, 0))
		resp, err := apiDriver{c: big.Client()}.Write(t, big.Mount+"/batch/create", batchBody("batch-raised"))
		if err != nil {
			t.Fatalf("batch/create of %d items with max_request_json_strings = 10000: %v", batchLimitItems, err)
		}
		requireBatchCreated(t, resp)
	})
}

// batchBody is a batch/create body of batchLimitItems api_key items.
func batchBody(base string) map[string]any {
	items := make([]any, batchLimitItems)
	for i := range items {
		items[i] = map[string]any{"name": newName(base), "type": "api_key", "api_key": fmt.Sprintf("batch-SECRET-%d", i)}
	}
	return map[string]any{"items": items}
}

// requireBatchCreated checks that a batch/create answer created every item.
func requireBatchCreated(tb testing.TB, resp *response) {
	tb.Helper()
	results, _ := resp.Data["results"].([]any)
	if len(results) != batchLimitItems {
		tb.Fatalf("batch/create answered %d results; want %d: %.500s", len(results), batchLimitItems, resp.Raw)
	}
	for i, r := range results {
		item, _ := r.(map[string]any)
		if field(item, "error") != "" || field(item, "id") == "" {
			tb.Fatalf("batch/create result %d = %v; want a created credential", i, item)
		}
	}
}
