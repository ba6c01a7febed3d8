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
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// azureTestOptions are client options for f: its TLS client as transport,
// challenge resource verification off (the vault is not on vault.azure.net)
// and no SDK retries.
func azureTestOptions(f *kvFake) *azsecrets.ClientOptions {
	return &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{
			Transport: f.server.client(),
			Retry:     policy.RetryOptions{MaxRetries: -1},
		},
		DisableChallengeResourceVerification: true,
	}
}

// newAzureTestTarget returns an Azure target on f authenticating with cred
// (a fixed valid token when nil) and cfg adjusted by mutate.
func newAzureTestTarget(tb testing.TB, f *kvFake, cred azcore.TokenCredential, mutate ...func(*AzureConfig)) Target {
	tb.Helper()
	if cred == nil {
		cred = &fixedCredential{token: fakeToken}
	}
	cfg := AzureConfig{VaultURL: f.server.URL()}
	for _, m := range mutate {
		m(&cfg)
	}
	target, err := NewAzure(cfg, cred, azureTestOptions(f))
	require.NoError(tb, err)
	target.(*azureTarget).pollInterval = time.Millisecond
	return target
}

func TestAzurePutUpdateDelete(t *testing.T) {
	f := newKVFake(t)
	cred := &fixedCredential{token: fakeToken}
	target := newAzureTestTarget(t, f, cred, func(c *AzureConfig) { c.Tags = map[string]string{"team": "payments"} })
	ctx := context.Background()
	require.Equal(t, "azure", target.Name())

	require.NoError(t, target.Put(ctx, "api-key", 1, testContent(1)))
	v, ok := f.current("nebula-api-key")
	require.True(t, ok, "secret created under the default template")
	assert.Equal(t, string(testContent(1)), v.value)
	assert.Equal(t, "application/json", v.contentType)
	assert.Equal(t, map[string]string{"team": "payments", AzureTagCredential: "api-key", AzureTagVersion: "1"}, v.tags)

	require.NoError(t, target.Put(ctx, "api-key", 2, testContent(2)))
	v, _ = f.current("nebula-api-key")
	assert.Equal(t, string(testContent(2)), v.value)
	assert.Equal(t, "2", v.tags[AzureTagVersion])
	assert.Equal(t, 2, f.versions("nebula-api-key"))

	require.NoError(t, target.Delete(ctx, "api-key"))
	_, ok = f.current("nebula-api-key")
	assert.False(t, ok, "secret deleted")
	require.NoError(t, target.Delete(ctx, "api-key"), "deleting a missing secret succeeds")

	assert.Equal(t, []string{
		"GET /secrets/nebula-api-key/", "PUT /secrets/nebula-api-key",
		"GET /secrets/nebula-api-key/", "PUT /secrets/nebula-api-key",
		"GET /secrets/nebula-api-key/", "PATCH /secrets/nebula-api-key/v2", "DELETE /secrets/nebula-api-key",
		"GET /secrets/nebula-api-key/",
	}, f.callLog())

	// Challenge authentication: one unauthenticated request drew the
	// challenge; the token was asked for the challenge's tenant and scope.
	f.mu.Lock()
	assert.Equal(t, 1, f.challenges)
	f.mu.Unlock()
	cred.mu.Lock()
	defer cred.mu.Unlock()
	require.NotEmpty(t, cred.requests)
	for _, r := range cred.requests {
		assert.Equal(t, []string{"https://vault.azure.net/.default"}, r.Scopes)
		assert.Equal(t, fakeTenant, r.TenantID)
	}
}

func TestAzureNameMapping(t *testing.T) {
	f := newKVFake(t)
	target := newAzureTestTarget(t, f, nil, func(c *AzureConfig) { c.NameTemplate = "wf-<name>-mirror" })
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "svc_token.v2", 1, testContent(1)))
	require.NoError(t, target.Put(ctx, "svc-token-v2", 1, testContent(2)))

	mapped := "wf-" + AzureSecretName("svc_token.v2") + "-mirror"
	assert.Regexp(t, `^wf-svc-token-v2-[0-9a-f]{8}-mirror$`, mapped)
	v, ok := f.current(mapped)
	require.True(t, ok)
	assert.Equal(t, string(testContent(1)), v.value)
	v, ok = f.current("wf-svc-token-v2-mirror")
	require.True(t, ok, "a name Key Vault accepts is kept as it is")
	assert.Equal(t, string(testContent(2)), v.value, "distinct credentials do not share a secret")
}

func TestAzureOrdering(t *testing.T) {
	f := newKVFake(t)
	target := newAzureTestTarget(t, f, nil)
	ctx := context.Background()

	require.NoError(t, target.Put(ctx, "ordered", 3, testContent(3)))
	f.resetCalls()
	require.NoError(t, target.Put(ctx, "ordered", 2, testContent(2)), "an older version is not an error")
	v, _ := f.current("nebula-ordered")
	assert.Equal(t, string(testContent(3)), v.value, "older version did not overwrite")
	assert.Equal(t, []string{"GET /secrets/nebula-ordered/"}, f.callLog(), "nothing written")

	f.resetCalls()
	require.NoError(t, target.Put(ctx, "ordered", 3, testContent(3)), "a retry is idempotent")
	assert.Equal(t, []string{"GET /secrets/nebula-ordered/"}, f.callLog(), "same version, content and tags: no new version")
	assert.Equal(t, 1, f.versions("nebula-ordered"))

	f.mu.Lock()
	f.secrets["nebula-ordered"][0].tags["added-by-policy"] = "yes"
	f.mu.Unlock()
	require.NoError(t, target.Put(ctx, "ordered", 3, testContent(3)))
	assert.Equal(t, 1, f.versions("nebula-ordered"), "a tag added by others causes no new version")

	refreshed := []byte(`{"access_token":"refreshed"}`)
	require.NoError(t, target.Put(ctx, "ordered", 3, refreshed))
	v, _ = f.current("nebula-ordered")
	assert.Equal(t, string(refreshed), v.value, "same version with new content is written")

	require.NoError(t, target.Put(ctx, "ordered", 4, testContent(4)))
	v, _ = f.current("nebula-ordered")
	assert.Equal(t, string(testContent(4)), v.value)
}

func TestAzureConcurrentPutsEndWithLatest(t *testing.T) {
	f := newKVFake(t)
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
	v, _ := f.current("nebula-busy")
	assert.Equal(t, string(testContent(n)), v.value)
	assert.Equal(t, strconv.Itoa(n), v.tags[AzureTagVersion])
}

func TestAzureTargetDownThenUp(t *testing.T) {
	f := newKVFake(t)
	target := newAzureTestTarget(t, f, nil)
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "flaky", 1, testContent(1)))

	for _, status := range []int{500, 503} {
		f.failWith(func(method, _ string) int {
			if method == "PUT" {
				return status
			}
			return 0
		})
		err := target.Put(ctx, "flaky", 2, testContent(2))
		e := assertMirrorError(t, err, KindUnreachable, true, "upstream failed")
		assert.Equal(t, status, e.Status)
	}

	f.failWith(nil)
	require.NoError(t, target.Put(ctx, "flaky", 2, testContent(2)))
	v, _ := f.current("nebula-flaky")
	assert.Equal(t, string(testContent(2)), v.value, "no lost update")
}

func TestAzureThrottlingIsRetryable(t *testing.T) {
	f := newKVFake(t)
	target := newAzureTestTarget(t, f, nil)
	f.failWith(func(string, string) int { return 429 })
	err := target.Put(context.Background(), "busy", 1, testContent(1))
	assertMirrorError(t, err, KindThrottled, true, "upstream failed")
}

func TestAzureServerClosedThenBack(t *testing.T) {
	f := newKVFake(t)
	target := newAzureTestTarget(t, f, nil)
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "flaky", 1, testContent(1)))

	f.server.stop()
	err := target.Put(ctx, "flaky", 2, testContent(2))
	e := assertMirrorError(t, err, KindUnreachable, true)
	assert.Equal(t, "connection_failed", e.Code)

	f.server.start()
	require.NoError(t, target.Put(ctx, "flaky", 2, testContent(2)))
	v, _ := f.current("nebula-flaky")
	assert.Equal(t, string(testContent(2)), v.value, "no lost update")
}

func TestAzureRejectedTokenIsPermanentAuthFailure(t *testing.T) {
	f := newKVFake(t)
	target := newAzureTestTarget(t, f, &fixedCredential{token: "wrong-token"})
	err := target.Put(context.Background(), "api-key", 1, testContent(1))
	e := assertMirrorError(t, err, KindAuth, false, "AKV10032", "wrong-token")
	assert.Equal(t, 401, e.Status)
	assert.Empty(t, f.callLog(), "no operation ran")
}

func TestAzureForbiddenIsPermanent(t *testing.T) {
	f := newKVFake(t)
	target := newAzureTestTarget(t, f, nil)
	f.failWith(func(string, string) int { return 403 })
	err := target.Put(context.Background(), "api-key", 1, testContent(1))
	e := assertMirrorError(t, err, KindAuth, false, "upstream failed")
	assert.Equal(t, "Forbidden", e.Code)
	err = target.Delete(context.Background(), "api-key")
	assertMirrorError(t, err, KindAuth, false)
}

func TestAzureForeignSecretIsNotTouched(t *testing.T) {
	f := newKVFake(t)
	target := newAzureTestTarget(t, f, nil)
	f.mu.Lock()
	f.secrets["nebula-theirs"] = []kvFakeVersion{{id: "v1", value: "keep"}}
	f.secrets["nebula-other"] = []kvFakeVersion{{id: "v1", value: "keep",
		tags: map[string]string{AzureTagCredential: "someone-else", AzureTagVersion: "1"}}}
	f.deleted["nebula-gone"] = []kvFakeVersion{{id: "v1", value: "keep"}}
	f.mu.Unlock()

	for _, name := range []string{"theirs", "other"} {
		err := target.Put(context.Background(), name, 9, testContent(9))
		assertMirrorError(t, err, KindForeign, false)
		err = target.Delete(context.Background(), name)
		assertMirrorError(t, err, KindForeign, false)
		v, ok := f.current("nebula-" + name)
		require.True(t, ok)
		assert.Equal(t, "keep", v.value)
	}

	// A soft-deleted secret of someone else is not recovered either.
	err := target.Put(context.Background(), "gone", 1, testContent(1))
	assertMirrorError(t, err, KindForeign, false)
	f.mu.Lock()
	assert.Contains(t, f.deleted, "nebula-gone")
	f.mu.Unlock()
}

func TestAzureDeleteThenRecreateRecovers(t *testing.T) {
	f := newKVFake(t)
	f.mu.Lock()
	f.recoverLag = 2
	f.mu.Unlock()
	target := newAzureTestTarget(t, f, nil)
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "reborn", 5, testContent(5)))
	require.NoError(t, target.Delete(ctx, "reborn"))

	// The credential is created again: its versions start over, and the
	// name still belongs to the soft-deleted secret.
	f.resetCalls()
	require.NoError(t, target.Put(ctx, "reborn", 1, testContent(1)))
	v, ok := f.current("nebula-reborn")
	require.True(t, ok)
	assert.Equal(t, string(testContent(1)), v.value)
	assert.Equal(t, "1", v.tags[AzureTagVersion])
	assert.Equal(t, []string{
		"GET /secrets/nebula-reborn/", "PUT /secrets/nebula-reborn",
		"GET /deletedsecrets/nebula-reborn", "POST /deletedsecrets/nebula-reborn/recover",
		"GET /secrets/nebula-reborn/", "GET /secrets/nebula-reborn/", "GET /secrets/nebula-reborn/",
		"PUT /secrets/nebula-reborn",
	}, f.callLog())
}

func TestAzureRecoveryPendingIsRetryable(t *testing.T) {
	f := newKVFake(t)
	f.mu.Lock()
	f.recoverLag = 100
	f.mu.Unlock()
	target := newAzureTestTarget(t, f, nil)
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "slow", 1, testContent(1)))
	require.NoError(t, target.Delete(ctx, "slow"))

	err := target.Put(ctx, "slow", 1, testContent(1))
	e := assertMirrorError(t, err, KindConflict, true)
	assert.Equal(t, "recovery_pending", e.Code)

	f.mu.Lock()
	f.recovering["nebula-slow"] = 0
	f.mu.Unlock()
	require.NoError(t, target.Put(ctx, "slow", 1, testContent(1)), "the recovered secret lost its version tag on delete")
	v, _ := f.current("nebula-slow")
	assert.Equal(t, "1", v.tags[AzureTagVersion])
}

func TestAzureClientSecretCredential(t *testing.T) {
	f := newKVFake(t)
	opts := azureTestOptions(f)
	opts.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: f.server.URL() + "/"}
	cfg := AzureConfig{VaultURL: f.server.URL(), TenantID: fakeTenant, ClientID: fakeClientID, ClientSecret: "right-client-secret"}
	target, err := NewAzure(cfg, nil, opts)
	require.NoError(t, err)
	require.NoError(t, target.Put(context.Background(), "sp", 1, testContent(1)))
	_, ok := f.current("nebula-sp")
	assert.True(t, ok)
	f.mu.Lock()
	require.Len(t, f.tokenForms, 1)
	assert.Equal(t, fakeClientID, f.tokenForms[0].Get("client_id"))
	assert.Contains(t, strings.Fields(f.tokenForms[0].Get("scope")), "https://vault.azure.net/.default")
	f.mu.Unlock()

	cfg.ClientSecret = "wrong-client-secret"
	target, err = NewAzure(cfg, nil, opts)
	require.NoError(t, err)
	err = target.Put(context.Background(), "sp", 2, testContent(2))
	e := assertMirrorError(t, err, KindAuth, false, "AADSTS", "wrong-client-secret")
	assert.Equal(t, "token_request_failed", e.Code)
}

func TestAzureInvalidPut(t *testing.T) {
	f := newKVFake(t)
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
	assert.Empty(t, f.callLog(), "nothing sent")
}

func TestNewAzureRejectsInvalidConfig(t *testing.T) {
	_, err := NewAzure(AzureConfig{VaultURL: "http://vault.example", ClientSecret: "x"}, nil, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "vault_url")
	assert.Contains(t, err.Error(), "client_id is required")
	assert.NotContains(t, err.Error(), `"x"`)
}
