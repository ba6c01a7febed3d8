package client_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/client"
)

// batchItems returns n api_key items named base-0 .. base-(n-1), each with
// tags and metadata: 12 JSON strings apiece (name, type, api_key, tags,
// metadata, owner and their values).
func batchItems(base string, n int) []client.BatchItem {
	items := plainBatchItems(base, n)
	for i := range items {
		items[i].Tags = []string{"bulk", "import"}
		items[i].Metadata = map[string]string{"owner": "ops"}
	}
	return items
}

// plainBatchItems returns n api_key items named base-0 .. base-(n-1) with
// only a key: 6 JSON strings apiece.
func plainBatchItems(base string, n int) []client.BatchItem {
	items := make([]client.BatchItem, n)
	for i := range items {
		items[i] = client.BatchItem{Name: fmt.Sprintf("%s-%d", base, i), CreateInput: client.CreateInput{
			APIKey: &client.APIKey{Key: client.NewSecret(fmt.Sprintf("batch-SECRET-%d", i))},
		}}
	}
	return items
}

// TestBatchFitsStringLimit: with the default options, a 250-item
// BatchCreate and BatchDelete reach a server that refuses bodies of more
// than 1,000 JSON strings (OpenBao's default listener limit) in requests
// that fit, and answer every result in order.
func TestBatchFitsStringLimit(t *testing.T) {
	t.Parallel()
	lv := newLoopVault(t, batchAnswer)
	c := lv.client(t)
	items := batchItems("fit", 250)
	results, err := c.BatchCreate(testContext(t), items)
	if err != nil {
		t.Fatalf("BatchCreate of 250 items: %v", err)
	}
	if len(results) != len(items) {
		t.Fatalf("BatchCreate answered %d results for %d items", len(results), len(items))
	}
	for i, r := range results {
		if r.Name != items[i].Name || r.ID != "id-"+items[i].Name || r.Err != nil {
			t.Fatalf("result %d = %+v; want the one of %s", i, r, items[i].Name)
		}
	}
	names := make([]string, 2000)
	for i := range names {
		names[i] = fmt.Sprintf("fit-%d", i)
	}
	results, err = c.BatchDelete(testContext(t), names)
	if err != nil {
		t.Fatalf("BatchDelete of %d names: %v", len(names), err)
	}
	if len(results) != len(names) {
		t.Fatalf("BatchDelete answered %d results for %d names", len(results), len(names))
	}
	for i, r := range results {
		if r.Name != names[i] || !r.Deleted {
			t.Fatalf("result %d = %+v; want the one of %s", i, r, names[i])
		}
	}
	for i, r := range lv.Requests() {
		if n, _ := jsonStrings(r.Body); n > 1000 {
			t.Errorf("request %d (%s) has %d JSON strings", i+1, r.Path, n)
		}
	}
}

// batchRequest decodes the names a batch request carries.
func batchRequest(t *testing.T, r loopRequest) []string {
	t.Helper()
	in, err := decodeBatch(r.Body)
	if err != nil {
		t.Fatalf("request body: %v", err)
	}
	names := in.Names
	for _, it := range in.Items {
		names = append(names, it.Name)
	}
	return names
}

// TestBatchChunkSize: 250 items with a chunk size of 100 make three
// requests of 100, 100 and 50 items, in order, and the results are merged
// in the order of the items; BatchDelete splits the same way.
func TestBatchChunkSize(t *testing.T) {
	t.Parallel()
	lv := newLoopVault(t, batchAnswer)
	c := lv.client(t, client.WithBatchChunkSize(100))
	items := plainBatchItems("chunk", 250)
	results, err := c.BatchCreate(testContext(t), items)
	if err != nil {
		t.Fatalf("BatchCreate: %v", err)
	}
	names := make([]string, len(items))
	for i := range items {
		names[i] = items[i].Name
	}
	checkChunks := func(op string, from int) {
		t.Helper()
		reqs := lv.Requests()[from:]
		if len(reqs) != 3 {
			t.Fatalf("%s made %d requests, want 3", op, len(reqs))
		}
		var sent []string
		for i, want := range []int{100, 100, 50} {
			got := batchRequest(t, reqs[i])
			if reqs[i].Path != "/v1/nebula/batch/"+op || len(got) != want {
				t.Errorf("request %d: %s %s with %d items; want batch/%s with %d", i+1, reqs[i].Method, reqs[i].Path, len(got), op, want)
			}
			sent = append(sent, got...)
		}
		if !slices.Equal(sent, names) {
			t.Errorf("%s sent the names out of order", op)
		}
	}
	checkChunks("create", 0)
	if len(results) != len(items) {
		t.Fatalf("BatchCreate answered %d results for %d items", len(results), len(items))
	}
	for i, r := range results {
		if r.Name != names[i] || r.ID != "id-"+names[i] || r.Version != 1 || r.Err != nil {
			t.Fatalf("result %d = %+v; want the one of %s", i, r, names[i])
		}
	}

	results, err = c.BatchDelete(testContext(t), names)
	if err != nil {
		t.Fatalf("BatchDelete: %v", err)
	}
	checkChunks("delete", 3)
	if len(results) != len(names) {
		t.Fatalf("BatchDelete answered %d results for %d names", len(results), len(names))
	}
	for i, r := range results {
		if r.Name != names[i] || !r.Deleted || r.Err != nil {
			t.Fatalf("result %d = %+v; want the one of %s", i, r, names[i])
		}
	}
}

// TestBatchChunkFails: when the second of three requests fails, BatchCreate
// answers the first request's results with an error that names the
// request and wraps the engine's *Error, and sends nothing more.
func TestBatchChunkFails(t *testing.T) {
	t.Parallel()
	lv := newLoopVault(t, func(n int, r loopRequest) loopAnswer {
		if n == 2 {
			return vaultError(http.StatusForbidden, "permission denied")
		}
		return batchAnswer(n, r)
	})
	c := lv.client(t, client.WithBatchChunkSize(100))
	items := plainBatchItems("chunkfail", 250)
	results, err := c.BatchCreate(testContext(t), items)
	requireKindCode(t, err, client.AccessDenied, client.ErrAccessDenied, "")
	if !strings.Contains(err.Error(), "request 2 of 3 (items 100 to 199)") {
		t.Errorf("error %q does not say which request failed", err)
	}
	if len(results) != 100 || results[99].Name != items[99].Name {
		t.Errorf("BatchCreate answered %d results; want the first request's 100", len(results))
	}
	if n := len(lv.Requests()); n != 2 {
		t.Errorf("BatchCreate made %d requests; want it to stop after the failed second", n)
	}
}

// TestBatchChunkPacking: chunks hold as many items as fit the string limit.
func TestBatchChunkPacking(t *testing.T) {
	t.Parallel()
	lv := newLoopVault(t, batchAnswer)
	c := lv.client(t, client.WithBatchMaxStrings(50), client.WithBatchChunkSize(1000))
	items := batchItems("pack", 10)
	big := batchItems("pack-big", 1)[0]
	big.Metadata = map[string]string{}
	for i := range 40 {
		big.Metadata[fmt.Sprintf("k%d", i)] = "v"
	}
	items = slices.Insert(items, 5, big)
	results, err := c.BatchCreate(testContext(t), items)
	if err != nil || len(results) != len(items) {
		t.Fatalf("BatchCreate = %d results, %v", len(results), err)
	}
	var sizes []int
	for _, r := range lv.Requests() {
		n, _ := jsonStrings(r.Body)
		if n > 50 && len(batchRequest(t, r)) > 1 {
			t.Errorf("a request of %d items holds %d strings", len(batchRequest(t, r)), n)
		}
		sizes = append(sizes, len(batchRequest(t, r)))
	}
	if !slices.Equal(sizes, []int{4, 1, 1, 4, 1}) {
		t.Errorf("requests of %v items; want [4 1 1 4 1]", sizes)
	}
}

// TestBatchChunksVault: through a real Vault, a 250-item BatchCreate with
// a chunk size of 40 (seven requests) creates every credential with its
// result in order, and a BatchDelete of the 250 names with the same chunk
// size deletes them all.
func TestBatchChunksVault(t *testing.T) {
	t.Parallel()
	_, v := newClient(t)
	c := client.New(v.Client(), client.WithMount(newMount(t, v).Mount()), client.WithBatchChunkSize(40))
	ctx := testContext(t)
	items := batchItems(newName("vault-chunk"), 250)
	results, err := c.BatchCreate(ctx, items)
	if err != nil {
		t.Fatalf("BatchCreate: %v", err)
	}
	if len(results) != len(items) {
		t.Fatalf("BatchCreate answered %d results for %d items", len(results), len(items))
	}
	ids := map[string]bool{}
	for i, r := range results {
		if r.Name != items[i].Name || r.Err != nil || r.ID == "" || r.Version != 1 || ids[r.ID] {
			t.Fatalf("result %d = %+v; want a new credential %s", i, r, items[i].Name)
		}
		ids[r.ID] = true
	}
	names, err := c.List(ctx)
	if err != nil || len(names) != len(items) {
		t.Fatalf("List = %d names, %v; want %d", len(names), err, len(items))
	}
	for _, i := range []int{0, 39, 40, 249} {
		tok, err := c.GetToken(ctx, items[i].Name, nil)
		if err != nil || tok.Value() != items[i].APIKey.Key.Value() {
			t.Errorf("GetToken of item %d: %v, %v", i, tok, err)
		}
	}

	del := make([]string, len(items))
	for i := range items {
		del[i] = items[i].Name
	}
	results, err = c.BatchDelete(ctx, del)
	if err != nil {
		t.Fatalf("BatchDelete: %v", err)
	}
	if len(results) != len(del) {
		t.Fatalf("BatchDelete answered %d results for %d names", len(results), len(del))
	}
	for i, r := range results {
		if r.Name != del[i] || r.Err != nil || !r.Deleted {
			t.Fatalf("result %d = %+v; want %s deleted", i, r, del[i])
		}
	}
	if names, err := c.List(ctx); err != nil || len(names) != 0 {
		t.Errorf("List after BatchDelete = %v, %v", names, err)
	}
}
