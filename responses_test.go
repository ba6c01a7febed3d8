package nebula

import (
	"context"
	"encoding/json"
	"mime"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/testhelpers/schema"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

// validateResponse checks a successful answer against the response schema
// its operation declares (responses.go), in strict mode: every field must
// be declared, every Required one present, and each of the JSON kind its
// type stands for (requireJSONKinds). testEnv.request calls it for
// every request of the path tests, so a field added to an answer without a
// schema fails the suite.
//
// Answers with a raw body (logical.HTTPRawBody: metrics?format=prometheus)
// carry no fields; their media type must be declared among the
// operation's responses. Benchmarks (not a *testing.T) are not checked:
// they run the handlers the tests check.
func (e *testEnv) validateResponse(tb testing.TB, op logical.Operation, path string, resp *logical.Response) {
	tb.Helper()
	t, ok := tb.(*testing.T)
	if !ok {
		return
	}
	route := e.b.Route(path)
	if route == nil {
		t.Fatalf("no route for %s %s", op, path)
	}
	if resp != nil {
		if _, raw := resp.Data[logical.HTTPRawBody]; raw {
			requireRawDeclared(t, route, op, resp)
			return
		}
	}
	declared := schema.GetResponseSchema(t, route, op)
	schema.ValidateResponse(t, declared, resp, true)
	if resp != nil {
		requireJSONKinds(t, route.Pattern, op, declared, resp.Data)
	}
}

// requireJSONKinds checks that each answered field has the JSON kind its
// declared type stands for (the framework's validation converts weakly: a
// number passes as a string, "1" as an int). null passes for every type.
func requireJSONKinds(t *testing.T, pattern string, op logical.Operation, declared *framework.Response, data map[string]any) {
	t.Helper()
	raw, err := json.Marshal(data)
	require.NoError(t, err)
	var decoded map[string]any
	require.NoError(t, json.Unmarshal(raw, &decoded))
	for name, v := range decoded {
		f, ok := declared.Fields[name]
		if !ok || v == nil {
			continue
		}
		if !jsonKindFits(f.Type, v) {
			t.Fatalf("%s %s: field %q is %T (%v), which does not fit its declared type %s", op, pattern, name, v, v, f.Type)
		}
	}
}

// jsonKindFits reports whether a decoded JSON value has the kind of a
// response field type.
func jsonKindFits(ft framework.FieldType, v any) bool {
	switch ft {
	case framework.TypeString, framework.TypeLowerCaseString, framework.TypeNameString, framework.TypeTime:
		_, ok := v.(string)
		return ok
	case framework.TypeInt, framework.TypeInt64:
		n, ok := v.(float64)
		return ok && n == float64(int64(n))
	case framework.TypeFloat:
		_, ok := v.(float64)
		return ok
	case framework.TypeBool:
		_, ok := v.(bool)
		return ok
	case framework.TypeStringSlice, framework.TypeCommaStringSlice:
		list, ok := v.([]any)
		for _, item := range list {
			if _, isString := item.(string); !isString {
				return false
			}
		}
		return ok
	case framework.TypeSlice:
		_, ok := v.([]any)
		return ok
	case framework.TypeMap:
		_, ok := v.(map[string]any)
		return ok
	case framework.TypeKVPairs:
		m, ok := v.(map[string]any)
		for _, item := range m {
			if _, isString := item.(string); !isString {
				return false
			}
		}
		return ok
	}
	return true // other types: the framework's conversion decides
}

// requireRawDeclared checks that a raw-body answer's status and media type
// are among the responses its operation declares. Non-2xx raw answers
// (coded errors) are not checked, as schema.ValidateResponse skips them.
func requireRawDeclared(t *testing.T, route *framework.Path, op logical.Operation, resp *logical.Response) {
	t.Helper()
	status := http.StatusOK
	if s, ok := resp.Data[logical.HTTPStatusCode].(int); ok {
		status = s
	}
	if status < 200 || status > 299 {
		return
	}
	contentType, _ := resp.Data[logical.HTTPContentType].(string)
	mediaType, _, err := mime.ParseMediaType(contentType)
	require.NoError(t, err, "%s %s: raw answer with content type %q", op, route.Pattern, contentType)
	handler, ok := route.Operations[op]
	require.True(t, ok, "%s %s: no such operation", op, route.Pattern)
	for _, r := range handler.Properties().Responses[status] {
		if r.MediaType == mediaType {
			return
		}
	}
	t.Fatalf("%s %s: raw %d answer of media type %s is not declared in the operation's Responses", op, route.Pattern, status, mediaType)
}

// openAPIDoc is the engine's OpenAPI document as Vault's
// sys/internal/specs/openapi sees it: the root help answer, sent over the
// plugin transport (JSON) and decoded with framework.NewOASDocumentFromMap,
// as Vault does for an external plugin.
func openAPIDoc(t *testing.T) *framework.OASDocument {
	t.Helper()
	e := newTestBackend(t)
	e.sys.PluginEnvironment = &logical.PluginEnvironment{VaultVersion: "test"}
	resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.HelpOperation, Path: "", Storage: e.storage,
		Data: map[string]any{"requestResponsePrefix": "nebula"},
	})
	require.NoError(t, err)
	raw, err := json.Marshal(resp.Data["openapi"])
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	doc, err := framework.NewOASDocumentFromMap(m)
	require.NoError(t, err)
	return doc
}

// TestEveryOperationDeclaresResponses checks the declarations themselves:
// every operation declares its responses, every get and post answers a 200
// with a schema in the OpenAPI document as Vault publishes it (schemas
// inline: Vault drops "$ref"s of external plugins), and operation ids are
// unique.
func TestEveryOperationDeclaresResponses(t *testing.T) {
	e := newTestBackend(t)
	for _, p := range e.b.Paths {
		for op, h := range p.Operations {
			responses := h.Properties().Responses
			require.NotEmpty(t, responses, "%s %s declares no Responses", op, p.Pattern)
			for code, list := range responses {
				for _, r := range list {
					require.NotEmpty(t, r.Description, "%s %s: response %d has no description", op, p.Pattern, code)
					for name, f := range r.Fields {
						require.NotEmpty(t, f.Description, "%s %s: response field %q has no description", op, p.Pattern, name)
					}
				}
			}
			if op == logical.DeleteOperation {
				require.Contains(t, responses, http.StatusNoContent, "%s %s answers no data", op, p.Pattern)
			}
		}
	}

	doc := openAPIDoc(t)
	ids := map[string]string{}
	paths := make([]string, 0, len(doc.Paths))
	for path := range doc.Paths {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	for _, path := range paths {
		item := doc.Paths[path]
		for method, op := range map[string]*framework.OASOperation{"get": item.Get, "post": item.Post, "delete": item.Delete} {
			if op == nil {
				continue
			}
			where := method + " " + path
			require.NotEmpty(t, op.OperationID, where)
			require.True(t, strings.HasPrefix(op.OperationID, "nebula-"), "%s: operation id %s", where, op.OperationID)
			require.NotContains(t, ids, op.OperationID, "%s: operation id %s is also %s", where, op.OperationID, ids[op.OperationID])
			ids[op.OperationID] = where
			if method == "delete" {
				continue
			}
			ok := op.Responses[http.StatusOK]
			require.NotNil(t, ok, "%s has no 200 response", where)
			media := ok.Content["application/json"]
			require.NotNil(t, media, "%s: the 200 response has no application/json content", where)
			require.NotNil(t, media.Schema, "%s: the 200 response has no schema", where)
			require.NotEmpty(t, media.Schema.Properties, "%s: the 200 response's schema has no properties (a $ref Vault dropped?)", where)
		}
	}
	list := make([]string, 0, len(ids))
	for id, where := range ids {
		list = append(list, id+" ("+where+")")
	}
	sort.Strings(list)
	t.Logf("%d operation ids:\n%s", len(ids), strings.Join(list, "\n"))
}

// TestRawAnswersMustBeDeclared checks the raw-body branch of the
// validation: a declared media type passes (parameters ignored).
func TestRawAnswersMustBeDeclared(t *testing.T) {
	e := newTestBackend(t)
	route := e.b.Route("metrics")
	requireRawDeclared(t, route, logical.ReadOperation, &logical.Response{Data: map[string]any{
		logical.HTTPStatusCode:  http.StatusOK,
		logical.HTTPContentType: "text/plain; version=0.0.4; charset=utf-8",
		logical.HTTPRawBody:     []byte("# TYPE nebula_token_reads_total counter\n"),
	}})
}

// TestResponsesOfRarelyReadPaths sends the operations no other path test
// reads through the validating request helper: mirror target reads and
// deletes, rotation policy deletes.
func TestResponsesOfRarelyReadPaths(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.UpdateOperation, "mirror/aws", map[string]any{"region": "eu-west-1"})
	require.Equal(t, false, e.mustRequest(t, logical.ReadOperation, "mirror/aws", nil).Data["secret_key_set"])
	require.Nil(t, e.mustRequest(t, logical.DeleteOperation, "mirror/aws", nil))
	e.mustRequest(t, logical.UpdateOperation, "mirror/azure", map[string]any{"vault_url": "https://example.vault.azure.net/"})
	require.Equal(t, false, e.mustRequest(t, logical.ReadOperation, "mirror/azure", nil).Data["client_secret_set"])

	createScheduled(t, e, "g")
	require.Nil(t, e.mustRequest(t, logical.DeleteOperation, "creds/g/rotation", nil))
	require.EqualValues(t, 0, e.mustRequest(t, logical.ReadOperation, "creds/g/rotation", nil).Data["interval"])
}
