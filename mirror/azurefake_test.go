package mirror

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

const (
	fakeTenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	fakeClientID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
	fakeToken    = "fake-access-token"
)

// kvFake is an Azure Key Vault secrets endpoint (REST, TLS) on loopback,
// with the vault's challenge authentication: a request without a bearer
// token gets 401 and a WWW-Authenticate challenge naming the tenant and
// resource; other requests must carry "Bearer " + token. It also serves an
// Entra ID token endpoint for client secret credentials.
type kvFake struct {
	tb     testing.TB
	server *loopbackServer
	token  string

	mu         sync.Mutex
	secrets    map[string][]kvFakeVersion // by lower-case name (names compare case-insensitively); guarded by mu
	deleted    map[string][]kvFakeVersion // soft-deleted secrets; guarded by mu
	recovering map[string]int             // name -> GETs still answered 404 after a recover; guarded by mu
	recoverLag int                        // GETs a recovery takes
	calls      []string                   // "METHOD /path" of authorized requests
	challenges int                        // 401 challenges sent
	fail       func(method, path string) int
	tokenForms []url.Values // token requests received
}

type kvFakeVersion struct {
	id, value, contentType string
	tags                   map[string]string
}

func newKVFake(tb testing.TB) *kvFake {
	tb.Helper()
	f := &kvFake{
		tb:         tb,
		token:      fakeToken,
		secrets:    map[string][]kvFakeVersion{},
		deleted:    map[string][]kvFakeVersion{},
		recovering: map[string]int{},
	}
	f.server = newLoopbackServer(tb, http.HandlerFunc(f.serveHTTP), true)
	return f
}

func (f *kvFake) failWith(fn func(method, path string) int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

// current returns the newest version of a live secret.
func (f *kvFake) current(name string) (kvFakeVersion, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	vs := f.secrets[strings.ToLower(name)]
	if len(vs) == 0 {
		return kvFakeVersion{}, false
	}
	return vs[len(vs)-1], true
}

func (f *kvFake) versions(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.secrets[strings.ToLower(name)])
}

func (f *kvFake) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *kvFake) resetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

func (f *kvFake) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/"+fakeTenant+"/") {
		f.serveEntra(w, r)
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		kvFakeError(w, http.StatusBadRequest, "BadParameter", "api-version missing")
		return
	}
	switch auth := r.Header.Get("Authorization"); {
	case auth == "":
		f.mu.Lock()
		f.challenges++
		f.mu.Unlock()
		f.challenge(w, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	case auth != "Bearer "+f.token:
		f.challenge(w, "Unauthorized", "AKV10032: Invalid issuer.")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		if status := f.fail(r.Method, r.URL.Path); status != 0 {
			// An upstream message echoing the request body.
			kvFakeError(w, status, http.StatusText(status), "upstream failed on "+string(body))
			return
		}
	}
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	out, status := f.dispatch(r, body)
	if status != http.StatusOK {
		kvFakeError(w, status, kvFakeCodes[status], "upstream says no")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

var kvFakeCodes = map[int]string{404: "SecretNotFound", 409: "Conflict", 400: "BadParameter"}

func (f *kvFake) challenge(w http.ResponseWriter, code, msg string) {
	w.Header().Set("WWW-Authenticate",
		`Bearer authorization="https://login.microsoftonline.com/`+fakeTenant+`", resource="https://vault.azure.net"`)
	kvFakeError(w, http.StatusUnauthorized, code, msg)
}

func kvFakeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// dispatch serves one Key Vault operation; f.mu is held.
func (f *kvFake) dispatch(r *http.Request, body []byte) (any, int) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if len(parts) < 2 {
		return nil, http.StatusBadRequest
	}
	kind, name := parts[0], parts[1]
	key := strings.ToLower(name)
	version := ""
	if len(parts) > 2 {
		version = parts[2]
	}
	switch {
	case kind == "secrets" && r.Method == http.MethodPut:
		if _, gone := f.deleted[key]; gone {
			return nil, http.StatusConflict // deleted but recoverable
		}
		var in struct {
			Value       string            `json:"value"`
			ContentType string            `json:"contentType"`
			Tags        map[string]string `json:"tags"`
		}
		if err := json.Unmarshal(body, &in); err != nil || in.Value == "" {
			return nil, http.StatusBadRequest
		}
		v := kvFakeVersion{id: fmt.Sprintf("v%d", len(f.secrets[key])+1), value: in.Value, contentType: in.ContentType, tags: in.Tags}
		f.secrets[key] = append(f.secrets[key], v)
		return f.bundle(r.Host, name, v), http.StatusOK
	case kind == "secrets" && r.Method == http.MethodGet:
		v, ok := f.version(key, version)
		if !ok {
			return nil, http.StatusNotFound
		}
		return f.bundle(r.Host, name, v), http.StatusOK
	case kind == "secrets" && r.Method == http.MethodPatch:
		vs := f.secrets[key]
		for i := range vs {
			if vs[i].id == version {
				var in struct {
					Tags map[string]string `json:"tags"`
				}
				if err := json.Unmarshal(body, &in); err != nil {
					return nil, http.StatusBadRequest
				}
				vs[i].tags = in.Tags
				return f.bundle(r.Host, name, vs[i]), http.StatusOK
			}
		}
		return nil, http.StatusNotFound
	case kind == "secrets" && r.Method == http.MethodDelete:
		vs, ok := f.secrets[key]
		if !ok {
			return nil, http.StatusNotFound
		}
		delete(f.secrets, key)
		f.deleted[key] = vs
		out := f.bundle(r.Host, name, vs[len(vs)-1])
		out["recoveryId"] = "https://" + r.Host + "/deletedsecrets/" + name
		out["deletedDate"] = time.Now().Unix()
		return out, http.StatusOK
	case kind == "deletedsecrets" && r.Method == http.MethodGet:
		vs, ok := f.deleted[key]
		if !ok {
			return nil, http.StatusNotFound
		}
		return f.bundle(r.Host, name, vs[len(vs)-1]), http.StatusOK
	case kind == "deletedsecrets" && r.Method == http.MethodPost && version == "recover":
		vs, ok := f.deleted[key]
		if !ok {
			return nil, http.StatusNotFound
		}
		delete(f.deleted, key)
		f.secrets[key] = vs
		f.recovering[key] = f.recoverLag
		return f.bundle(r.Host, name, vs[len(vs)-1]), http.StatusOK
	}
	return nil, http.StatusBadRequest
}

// version finds a live version ("" = newest); a secret being recovered is
// not found yet.
func (f *kvFake) version(key, version string) (kvFakeVersion, bool) {
	if f.recovering[key] > 0 {
		f.recovering[key]--
		return kvFakeVersion{}, false
	}
	vs := f.secrets[key]
	if len(vs) == 0 {
		return kvFakeVersion{}, false
	}
	if version == "" {
		return vs[len(vs)-1], true
	}
	for _, v := range vs {
		if v.id == version {
			return v, true
		}
	}
	return kvFakeVersion{}, false
}

func (f *kvFake) bundle(host, name string, v kvFakeVersion) map[string]any {
	return map[string]any{
		"id":          "https://" + host + "/secrets/" + name + "/" + v.id,
		"value":       v.value,
		"contentType": v.contentType,
		"tags":        v.tags,
		"attributes":  map[string]any{"enabled": true, "recoveryLevel": "Recoverable+Purgeable"},
	}
}

// serveEntra is a minimal Entra ID authority for the tenant: OpenID
// configuration and a client credentials token endpoint.
func (f *kvFake) serveEntra(w http.ResponseWriter, r *http.Request) {
	base := "https://" + r.Host + "/" + fakeTenant
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration"):
		_ = json.NewEncoder(w).Encode(map[string]any{
			"token_endpoint":         base + "/oauth2/v2.0/token",
			"authorization_endpoint": base + "/oauth2/v2.0/authorize",
			"issuer":                 base + "/v2.0",
		})
	case strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token"):
		if err := r.ParseForm(); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.tokenForms = append(f.tokenForms, r.PostForm)
		f.mu.Unlock()
		if r.PostForm.Get("client_secret") != "right-client-secret" {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]any{
				"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.",
			})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"access_token": f.token, "token_type": "Bearer", "expires_in": 3600,
		})
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// fixedCredential is an azcore.TokenCredential returning a fixed token and
// recording what was asked for; it needs no network.
type fixedCredential struct {
	token string

	mu       sync.Mutex
	requests []policy.TokenRequestOptions // guarded by mu
}

func (c *fixedCredential) GetToken(_ context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = append(c.requests, opts)
	return azcore.AccessToken{Token: c.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}
