package client

import (
	"context"
	"fmt"
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

// BatchCreate creates (or updates) many credentials in one request. The
// results are in the order of items; one bad item does not fail the
// others. Items the client finds invalid before sending fail the whole
// call.
func (c *Client) BatchCreate(ctx context.Context, items []BatchItem) ([]BatchResult, error) {
	list := make([]map[string]any, 0, len(items))
	for i := range items {
		body, err := items[i].body()
		if err != nil {
			return nil, fmt.Errorf("item %d (%s): %w", i, items[i].Name, err)
		}
		body["name"] = items[i].Name
		list = append(list, body)
	}
	var w batchWire
	if _, err := c.write(ctx, c.mount+"/batch/create", map[string]any{"items": list}, &w); err != nil {
		return nil, err
	}
	return w.results(), nil
}

// BatchDelete deletes many credentials in one request; the results are in
// the order of names.
func (c *Client) BatchDelete(ctx context.Context, names []string) ([]BatchResult, error) {
	var w batchWire
	if _, err := c.write(ctx, c.mount+"/batch/delete", map[string]any{"names": names}, &w); err != nil {
		return nil, err
	}
	return w.results(), nil
}
