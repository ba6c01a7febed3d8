package nebula

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/mirror"
	"github.com/nebula-credential/nebula-credential/mirror/mirrortest"
)

// mirrorEnv is a backend with both mirror targets configured against
// loopback fakes, reached through the real AWS and Azure SDK clients.
type mirrorEnv struct {
	*testEnv
	aws   *mirrortest.AWS
	azure *mirrortest.Azure
}

func newMirrorEnv(tb testing.TB) *mirrorEnv {
	tb.Helper()
	e := &mirrorEnv{testEnv: newTestBackend(tb), aws: mirrortest.NewAWS(tb), azure: mirrortest.NewAzure(tb)}
	// The fakes listen on loopback: AWS over http, Azure over https.
	e.mustRequest(tb, logical.UpdateOperation, "config", map[string]any{
		"insecure_http_hosts": "127.0.0.1", "allowed_hosts": "127.0.0.1"})
	e.b.upstreamRoots = e.azure.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	// Azure needs a token credential that needs no network and the fake's
	// client options; requests go through the engine's client, as with the
	// real targets. The stored config is used as written.
	e.b.mirrorFactory = func(name string, cfg *targetConfig, client *http.Client) (mirror.Target, error) {
		if name == mirror.NameAzure {
			opts := e.azure.ClientOptions()
			opts.Transport = client
			return mirror.NewAzure(*cfg.Azure, e.azure.Credential(), opts)
		}
		return newTarget(name, cfg, client)
	}
	resp := e.mustRequest(tb, logical.UpdateOperation, "mirror/aws", map[string]any{
		"region": e.aws.Region(), "endpoint": e.aws.URL(), "access_key": e.aws.AccessKey(), "secret_key": e.aws.SecretKey(),
	})
	require.NotContains(tb, resp.Data, "secret_key")
	require.Equal(tb, true, resp.Data["secret_key_set"])
	e.mustRequest(tb, logical.UpdateOperation, "mirror/azure", map[string]any{"vault_url": e.azure.URL()})
	return e
}

// mirrored decodes the document a target holds for a credential.
func mirrored(tb testing.TB, value string) map[string]any {
	tb.Helper()
	var doc map[string]any
	require.NoError(tb, json.Unmarshal([]byte(value), &doc))
	return doc
}

func (e *mirrorEnv) awsDoc(tb testing.TB, name string) map[string]any {
	tb.Helper()
	s, ok := e.aws.Secret("nebula/" + name)
	require.True(tb, ok, "aws has nebula/%s", name)
	return mirrored(tb, s.Value)
}

func (e *mirrorEnv) azureDoc(tb testing.TB, name string) map[string]any {
	tb.Helper()
	s, ok := e.azure.Secret("nebula-" + name)
	require.True(tb, ok, "azure has nebula-%s", name)
	return mirrored(tb, s.Value)
}

func fieldOf(doc map[string]any, field string) any {
	return doc["fields"].(map[string]any)[field]
}

func TestMirrorLifecycle(t *testing.T) {
	e := newMirrorEnv(t)
	e.mustRequest(t, logical.CreateOperation, "creds/stripe", map[string]any{
		"type": "api_key", "api_key": "key-v1", "mirror": "aws,azure"})
	require.Equal(t, "key-v1", fieldOf(e.awsDoc(t, "stripe"), "api_key"))
	require.Equal(t, "key-v1", fieldOf(e.azureDoc(t, "stripe"), "api_key"))

	e.mustRequest(t, logical.UpdateOperation, "creds/stripe", map[string]any{"api_key": "key-v2"})
	require.Equal(t, "key-v2", fieldOf(e.awsDoc(t, "stripe"), "api_key"))
	e.clock.Advance(time.Second)
	e.mustRequest(t, logical.UpdateOperation, "rotate/stripe", map[string]any{"api_key": "key-v3"})
	require.Equal(t, "key-v3", fieldOf(e.awsDoc(t, "stripe"), "api_key"))
	require.Equal(t, "key-v3", fieldOf(e.azureDoc(t, "stripe"), "api_key"))
	require.EqualValues(t, 3, e.azureDoc(t, "stripe")["version"])

	status := e.mustRequest(t, logical.ReadOperation, "mirror/status", nil).Data["status"].([]map[string]any)
	require.Len(t, status, 2)
	for _, st := range status {
		require.Equal(t, "synced", st["sync_status"], "%v", st)
	}

	e.mustRequest(t, logical.DeleteOperation, "creds/stripe", nil)
	require.Empty(t, e.aws.Names())
	require.Empty(t, e.azure.Names())
	require.Empty(t, e.mustRequest(t, logical.ReadOperation, "mirror/status", nil).Data["status"])
}

func TestMirrorTargetDownThenUp(t *testing.T) {
	e := newMirrorEnv(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", map[string]any{"type": "api_key", "api_key": "v1", "mirror": "aws"})
	e.aws.Stop()

	// Two changes while the target is down: both writes succeed in Vault.
	e.clock.Advance(time.Second)
	e.mustRequest(t, logical.UpdateOperation, "creds/k", map[string]any{"api_key": "v2"})
	e.clock.Advance(time.Second)
	e.mustRequest(t, logical.UpdateOperation, "creds/k", map[string]any{"api_key": "v3"})
	status := e.mustRequest(t, logical.ReadOperation, "mirror/status", nil).Data["status"].([]map[string]any)
	require.Equal(t, "error", status[0]["sync_status"])
	require.NotEmpty(t, status[0]["last_error"])
	require.NotContains(t, status[0]["last_error"], "v3", "no content in errors")
	health := e.mustRequest(t, logical.ReadOperation, "health", nil)
	require.Equal(t, "degraded", health.Data["status"])
	require.Equal(t, "mirror_error", health.Data["issues"].([]map[string]any)[0]["kind"])

	e.aws.Start()
	e.runPeriodic(t)
	require.Equal(t, "v1", fieldOf(e.awsDoc(t, "k"), "api_key"), "no retry before the backoff ends")
	e.clock.Advance(mirrorRetryMin + time.Second)
	e.runPeriodic(t)
	require.Equal(t, "v3", fieldOf(e.awsDoc(t, "k"), "api_key"), "the latest version, no lost update")
	status = e.mustRequest(t, logical.ReadOperation, "mirror/status", nil).Data["status"].([]map[string]any)
	require.Equal(t, "synced", status[0]["sync_status"])
	require.Equal(t, "healthy", e.mustRequest(t, logical.ReadOperation, "health", nil).Data["status"])
}

func TestMirrorTokenContent(t *testing.T) {
	e := newMirrorEnv(t)
	e.mustRequest(t, logical.CreateOperation, "creds/b", map[string]any{
		"type": "basic_auth", "username": "u", "password": "p", "mirror": "azure", "mirror_content": "token"})
	doc := e.azureDoc(t, "b")
	require.Equal(t, "Basic dTpw", doc["header_value"])
	require.Equal(t, "p", doc["access_token"])
	require.NotContains(t, doc, "fields")
}

func TestMirrorInputValidation(t *testing.T) {
	e := newMirrorEnv(t)
	_, err := e.request(t, logical.CreateOperation, "creds/x", map[string]any{"type": "api_key", "api_key": "k", "mirror": "gcp"})
	requireKind(t, err, KindInvalidInput, "gcp")
	_, err = e.request(t, logical.CreateOperation, "creds/x", map[string]any{"type": "api_key", "api_key": "k", "mirror": "aws", "mirror_content": "both"})
	requireKind(t, err, KindInvalidInput, "mirror_content")
	e.mustRequest(t, logical.DeleteOperation, "mirror/azure", nil)
	_, err = e.request(t, logical.CreateOperation, "creds/x", map[string]any{"type": "api_key", "api_key": "k", "mirror": "azure"})
	requireKind(t, err, KindInvalidInput, "not configured")
	_, err = e.request(t, logical.UpdateOperation, "mirror/aws", map[string]any{"region": "nowhere"})
	requireKind(t, err, KindInvalidInput, "region")

	// Dropping a target deletes the copy there.
	e.mustRequest(t, logical.CreateOperation, "creds/y", map[string]any{"type": "api_key", "api_key": "k", "mirror": "aws"})
	require.Len(t, e.aws.Names(), 1)
	e.mustRequest(t, logical.UpdateOperation, "creds/y", map[string]any{"mirror": ""})
	require.Empty(t, e.aws.Names())
}

func TestMirrorPendingSurvivesAnInterruptedWrite(t *testing.T) {
	e := newMirrorEnv(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", map[string]any{"type": "api_key", "api_key": "v1", "mirror": "aws"})
	// An engine that stopped between the credential write and the mirror
	// write leaves the pending mark; the next periodic run writes it.
	c, err := loadCredential(t.Context(), e.storage, "k")
	require.NoError(t, err)
	e.b.markMirrorPending(t.Context(), e.storage, c)
	status := e.mustRequest(t, logical.ReadOperation, "mirror/status", nil).Data["status"].([]map[string]any)
	require.Equal(t, "pending", status[0]["sync_status"])
	e.runPeriodic(t)
	status = e.mustRequest(t, logical.ReadOperation, "mirror/status", nil).Data["status"].([]map[string]any)
	require.Equal(t, "synced", status[0]["sync_status"])
}

// TestStartingToMirrorNeedsTheSecret: a write that copies a credential to a
// new mirror target, or switches its targets from the token to the secret
// fields, must carry the secret it would send, as an endpoint change must
// (before, an update with only mirror=aws copied the stored api_key to AWS).
// Dropping a target needs nothing.
func TestStartingToMirrorNeedsTheSecret(t *testing.T) {
	e := newMirrorEnv(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", map[string]any{"type": "api_key", "api_key": "k-SECRET-1"})

	_, err := e.request(t, logical.UpdateOperation, "creds/k", map[string]any{"mirror": "aws"})
	requireKind(t, err, KindInvalidInput, `"aws"`, `"api_key"`)
	require.NotContains(t, err.Error(), "k-SECRET-1")
	require.Empty(t, e.aws.Names(), "nothing copied")
	require.Empty(t, e.mustRequest(t, logical.ReadOperation, "creds/k", nil).Data["mirror"], "nothing changed")
	batch := e.mustRequest(t, logical.UpdateOperation, "batch/create", map[string]any{
		"items": []any{map[string]any{"name": "k", "mirror": "aws"}}}).Data
	require.EqualValues(t, 1, batch["failed"], "a batch item is held to the same rule: %v", batch)
	require.Contains(t, batch["results"].([]map[string]any)[0]["error"], `"api_key"`)
	require.Empty(t, e.aws.Names())

	e.mustRequest(t, logical.UpdateOperation, "creds/k", map[string]any{"mirror": "aws", "api_key": "k-SECRET-1"})
	require.Equal(t, "k-SECRET-1", fieldOf(e.awsDoc(t, "k"), "api_key"))
	require.EqualValues(t, 1, e.mustRequest(t, logical.ReadOperation, "creds/k", nil).Data["version"], "the same secret is no new version")

	// Adding a second target is a new destination too; keeping the ones
	// it has is not.
	_, err = e.request(t, logical.UpdateOperation, "creds/k", map[string]any{"mirror": "aws,azure"})
	requireKind(t, err, KindInvalidInput, `"azure"`)
	e.mustRequest(t, logical.UpdateOperation, "creds/k", map[string]any{"mirror": "aws", "description": "kept"})

	// From the token to the secret fields on the same targets.
	e.mustRequest(t, logical.CreateOperation, "creds/b", map[string]any{
		"type": "basic_auth", "username": "u", "password": "p-SECRET-1", "mirror": "azure", "mirror_content": "token"})
	_, err = e.request(t, logical.UpdateOperation, "creds/b", map[string]any{"mirror_content": "secret"})
	requireKind(t, err, KindInvalidInput, "mirror_content=secret", `"password"`)
	e.mustRequest(t, logical.UpdateOperation, "creds/b", map[string]any{"mirror_content": "secret", "password": "p-SECRET-1"})

	// Dropping targets needs no secret.
	e.mustRequest(t, logical.UpdateOperation, "creds/k", map[string]any{"mirror": ""})
	require.Empty(t, e.aws.Names())
}
