package mirrortest

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// serveHTTP answers Entra requests, challenges requests without a valid
// token and runs the vault operation of the others.
func (f *Azure) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/"+azureTenant+"/") {
		f.serveEntra(w, r)
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		azureError(w, http.StatusBadRequest, "BadParameter", "api-version missing")
		return
	}
	switch auth := r.Header.Get("Authorization"); {
	case auth == "":
		f.mu.Lock()
		f.challenges++
		f.mu.Unlock()
		azureChallenge(w, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	case auth != "Bearer "+azureToken:
		azureChallenge(w, "Unauthorized", "AKV10032: Invalid issuer.")
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
			// An upstream message echoing the request body: it must never
			// reach an error message.
			azureError(w, status, http.StatusText(status), "upstream failed on "+string(body))
			return
		}
	}
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	out, status := f.dispatch(r, body)
	if status != http.StatusOK {
		azureError(w, status, azureCodes[status], "upstream says no")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// azureCodes are the error codes of the vault's error answers.
var azureCodes = map[int]string{
	http.StatusNotFound:   "SecretNotFound",
	http.StatusConflict:   "Conflict",
	http.StatusBadRequest: "BadParameter",
}

// azureChallenge answers 401 with the vault's bearer challenge.
func azureChallenge(w http.ResponseWriter, code, msg string) {
	w.Header().Set("WWW-Authenticate",
		`Bearer authorization="https://login.microsoftonline.com/`+azureTenant+`", resource="https://vault.azure.net"`)
	azureError(w, http.StatusUnauthorized, code, msg)
}

// azureError writes a Key Vault error answer.
func azureError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// versionID returns the id of a secret's n-th version.
func versionID(n int) string { return "v" + strconv.Itoa(n) }

// dispatch serves one Key Vault operation; f.mu is held.
func (f *Azure) dispatch(r *http.Request, body []byte) (map[string]any, int) {
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
		return f.set(r.Host, name, body)
	case kind == "secrets" && r.Method == http.MethodGet:
		s, v, ok := f.version(key, version)
		if !ok {
			return nil, http.StatusNotFound
		}
		return azureBundle(r.Host, s.name, *v), http.StatusOK
	case kind == "secrets" && r.Method == http.MethodPatch:
		s := f.secrets[key]
		var v *azureVersion
		for i := 0; s != nil && i < len(s.versions); i++ {
			if s.versions[i].id == version {
				v = &s.versions[i]
			}
		}
		if v == nil {
			return nil, http.StatusNotFound
		}
		var in struct {
			Tags map[string]string `json:"tags"`
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, http.StatusBadRequest
		}
		v.tags = in.Tags
		return azureBundle(r.Host, s.name, *v), http.StatusOK
	case kind == "secrets" && r.Method == http.MethodDelete:
		s, ok := f.secrets[key]
		if !ok {
			return nil, http.StatusNotFound
		}
		delete(f.secrets, key)
		f.deleted[key] = s
		out := azureBundle(r.Host, s.name, s.versions[len(s.versions)-1])
		out["recoveryId"] = "https://" + r.Host + "/deletedsecrets/" + s.name
		out["deletedDate"] = time.Now().Unix()
		return out, http.StatusOK
	case kind == "deletedsecrets" && r.Method == http.MethodGet:
		s, ok := f.deleted[key]
		if !ok {
			return nil, http.StatusNotFound
		}
		return azureBundle(r.Host, s.name, s.versions[len(s.versions)-1]), http.StatusOK
	case kind == "deletedsecrets" && r.Method == http.MethodPost && version == "recover":
		s, ok := f.deleted[key]
		if !ok {
			return nil, http.StatusNotFound
		}
		delete(f.deleted, key)
		f.secrets[key] = s
		f.recovering[key] = f.recoverLag
		return azureBundle(r.Host, s.name, s.versions[len(s.versions)-1]), http.StatusOK
	}
	return nil, http.StatusBadRequest
}

// set serves SetSecret: a new version of name, creating the secret; f.mu is
// held.
func (f *Azure) set(host, name string, body []byte) (map[string]any, int) {
	key := strings.ToLower(name)
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
	s := f.secrets[key]
	if s == nil {
		s = &azureSecret{name: name}
		f.secrets[key] = s
	}
	v := azureVersion{id: versionID(len(s.versions) + 1), value: in.Value, contentType: in.ContentType, tags: in.Tags}
	s.versions = append(s.versions, v)
	return azureBundle(host, s.name, v), http.StatusOK
}

// version finds a version of a live secret ("" = newest); a secret being
// recovered is not found yet. f.mu is held.
func (f *Azure) version(key, version string) (*azureSecret, *azureVersion, bool) {
	if f.recovering[key] > 0 {
		f.recovering[key]--
		return nil, nil, false
	}
	s := f.secrets[key]
	if s == nil || len(s.versions) == 0 {
		return nil, nil, false
	}
	if version == "" {
		return s, &s.versions[len(s.versions)-1], true
	}
	for i := range s.versions {
		if s.versions[i].id == version {
			return s, &s.versions[i], true
		}
	}
	return nil, nil, false
}

// azureBundle returns the SecretBundle of version v of the secret name.
func azureBundle(host, name string, v azureVersion) map[string]any {
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
func (f *Azure) serveEntra(w http.ResponseWriter, r *http.Request) {
	base := "https://" + r.Host + "/" + azureTenant
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
		if r.PostForm.Get("client_secret") != azureClientSecret {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]any{
				"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.",
			})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"access_token": azureToken, "token_type": "Bearer", "expires_in": 3600,
		})
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}
