package mirrortest

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// The fixed identity of the Azure fake.
const (
	azureTenant       = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	azureClientID     = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
	azureClientSecret = "right-client-secret"
	azureToken        = "fake-access-token"
)

// Azure is an Azure Key Vault secrets endpoint (REST over TLS) on loopback,
// with the vault's challenge authentication: a request without a bearer
// token gets 401 and a WWW-Authenticate challenge naming the tenant
// (TenantID) and resource "https://vault.azure.net"; other requests must
// carry "Bearer " + Token. It also serves an Entra ID authority for the
// tenant whose token endpoint accepts ClientID and ClientSecret.
//
// It implements SetSecret, GetSecret (newest or by version),
// UpdateSecretProperties (tags), DeleteSecret (always a soft delete),
// GetDeletedSecret and RecoverDeletedSecret. Secret names compare
// case-insensitively, as in Key Vault. Setting a secret that is
// soft-deleted answers 409 Conflict.
type Azure struct {
	server *server

	mu         sync.Mutex
	secrets    map[string]*azureSecret // live, by lower-case name; guarded by mu
	deleted    map[string]*azureSecret // soft-deleted, by lower-case name; guarded by mu
	recovering map[string]int          // lower-case name -> GETs still answered 404 after a recover; guarded by mu
	recoverLag int                     // GETs a recovery takes; guarded by mu
	calls      []string                // "METHOD /path" of authorized requests; guarded by mu
	challenges int                     // 401 challenges sent; guarded by mu
	fail       func(method, path string) int
	tokenForms []url.Values // token requests received; guarded by mu
}

// azureSecret is a stored secret: its name as first set and its versions,
// oldest first.
type azureSecret struct {
	name     string
	versions []azureVersion
}

// azureVersion is one version of a secret; its fields mirror AzureSecret.
type azureVersion struct {
	id, value, contentType string
	tags                   map[string]string
}

// AzureSecret is a snapshot of one version of a secret held by the Azure
// fake.
type AzureSecret struct {
	Name        string
	VersionID   string // Key Vault's version ("v1", "v2", ...)
	Value       string
	ContentType string
	Tags        map[string]string
}

// EngineVersion returns the engine version tag (mirror.AzureTagVersion,
// "nebula-version") of the secret version; "" when it has none.
func (s AzureSecret) EngineVersion() string { return s.Tags[azureTagVersion] }

// Credential returns the ownership tag (mirror.AzureTagCredential,
// "nebula-credential"): the credential the secret mirrors; "" when it has
// none.
func (s AzureSecret) Credential() string { return s.Tags[azureTagCredential] }

// NewAzure starts an Azure fake on 127.0.0.1 over TLS. It stops when the
// test ends.
func NewAzure(tb testing.TB) *Azure {
	tb.Helper()
	f := &Azure{
		secrets:    map[string]*azureSecret{},
		deleted:    map[string]*azureSecret{},
		recovering: map[string]int{},
	}
	f.server = newServer(tb, http.HandlerFunc(f.serveHTTP), true)
	return f
}

// URL returns the vault URL ("https://127.0.0.1:port"), which is also the
// Entra authority host; it stays the same while the fake is stopped.
func (f *Azure) URL() string { return f.server.url() }

// Client returns an HTTP client trusting the fake's certificate, with a
// transport of its own. It is a policy.Transporter.
func (f *Azure) Client() *http.Client { return f.server.client() }

// ClientOptions returns new client options for the fake: Client as the
// transport, the fake as Entra authority host (for client secret
// credentials), challenge resource verification off (the vault is not
// under vault.azure.net) and no SDK retries, so a failure is seen at once.
func (f *Azure) ClientOptions() *azsecrets.ClientOptions {
	return &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: f.URL() + "/"},
			Transport: f.Client(),
			Retry:     policy.RetryOptions{MaxRetries: -1},
		},
		DisableChallengeResourceVerification: true,
	}
}

// Credential returns a new credential that gets the token the fake accepts
// without any network request.
func (f *Azure) Credential() *StaticCredential { return NewStaticCredential(azureToken) }

// Token returns the bearer token the fake accepts.
func (f *Azure) Token() string { return azureToken }

// TenantID returns the tenant the fake's challenge names and whose token
// endpoint it serves.
func (f *Azure) TenantID() string { return azureTenant }

// ClientID returns a client ID for client secret credentials; the token
// endpoint records but does not check it.
func (f *Azure) ClientID() string { return azureClientID }

// ClientSecret returns the only client secret the token endpoint accepts.
func (f *Azure) ClientSecret() string { return azureClientSecret }

// Connections returns how many connections the fake accepted, counted before
// any TLS handshake: zero means nothing reached it.
func (f *Azure) Connections() int { return f.server.connections() }

// Stop takes the fake down: its listener and every connection are closed,
// and so are the idle connections of the clients from Client (and
// ClientOptions), so their requests fail with connection refused. Its
// secrets are kept.
func (f *Azure) Stop() { f.server.stop() }

// Start brings a stopped fake up again on the same address.
func (f *Azure) Start() { f.server.start() }

// FailWith makes the fake answer each authorized vault request for which fn,
// given its method and URL path (e.g. "PUT", "/secrets/nebula-api-key"),
// returns a non-zero status with that status, instead of running it. The
// error message echoes the request body, which must never reach an error of
// the caller. nil restores normal operation.
func (f *Azure) FailWith(fn func(method, path string) (status int)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

// SetRecoverLag makes each RecoverDeletedSecret take n GETs: the next n
// GetSecret requests for the recovered secret answer 404 as a real vault
// does while the recovery completes. The default is 0.
func (f *Azure) SetRecoverLag(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recoverLag = n
}

// CompleteRecovery ends a pending recovery of the secret name at once.
func (f *Azure) CompleteRecovery(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.recovering, strings.ToLower(name))
}

// Secret returns the newest version of the live secret name.
func (f *Azure) Secret(name string) (AzureSecret, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snapshot(f.secrets[strings.ToLower(name)])
}

// DeletedSecret returns the newest version of the soft-deleted secret name.
func (f *Azure) DeletedSecret(name string) (AzureSecret, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snapshot(f.deleted[strings.ToLower(name)])
}

// snapshot returns a copy of the newest version of s; f.mu is held.
func (f *Azure) snapshot(s *azureSecret) (AzureSecret, bool) {
	if s == nil || len(s.versions) == 0 {
		return AzureSecret{}, false
	}
	v := s.versions[len(s.versions)-1]
	return AzureSecret{Name: s.name, VersionID: v.id, Value: v.value, ContentType: v.contentType,
		Tags: maps.Clone(v.tags)}, true
}

// Versions returns how many versions the live secret name has.
func (f *Azure) Versions(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.secrets[strings.ToLower(name)]; s != nil {
		return len(s.versions)
	}
	return 0
}

// AddSecret stores s as a new version of a live secret, as if set by other
// tooling, without a request. VersionID defaults to "v" + the version count.
func (f *Azure) AddSecret(s AzureSecret) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.add(f.secrets, s)
}

// AddDeletedSecret stores s as a new version of a soft-deleted secret, as if
// set and deleted by other tooling.
func (f *Azure) AddDeletedSecret(s AzureSecret) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.add(f.deleted, s)
}

// add appends s to the secret in store; f.mu is held.
func (f *Azure) add(store map[string]*azureSecret, s AzureSecret) {
	key := strings.ToLower(s.Name)
	stored := store[key]
	if stored == nil {
		stored = &azureSecret{name: s.Name}
		store[key] = stored
	}
	stored.versions = append(stored.versions, azureVersion{id: s.VersionID, value: s.Value,
		contentType: s.ContentType, tags: maps.Clone(s.Tags)})
	if s.VersionID == "" {
		stored.versions[len(stored.versions)-1].id = versionID(len(stored.versions))
	}
}

// SetTag sets a tag on the newest version of the live secret name, as a
// policy or an operator would, without a request. It reports whether the
// secret exists.
func (f *Azure) SetTag(name, key, value string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.secrets[strings.ToLower(name)]
	if s == nil || len(s.versions) == 0 {
		return false
	}
	v := &s.versions[len(s.versions)-1]
	if v.tags == nil {
		v.tags = map[string]string{}
	}
	v.tags[key] = value
	return true
}

// Names returns the names of the live secrets, as first set, sorted.
func (f *Azure) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := make([]string, 0, len(f.secrets))
	for _, s := range f.secrets {
		names = append(names, s.name)
	}
	slices.Sort(names)
	return names
}

// Calls returns the authorized vault requests so far, in order, each as
// "METHOD /path" (e.g. "GET /secrets/nebula-api-key/"). Challenged requests,
// token requests and requests failed by FailWith are not included.
func (f *Azure) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// ResetCalls forgets the requests recorded so far.
func (f *Azure) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

// Challenges returns how many requests without a token got a 401 challenge.
func (f *Azure) Challenges() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.challenges
}

// TokenRequests returns the forms posted to the Entra token endpoint, in
// order.
func (f *Azure) TokenRequests() []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	forms := make([]url.Values, len(f.tokenForms))
	for i, form := range f.tokenForms {
		forms[i] = maps.Clone(form)
	}
	return forms
}
