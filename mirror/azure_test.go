package mirror

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/nebula-credential/nebula-credential/mirror/mirrortest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newAzureTestTarget returns an Azure target on f, with f's client options,
// authenticating with cred (a fixed valid token when nil) and cfg adjusted by
// mutate.
func newAzureTestTarget(tb testing.TB, f *mirrortest.Azure, cred azcore.TokenCredential, mutate ...func(*AzureConfig)) Target {
	tb.Helper()
	if cred == nil {
		cred = f.Credential()
	}
	cfg := AzureConfig{VaultURL: f.URL()}
	for _, m := range mutate {
		m(&cfg)
	}
	target, err := NewAzure(cfg, cred, f.ClientOptions())
	require.NoError(tb, err)
	target.(*azureTarget).pollInterval = time.Millisecond
	return target
}

// azureContractFake adapts mirrortest's Azure fake to targetFake; credential
// name is mirrored as secret nebula-name (the default template; the names
// the contract uses are valid Key Vault names).
type azureContractFake struct{ *mirrortest.Azure }

// newAzureContractFake returns an adapter over a new Azure fake.
func newAzureContractFake(tb testing.TB) azureContractFake {
	return azureContractFake{mirrortest.NewAzure(tb)}
}

// Stored returns the value and version tag of secret nebula-name.
func (f azureContractFake) Stored(name string) (value, version string, ok bool) {
	v, ok := f.Secret("nebula-" + name)
	return v.Value, v.Tags[AzureTagVersion], ok
}

// Lookup returns the GET of secret nebula-name's current version.
func (f azureContractFake) Lookup(name string) string { return "GET /secrets/nebula-" + name + "/" }

// FailWrites makes every PUT answer status.
func (f azureContractFake) FailWrites(status int) {
	f.FailWith(func(method, _ string) int {
		if method == "PUT" {
			return status
		}
		return 0
	})
}

// Throttle makes every request answer 429.
func (f azureContractFake) Throttle() string {
	f.FailWith(func(string, string) int { return 429 })
	return http.StatusText(429)
}

// Heal restores normal answers.
func (f azureContractFake) Heal() { f.FailWith(nil) }

// PlantForeign adds secret nebula-name, tagged for owner unless empty.
func (f azureContractFake) PlantForeign(name, owner, value string) {
	s := mirrortest.AzureSecret{Name: "nebula-" + name, Value: value}
	if owner != "" {
		s.Tags = map[string]string{AzureTagCredential: owner, AzureTagVersion: "1"}
	}
	f.AddSecret(s)
}

// MaxSecretSize is Key Vault's limit.
func (f azureContractFake) MaxSecretSize() int { return azureMaxSecretSize }

// TooLongName returns a name over Key Vault's 127 characters.
func (f azureContractFake) TooLongName() string { return strings.Repeat("n", 130) }

// TestAzureTargetContract runs the contract every target keeps.
func TestAzureTargetContract(t *testing.T) {
	runTargetContract(t, func(tb testing.TB, f azureContractFake) Target { return newAzureTestTarget(tb, f.Azure, nil) }, newAzureContractFake)
}

// A put of the version stored, with the same content and tags, writes no new
// version, also when others added a tag (the AWS target writes it again).
func TestAzureSameVersionRetryWritesNothing(t *testing.T) {
	f := mirrortest.NewAzure(t)
	target := newAzureTestTarget(t, f, nil)
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "ordered", 3, testContent(3)))

	f.ResetCalls()
	require.NoError(t, target.Put(ctx, "ordered", 3, testContent(3)), "a retry is idempotent")
	assert.Equal(t, []string{"GET /secrets/nebula-ordered/"}, f.Calls(), "same version, content and tags: no new version")
	assert.Equal(t, 1, f.Versions("nebula-ordered"))

	require.True(t, f.SetTag("nebula-ordered", "added-by-policy", "yes"))
	require.NoError(t, target.Put(ctx, "ordered", 3, testContent(3)))
	assert.Equal(t, 1, f.Versions("nebula-ordered"), "a tag added by others causes no new version")
}

// A soft-deleted secret of someone else is not recovered.
func TestAzureForeignDeletedSecretIsNotRecovered(t *testing.T) {
	f := mirrortest.NewAzure(t)
	target := newAzureTestTarget(t, f, nil)
	f.AddDeletedSecret(mirrortest.AzureSecret{Name: "nebula-gone", Value: "keep"})

	err := target.Put(context.Background(), "gone", 1, testContent(1))
	assertMirrorError(t, err, KindForeign, false)
	_, ok := f.DeletedSecret("nebula-gone")
	assert.True(t, ok, "still soft-deleted")
}

func TestAzurePutUpdateDelete(t *testing.T) {
	f := mirrortest.NewAzure(t)
	cred := f.Credential()
	target := newAzureTestTarget(t, f, cred, func(c *AzureConfig) { c.Tags = map[string]string{"team": "payments"} })
	ctx := context.Background()
	require.Equal(t, "azure", target.Name())

	require.NoError(t, target.Put(ctx, "api-key", 1, testContent(1)))
	v, ok := f.Secret("nebula-api-key")
	require.True(t, ok, "secret created under the default template")
	assert.Equal(t, string(testContent(1)), v.Value)
	assert.Equal(t, "application/json", v.ContentType)
	assert.Equal(t, map[string]string{"team": "payments", AzureTagCredential: "api-key", AzureTagVersion: "1"}, v.Tags)
	assert.Equal(t, "1", v.EngineVersion(), "mirrortest reads the tag the target writes")
	assert.Equal(t, "api-key", v.Credential(), "mirrortest reads the tag the target writes")

	require.NoError(t, target.Put(ctx, "api-key", 2, testContent(2)))
	v, _ = f.Secret("nebula-api-key")
	assert.Equal(t, string(testContent(2)), v.Value)
	assert.Equal(t, "2", v.Tags[AzureTagVersion])
	assert.Equal(t, 2, f.Versions("nebula-api-key"))

	require.NoError(t, target.Delete(ctx, "api-key"))
	_, ok = f.Secret("nebula-api-key")
	assert.False(t, ok, "secret deleted")
	require.NoError(t, target.Delete(ctx, "api-key"), "deleting a missing secret succeeds")

	assert.Equal(t, []string{
		"GET /secrets/nebula-api-key/", "PUT /secrets/nebula-api-key",
		"GET /secrets/nebula-api-key/", "PUT /secrets/nebula-api-key",
		"GET /secrets/nebula-api-key/", "PATCH /secrets/nebula-api-key/v2", "DELETE /secrets/nebula-api-key",
		"GET /secrets/nebula-api-key/",
	}, f.Calls())

	// Challenge authentication: one unauthenticated request drew the
	// challenge; the token was asked for the challenge's tenant and scope.
	assert.Equal(t, 1, f.Challenges())
	requests := cred.Requests()
	require.NotEmpty(t, requests)
	for _, r := range requests {
		assert.Equal(t, []string{"https://vault.azure.net/.default"}, r.Scopes)
		assert.Equal(t, f.TenantID(), r.TenantID)
	}
}

func TestAzureNameMapping(t *testing.T) {
	f := mirrortest.NewAzure(t)
	target := newAzureTestTarget(t, f, nil, func(c *AzureConfig) { c.NameTemplate = "wf-<name>-mirror" })
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "svc_token.v2", 1, testContent(1)))
	require.NoError(t, target.Put(ctx, "svc-token-v2", 1, testContent(2)))

	mapped := "wf-" + AzureSecretName("svc_token.v2") + "-mirror"
	assert.Regexp(t, `^wf-svc-token-v2-[0-9a-f]{8}-mirror$`, mapped)
	v, ok := f.Secret(mapped)
	require.True(t, ok)
	assert.Equal(t, string(testContent(1)), v.Value)
	v, ok = f.Secret("wf-svc-token-v2-mirror")
	require.True(t, ok, "a name Key Vault accepts is kept as it is")
	assert.Equal(t, string(testContent(2)), v.Value, "distinct credentials do not share a secret")
}

func TestAzureRejectedTokenIsPermanentAuthFailure(t *testing.T) {
	f := mirrortest.NewAzure(t)
	target := newAzureTestTarget(t, f, mirrortest.NewStaticCredential("wrong-token"))
	err := target.Put(context.Background(), "api-key", 1, testContent(1))
	e := assertMirrorError(t, err, KindAuth, false, "AKV10032", "wrong-token")
	assert.Equal(t, 401, e.Status)
	assert.Empty(t, f.Calls(), "no operation ran")
}

func TestAzureForbiddenIsPermanent(t *testing.T) {
	f := mirrortest.NewAzure(t)
	target := newAzureTestTarget(t, f, nil)
	f.FailWith(func(string, string) int { return 403 })
	err := target.Put(context.Background(), "api-key", 1, testContent(1))
	e := assertMirrorError(t, err, KindAuth, false, "upstream failed")
	assert.Equal(t, "Forbidden", e.Code)
	err = target.Delete(context.Background(), "api-key")
	assertMirrorError(t, err, KindAuth, false)
}

func TestAzureDeleteThenRecreateRecovers(t *testing.T) {
	f := mirrortest.NewAzure(t)
	f.SetRecoverLag(2)
	target := newAzureTestTarget(t, f, nil)
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "reborn", 5, testContent(5)))
	require.NoError(t, target.Delete(ctx, "reborn"))

	// The credential is created again: its versions start over, and the
	// name still belongs to the soft-deleted secret.
	f.ResetCalls()
	require.NoError(t, target.Put(ctx, "reborn", 1, testContent(1)))
	v, ok := f.Secret("nebula-reborn")
	require.True(t, ok)
	assert.Equal(t, string(testContent(1)), v.Value)
	assert.Equal(t, "1", v.Tags[AzureTagVersion])
	assert.Equal(t, []string{
		"GET /secrets/nebula-reborn/", "PUT /secrets/nebula-reborn",
		"GET /deletedsecrets/nebula-reborn", "POST /deletedsecrets/nebula-reborn/recover",
		"GET /secrets/nebula-reborn/", "GET /secrets/nebula-reborn/", "GET /secrets/nebula-reborn/",
		"PUT /secrets/nebula-reborn",
	}, f.Calls())
}

func TestAzureRecoveryPendingIsRetryable(t *testing.T) {
	f := mirrortest.NewAzure(t)
	f.SetRecoverLag(100)
	target := newAzureTestTarget(t, f, nil)
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "slow", 1, testContent(1)))
	require.NoError(t, target.Delete(ctx, "slow"))

	err := target.Put(ctx, "slow", 1, testContent(1))
	e := assertMirrorError(t, err, KindConflict, true)
	assert.Equal(t, "recovery_pending", e.Code)

	f.CompleteRecovery("nebula-slow")
	require.NoError(t, target.Put(ctx, "slow", 1, testContent(1)), "the recovered secret lost its version tag on delete")
	v, _ := f.Secret("nebula-slow")
	assert.Equal(t, "1", v.Tags[AzureTagVersion])
}

func TestAzureClientSecretCredential(t *testing.T) {
	f := mirrortest.NewAzure(t)
	opts := f.ClientOptions()
	cfg := AzureConfig{VaultURL: f.URL(), TenantID: f.TenantID(), ClientID: f.ClientID(), ClientSecret: f.ClientSecret()}
	target, err := NewAzure(cfg, nil, opts)
	require.NoError(t, err)
	require.NoError(t, target.Put(context.Background(), "sp", 1, testContent(1)))
	_, ok := f.Secret("nebula-sp")
	assert.True(t, ok)
	forms := f.TokenRequests()
	require.Len(t, forms, 1)
	assert.Equal(t, f.ClientID(), forms[0].Get("client_id"))
	assert.Contains(t, strings.Fields(forms[0].Get("scope")), "https://vault.azure.net/.default")

	cfg.ClientSecret = "wrong-client-secret"
	target, err = NewAzure(cfg, nil, opts)
	require.NoError(t, err)
	err = target.Put(context.Background(), "sp", 2, testContent(2))
	e := assertMirrorError(t, err, KindAuth, false, "AADSTS", "wrong-client-secret")
	assert.Equal(t, "token_request_failed", e.Code)
}

func TestNewAzureRejectsInvalidConfig(t *testing.T) {
	_, err := NewAzure(AzureConfig{VaultURL: "http://vault.example", ClientSecret: "x"}, nil, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "vault_url")
	assert.Contains(t, err.Error(), "client_id is required")
	assert.NotContains(t, err.Error(), `"x"`)
}
