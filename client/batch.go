package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// BatchItem is one credential of BatchCreate: its name and what Create
// would take.
type BatchItem struct {
	// Name is the credential's name.
	Name string
	// CreateInput is what Create would take for it.
	CreateInput
}

// BatchResult is the outcome of one item of a batch operation.
type BatchResult struct {
	// Name is the item's credential name.
	Name string
	// ID is the id of the created or updated version (BatchCreate).
	ID string
	// Version is its version number (BatchCreate).
	Version int
	// Deleted reports whether the credential existed (BatchDelete).
	Deleted bool
	// Err is the item's failure, an *Error; nil when it succeeded.
	Err error
}

// batchWire is the engine's batch response.
type batchWire struct {
	Results []struct {
		Name    string `json:"name"`
		ID      string `json:"id"`
		Version int    `json:"version"`
		Deleted bool   `json:"deleted"`
		Error   string `json:"error"`
	} `json:"results"`
}

func (w *batchWire) results() []BatchResult {
	out := make([]BatchResult, 0, len(w.Results))
	for _, r := range w.Results {
		out = append(out, BatchResult{Name: r.Name, ID: r.ID, Version: r.Version, Deleted: r.Deleted, Err: itemError(r.Error)})
	}
	return out
}

// DefaultBatchChunkSize is the most items (or names) BatchCreate and
// BatchDelete send in one request unless WithBatchChunkSize says
// otherwise.
const DefaultBatchChunkSize = 100

// DefaultBatchMaxStrings is the most JSON strings (object keys included)
// one batch request body holds unless WithBatchMaxStrings says otherwise:
// OpenBao's default listener limit max_request_json_strings, which refuses
// larger bodies before they reach the engine.
const DefaultBatchMaxStrings = 1000

// WithBatchChunkSize sets the most items BatchCreate, and names
// BatchDelete, send in one request (the engine takes up to 5,000); zero or
// less means DefaultBatchChunkSize. Larger inputs are split into several
// requests whose results are merged in order.
func WithBatchChunkSize(n int) Option {
	return func(c *Client) { c.batchItems = n }
}

// WithBatchMaxStrings sets the most JSON strings a batch request body
// holds (each item's keys and string values count, as OpenBao's listener
// counts them): raise it with the listener's max_request_json_strings, or
// pass a negative n for no limit (Vault has none). Zero means
// DefaultBatchMaxStrings. An item that alone exceeds the limit is sent in
// a request of its own.
func WithBatchMaxStrings(n int) Option {
	return func(c *Client) { c.batchStrings = n }
}

// BatchCreate creates (or updates) many credentials. The results are in
// the order of items; one bad item does not fail the others. Items the
// client finds invalid before sending fail the whole call, before anything
// is sent.
//
// Inputs larger than a request may hold (WithBatchChunkSize,
// WithBatchMaxStrings) are sent in several requests, one after the other.
// When one of them fails as a whole, BatchCreate answers the results of
// the requests before it (the first len(results) items) with the error;
// the items after those were not written, or, for a transport failure,
// maybe written.
func (c *Client) BatchCreate(ctx context.Context, items []BatchItem) ([]BatchResult, error) {
	list := make([]map[string]any, 0, len(items))
	sizes := make([]int, 0, len(items))
	for i := range items {
		body, err := items[i].body()
		if err != nil {
			return nil, fmt.Errorf("item %d (%s): %w", i, items[i].Name, err)
		}
		body["name"] = items[i].Name
		n, err := jsonStrings(body)
		if err != nil {
			return nil, fmt.Errorf("item %d (%s): %w", i, items[i].Name, err)
		}
		list = append(list, body)
		sizes = append(sizes, n)
	}
	return c.batch(ctx, "create", sizes, func(from, to int) (map[string]any, replay) {
		keyed := true
		for i := from; i < to; i++ {
			keyed = keyed && items[i].IdempotencyKey != ""
		}
		return map[string]any{"items": list[from:to]}, replayIf(keyed)
	})
}

// BatchDelete deletes many credentials; the results are in the order of
// names. Large inputs are split as BatchCreate splits them.
func (c *Client) BatchDelete(ctx context.Context, names []string) ([]BatchResult, error) {
	sizes := make([]int, len(names))
	for i := range sizes {
		sizes[i] = 1
	}
	return c.batch(ctx, "delete", sizes, func(from, to int) (map[string]any, replay) {
		return map[string]any{"names": names[from:to]}, replayable
	})
}

// batch sends the items whose JSON string counts are sizes to
// batch/<op> in chunks that fit the client's limits, in order; body builds
// the request of items [from, to). An empty input is sent as one request
// (the engine answers invalid_input).
func (c *Client) batch(ctx context.Context, op string, sizes []int, body func(from, to int) (map[string]any, replay)) ([]BatchResult, error) {
	chunks := chunk(sizes, c.batchItems, c.batchStrings)
	results := make([]BatchResult, 0, len(sizes))
	for k, ch := range chunks {
		b, r := body(ch[0], ch[1])
		var w batchWire
		if _, err := c.write(ctx, r, c.mount+"/batch/"+op, b, &w); err != nil {
			if len(chunks) == 1 {
				return nil, err
			}
			return results, fmt.Errorf("nebula: batch %s request %d of %d (items %d to %d): %w", op, k+1, len(chunks), ch[0], ch[1]-1, err)
		}
		if len(w.Results) != ch[1]-ch[0] {
			return results, fmt.Errorf("nebula: batch %s request %d of %d: %d results for %d items", op, k+1, len(chunks), len(w.Results), ch[1]-ch[0])
		}
		results = append(results, w.results()...)
	}
	return results, nil
}

// batchEnvelope is the JSON strings of a batch body besides its items: the
// key "items" or "names".
const batchEnvelope = 1

// chunk splits items whose JSON string counts are sizes into ranges
// [from, to) of at most maxItems items and (when maxStrings > 0) at most
// maxStrings strings with the envelope; an item too large alone gets a
// range of its own. No items answer one empty range.
func chunk(sizes []int, maxItems, maxStrings int) [][2]int {
	if len(sizes) == 0 {
		return [][2]int{{0, 0}}
	}
	var out [][2]int
	from, count := 0, batchEnvelope
	for i, n := range sizes {
		if i > from && (i-from >= maxItems || (maxStrings > 0 && count+n > maxStrings)) {
			out = append(out, [2]int{from, i})
			from, count = i, batchEnvelope
		}
		count += n
	}
	return append(out, [2]int{from, len(sizes)})
}

// jsonStrings counts the strings of v's JSON encoding, object keys
// included, as OpenBao's listener counts them for max_request_json_strings.
func jsonStrings(v any) (int, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return 0, clientError(InvalidInput, "encoding the item: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	n := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, clientError(InvalidInput, "encoding the item: %v", err)
		}
		if _, ok := tok.(string); ok {
			n++
		}
	}
}
