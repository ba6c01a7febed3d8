package acceptance

import (
	"context"
	"encoding/json"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

// openAPIOperation is the part of an OpenAPI operation the test reads.
type openAPIOperation struct {
	OperationID string `json:"operationId"`
	Responses   map[string]struct {
		Content map[string]struct {
			Schema openAPISchema `json:"schema"`
		} `json:"content"`
	} `json:"responses"`
}

// openAPISchema is the part of an OpenAPI schema the test reads.
type openAPISchema struct {
	Ref        string                     `json:"$ref"`
	Properties map[string]json.RawMessage `json:"properties"`
}

// TestOpenAPIResponseSchemas: Vault's OpenAPI document
// (sys/internal/specs/openapi) lists, for every get and post operation of
// the mount, a 200 response with a schema, and every operation of the
// mount has an operation id of its own. (Vault drops the "$ref"s of an
// external plugin's document, so the engine inlines its schemas: see
// inlineOpenAPISchemas.)
func TestOpenAPIResponseSchemas(t *testing.T) {
	v := harness.SharedDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	resp, err := v.Client().Logical().ReadRawWithContext(ctx, "sys/internal/specs/openapi")
	if err != nil {
		t.Fatalf("reading the OpenAPI document: %v", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the OpenAPI document: %v", err)
	}
	var doc struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas map[string]openAPISchema `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("decoding the OpenAPI document: %v", err)
	}

	prefix := "/" + v.Mount + "/"
	var paths []string
	for path := range doc.Paths {
		if strings.HasPrefix(path, prefix) {
			paths = append(paths, path)
		}
	}
	sort.Strings(paths)
	if len(paths) < 20 {
		t.Fatalf("the document lists %d paths under %s, want the engine's (at least 20): %v", len(paths), prefix, paths)
	}
	ids := map[string]string{}
	checked := 0
	for _, path := range paths {
		for method, rawOp := range doc.Paths[path] {
			if method != "get" && method != "post" && method != "delete" {
				continue // parameters, description, x-vault-* keys
			}
			where := method + " " + path
			var op openAPIOperation
			if err := json.Unmarshal(rawOp, &op); err != nil {
				t.Fatalf("%s: decoding the operation: %v", where, err)
			}
			if op.OperationID == "" {
				t.Errorf("%s has no operationId", where)
			} else if other, dup := ids[op.OperationID]; dup {
				t.Errorf("%s: operationId %s is also %s", where, op.OperationID, other)
			}
			ids[op.OperationID] = where
			if method == "delete" {
				continue
			}
			checked++
			ok, found := op.Responses["200"]
			if !found {
				t.Errorf("%s (%s) has no 200 response", where, op.OperationID)
				continue
			}
			media, found := ok.Content["application/json"]
			if !found {
				t.Errorf("%s (%s): the 200 response has no application/json content", where, op.OperationID)
				continue
			}
			schema := media.Schema
			if schema.Ref != "" {
				schema = doc.Components.Schemas[strings.TrimPrefix(schema.Ref, "#/components/schemas/")]
			}
			if len(schema.Properties) == 0 {
				t.Errorf("%s (%s): the 200 response's schema lists no properties", where, op.OperationID)
			}
		}
	}
	t.Logf("%d get/post operations under %s have a 200 response schema; %d operation ids", checked, prefix, len(ids))
}
