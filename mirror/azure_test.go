package mirror

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
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

func TestAzureOrdering(t *testing.T) {
	f := mirrortest.NewAzure(t)
	target := newAzureTestTarget(t, f, nil)
	ctx := context.Background()

	require.NoError(t, target.Put(ctx, "ordered", 3, testContent(3)))
	f.ResetCalls()
	require.NoError(t, target.Put(ctx, "ordered", 2, testContent(2)), "an older version is not an error")
	v, _ := f.Secret("nebula-ordered")
	assert.Equal(t, string(testContent(3)), v.Value, "older version did not overwrite")
	assert.Equal(t, []string{"GET /secrets/nebula-ordered/"}, f.Calls(), "nothing written")

	f.ResetCalls()
	require.NoError(t, target.Put(ctx, "ordered", 3, testContent(3)), "a retry is idempotent")
	assert.Equal(t, []string{"GET /secrets/nebula-ordered/"}, f.Calls(), "same version, content and tags: no new version")
	assert.Equal(t, 1, f.Versions("nebula-ordered"))

	require.True(t, f.SetTag("nebula-ordered", "added-by-policy", "yes"))
	require.NoError(t, target.Put(ctx, "ordered", 3, testContent(3)))
	assert.Equal(t, 1, f.Versions("nebula-ordered"), "a tag added by others causes no new version")

	refreshed := []byte(`{"access_token":"refreshed"}`)
	require.NoError(t, target.Put(ctx, "ordered", 3, refreshed))
	v, _ = f.Secret("nebula-ordered")
	assert.Equal(t, string(refreshed), v.Value, "same version with new content is written")

	require.NoError(t, target.Put(ctx, "ordered", 4, testContent(4)))
	v, _ = f.Secret("nebula-ordered")
	assert.Equal(t, string(testContent(4)), v.Value)
}

func TestAzureConcurrentPutsEndWithLatest(t *testing.T) {
	f := mirrortest.NewAzure(t)
	target := newAzureTestTarget(t, f, nil)
	const n = 12
	var wg sync.WaitGroup
	for _, v := range rand.Perm(n) {
		wg.Add(1)
		go func(v int) {
			defer wg.Done()
			assert.NoError(t, target.Put(context.Background(), "busy", v+1, testContent(v+1)))
		}(v)
	}
	wg.Wait()
	v, _ := f.Secret("nebula-busy")
	assert.Equal(t, string(testContent(n)), v.Value)
	assert.Equal(t, strconv.Itoa(n), v.Tags[AzureTagVersion])
}

func TestAzureTargetDownThenUp(t *testing.T) {
	f := mirrortest.NewAzure(t)
	target := newAzureTestTarget(t, f, nil)
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "flaky", 1, testContent(1)))

	for _, status := range []int{500, 503} {
		f.FailWith(func(method, _ string) int {
			if method == "PUT" {
				return status
			}
			return 0
		})
		err := target.Put(ctx, "flaky", 2, testContent(2))
		e := assertMirrorError(t, err, KindUnreachable, true, "upstream failed")
		assert.Equal(t, status, e.Status)
	}

	f.FailWith(nil)
	require.NoError(t, target.Put(ctx, "flaky", 2, testContent(2)))
	v, _ := f.Secret("nebula-flaky")
	assert.Equal(t, string(testContent(2)), v.Value, "no lost update")
}

func TestAzureThrottlingIsRetryable(t *testing.T) {
	f := mirrortest.NewAzure(t)
	target := newAzureTestTarget(t, f, nil)
	f.FailWith(func(string, string) int { return 429 })
	err := target.Put(context.Background(), "busy", 1, testContent(1))
	assertMirrorError(t, err, KindThrottled, true, "upstream failed")
}

func TestAzureServerClosedThenBack(t *testing.T) {
	f := mirrortest.NewAzure(t)
	target := newAzureTestTarget(t, f, nil)
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "flaky", 1, testContent(1)))

	f.Stop()
	err := target.Put(ctx, "flaky", 2, testContent(2))
	e := assertMirrorError(t, err, KindUnreachable, true)
	assert.Equal(t, "connection_failed", e.Code)

	f.Start()
	require.NoError(t, target.Put(ctx, "flaky", 2, testContent(2)))
	v, _ := f.Secret("nebula-flaky")
	assert.Equal(t, string(testContent(2)), v.Value, "no lost update")
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

func TestAzureForeignSecretIsNotTouched(t *testing.T) {
	f := mirrortest.NewAzure(t)
	target := newAzureTestTarget(t, f, nil)
	f.AddSecret(mirrortest.AzureSecret{Name: "nebula-theirs", Value: "keep"})
	f.AddSecret(mirrortest.AzureSecret{Name: "nebula-other", Value: "keep",
		Tags: map[string]string{AzureTagCredential: "someone-else", AzureTagVersion: "1"}})
	f.AddDeletedSecret(mirrortest.AzureSecret{Name: "nebula-gone", Value: "keep"})

	for _, name := range []string{"theirs", "other"} {
		err := target.Put(context.Background(), name, 9, testContent(9))
		assertMirrorError(t, err, KindForeign, false)
		err = target.Delete(context.Background(), name)
		assertMirrorError(t, err, KindForeign, false)
		v, ok := f.Secret("nebula-" + name)
		require.True(t, ok)
		assert.Equal(t, "keep", v.Value)
	}

	// A soft-deleted secret of someone else is not recovered either.
	err := target.Put(context.Background(), "gone", 1, testContent(1))
	assertMirrorError(t, err, KindForeign, false)
	_, ok := f.DeletedSecret("nebula-gone")
	assert.True(t, ok, "still soft-deleted")
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

func TestAzureInvalidPut(t *testing.T) {
	f := mirrortest.NewAzure(t)
	target := newAzureTestTarget(t, f, nil)
	ctx := context.Background()
	err := target.Put(ctx, "big", 1, []byte(`"`+strings.Repeat("x", azureMaxSecretSize)+`"`))
	e := assertMirrorError(t, err, KindInvalid, false)
	assert.Equal(t, "content_too_large", e.Code)
	err = target.Put(ctx, strings.Repeat("n", 130), 1, testContent(1))
	e = assertMirrorError(t, err, KindInvalid, false)
	assert.Equal(t, "invalid_name", e.Code)
	err = target.Put(ctx, "plain", 1, []byte(testSecret))
	assertMirrorError(t, err, KindInvalid, false)
	assert.Empty(t, f.Calls(), "nothing sent")
}

func TestNewAzureRejectsInvalidConfig(t *testing.T) {
	_, err := NewAzure(AzureConfig{VaultURL: "http://vault.example", ClientSecret: "x"}, nil, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "vault_url")
	assert.Contains(t, err.Error(), "client_id is required")
	assert.NotContains(t, err.Error(), `"x"`)
}
