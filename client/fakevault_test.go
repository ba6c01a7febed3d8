package client_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/nebula-credential/nebula-credential/client"
)

// loopVault is a loopback server speaking Vault's HTTP API: answer decides
// each response; requests records every request it saw.
type loopVault struct {
	*httptest.Server
	mu       sync.Mutex // guards requests
	requests []loopRequest
}

// loopRequest is one request a loopVault saw.
type loopRequest struct {
	Method, Path string
	Header       http.Header
	Body         []byte
}

// loopAnswer is what a loopVault handler answers: a status and a body.
type loopAnswer struct {
	Status int
	Body   string
}

// newLoopVault starts a loopVault on 127.0.0.1 whose answers come from
// answer, called with the request's number (from 1) and the request.
func newLoopVault(t *testing.T, answer func(n int, r loopRequest) loopAnswer) *loopVault {
	t.Helper()
	lv := &loopVault{}
	lv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		req := loopRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
		lv.mu.Lock()
		lv.requests = append(lv.requests, req)
		n := len(lv.requests)
		lv.mu.Unlock()
		a := answer(n, req)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.Status)
		_, _ = io.WriteString(w, a.Body)
	}))
	t.Cleanup(lv.Close)
	return lv
}

// Requests returns a copy of the requests seen so far.
func (lv *loopVault) Requests() []loopRequest {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	return append([]loopRequest(nil), lv.requests...)
}

// client returns a client of the loopVault with Vault's retries off.
func (lv *loopVault) client(t *testing.T, opts ...client.Option) *client.Client {
	t.Helper()
	vc, err := api.NewClient(&api.Config{Address: lv.URL, HttpClient: &http.Client{}, MaxRetries: 0})
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken("test")
	return client.New(vc, opts...)
}

// vaultError is Vault's error body with one message.
func vaultError(status int, msg string) loopAnswer {
	b, _ := json.Marshal(map[string]any{"errors": []string{msg}})
	return loopAnswer{status, string(b)}
}

// vaultData is Vault's response body with data.
func vaultData(data any) loopAnswer {
	b, _ := json.Marshal(map[string]any{"data": data, "warnings": nil})
	return loopAnswer{http.StatusOK, string(b)}
}

// openBaoStringLimit is OpenBao's default listener limit
// max_request_json_strings.
const openBaoStringLimit = 1000

// jsonStrings counts the strings of a JSON document (object keys
// included) as OpenBao's listener does.
func jsonStrings(body []byte) (int, error) {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	n := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if _, ok := tok.(string); ok {
			n++
		}
	}
}

// batchBody is what a batch/create (items) or batch/delete (names) request
// carries, as far as the fake reads it.
type batchBody struct {
	Items []struct {
		Name string `json:"name"`
	} `json:"items"`
	Names []string `json:"names"`
}

func decodeBatch(body []byte) (batchBody, error) {
	var in batchBody
	err := json.Unmarshal(body, &in)
	return in, err
}

// batchAnswer answers a batch/create or batch/delete request as the engine
// does when every item succeeds, refusing bodies over OpenBao's default
// string limit as OpenBao's listener does.
func batchAnswer(_ int, r loopRequest) loopAnswer {
	if n, err := jsonStrings(r.Body); err != nil || n > openBaoStringLimit {
		return vaultError(http.StatusBadRequest, "refused JSON input due to high complexity: exceeded maximum number of strings")
	}
	in, err := decodeBatch(r.Body)
	if err != nil {
		return vaultError(http.StatusBadRequest, "invalid_input: "+err.Error())
	}
	results := []map[string]any{}
	for _, it := range in.Items {
		results = append(results, map[string]any{"name": it.Name, "id": "id-" + it.Name, "version": 1})
	}
	for _, name := range in.Names {
		results = append(results, map[string]any{"name": name, "deleted": true})
	}
	return vaultData(map[string]any{"results": results, "succeeded": len(results), "failed": 0})
}
