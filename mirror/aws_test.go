package mirror

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/nebula-credential/nebula-credential/mirror/mirrortest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// awsTestConfig returns the configuration of a target on f with its static
// credentials.
func awsTestConfig(f *mirrortest.AWS) AWSConfig {
	return AWSConfig{Region: f.Region(), Endpoint: f.URL(), AccessKey: f.AccessKey(), SecretKey: f.SecretKey()}
}

// newAWSTestTarget returns an AWS target on f, with static credentials, no
// SDK retries and cfg adjusted by mutate.
func newAWSTestTarget(tb testing.TB, f *mirrortest.AWS, mutate ...func(*AWSConfig)) Target {
	tb.Helper()
	cfg := awsTestConfig(f)
	for _, m := range mutate {
		m(&cfg)
	}
	target, err := NewAWS(cfg, f.Client(), func(o *secretsmanager.Options) { o.Retryer = aws.NopRetryer{} })
	require.NoError(tb, err)
	return target
}

func TestAWSPutUpdateDelete(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f, func(c *AWSConfig) {
		c.KMSKeyID = "alias/nebula"
		c.Tags = map[string]string{"team": "payments"}
	})
	ctx := context.Background()
	require.Equal(t, "aws", target.Name())

	require.NoError(t, target.Put(ctx, "api-key", 1, testContent(1)))
	s, ok := f.Secret("nebula/api-key")
	require.True(t, ok, "secret created under the default template")
	assert.Equal(t, string(testContent(1)), s.Value)
	assert.Equal(t, "alias/nebula", s.KMSKeyID)
	assert.Equal(t, "Mirror of nebula-credential credential api-key", s.Description)
	assert.Equal(t, map[string]string{"team": "payments", AWSTagCredential: "api-key", AWSTagVersion: "1"}, s.Tags)
	assert.Equal(t, "1", s.EngineVersion(), "mirrortest reads the tag the target writes")
	assert.Equal(t, "api-key", s.Credential(), "mirrortest reads the tag the target writes")

	require.NoError(t, target.Put(ctx, "api-key", 2, testContent(2)))
	s, _ = f.Secret("nebula/api-key")
	assert.Equal(t, string(testContent(2)), s.Value)
	assert.Equal(t, "2", s.Tags[AWSTagVersion])
	assert.Equal(t, 2, s.Versions)

	require.NoError(t, target.Delete(ctx, "api-key"))
	_, ok = f.Secret("nebula/api-key")
	assert.False(t, ok, "secret deleted")
	require.NoError(t, target.Delete(ctx, "api-key"), "deleting a missing secret succeeds")

	assert.Equal(t, []string{
		"DescribeSecret nebula/api-key", "CreateSecret nebula/api-key",
		"DescribeSecret nebula/api-key", "PutSecretValue nebula/api-key", "TagResource nebula/api-key",
		"DescribeSecret nebula/api-key", "DeleteSecret nebula/api-key",
		"DescribeSecret nebula/api-key",
	}, f.Calls())
}

func TestAWSNameTemplate(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f, func(c *AWSConfig) { c.NameTemplate = "prod/workflows/<name>@nebula" })
	require.NoError(t, target.Put(context.Background(), "svc_token.v2", 1, testContent(1)))
	_, ok := f.Secret("prod/workflows/svc_token.v2@nebula")
	assert.True(t, ok)

	err := target.Put(context.Background(), "bad name", 1, testContent(1))
	assertMirrorError(t, err, KindInvalid, false)
	err = target.Put(context.Background(), strings.Repeat("n", 600), 1, testContent(1))
	assertMirrorError(t, err, KindInvalid, false)
}

func TestAWSRequestsAreSigned(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f)
	require.NoError(t, target.Put(context.Background(), "signed", 1, testContent(1)))

	signed, auth := f.Signed(), f.LastAuthorization("secretsmanager")
	assert.Equal(t, 2, signed, "every request verified (DescribeSecret, CreateSecret)")
	date := time.Now().UTC().Format("20060102")
	assert.True(t, strings.HasPrefix(auth,
		"AWS4-HMAC-SHA256 Credential="+f.AccessKey()+"/"), auth)
	assert.Contains(t, auth, "/"+f.Region()+"/secretsmanager/aws4_request, SignedHeaders=")
	assert.Contains(t, auth, "x-amz-target")
	assert.Contains(t, auth, ", Signature=")
	// The date may roll over between request and check; accept either day.
	if !strings.Contains(auth, "/"+date+"/") {
		assert.Contains(t, auth, "/"+time.Now().UTC().Add(-time.Minute).Format("20060102")+"/")
	}
}

func TestAWSWrongSecretKeyIsPermanentAuthFailure(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f, func(c *AWSConfig) { c.SecretKey = "not-the-right-secret-key" })
	err := target.Put(context.Background(), "api-key", 1, testContent(1))
	e := assertMirrorError(t, err, KindAuth, false, "does not match")
	assert.Equal(t, "InvalidSignatureException", e.Code)
	assert.Equal(t, 400, e.Status)
	assert.NotContains(t, err.Error(), "not-the-right-secret-key")

	target = newAWSTestTarget(t, f, func(c *AWSConfig) { c.AccessKey = "AKIAUNKNOWN000000000" })
	err = target.Delete(context.Background(), "api-key")
	e = assertMirrorError(t, err, KindAuth, false)
	assert.Equal(t, "UnrecognizedClientException", e.Code)
	assert.Empty(t, f.Calls(), "no operation ran")
}

func TestAWSAccessDeniedIsPermanent(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f)
	f.FailWith(func(op string) (int, string) {
		if op == "CreateSecret" {
			return 400, "AccessDeniedException"
		}
		return 0, ""
	})
	err := target.Put(context.Background(), "api-key", 1, testContent(1))
	e := assertMirrorError(t, err, KindAuth, false, "upstream failed")
	assert.Equal(t, "AccessDeniedException", e.Code)
	assert.Equal(t, "put", e.Op)
	assert.Equal(t, "nebula/api-key", e.Name)
}

func TestAWSThrottlingIsRetryable(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f)
	f.FailWith(func(string) (int, string) { return 400, "ThrottlingException" })
	err := target.Put(context.Background(), "api-key", 1, testContent(1))
	e := assertMirrorError(t, err, KindThrottled, true, "upstream failed")
	assert.Equal(t, "ThrottlingException", e.Code)
}

func TestAWSOrdering(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f)
	ctx := context.Background()

	require.NoError(t, target.Put(ctx, "ordered", 3, testContent(3)))
	f.ResetCalls()
	require.NoError(t, target.Put(ctx, "ordered", 2, testContent(2)), "an older version is not an error")
	s, _ := f.Secret("nebula/ordered")
	assert.Equal(t, string(testContent(3)), s.Value, "older version did not overwrite")
	assert.Equal(t, "3", s.Tags[AWSTagVersion])
	assert.Equal(t, []string{"DescribeSecret nebula/ordered"}, f.Calls(), "nothing written")

	// The same version is written again: its content may have changed
	// (a refreshed token), and rewriting the same content is harmless.
	refreshed := []byte(`{"access_token":"refreshed"}`)
	require.NoError(t, target.Put(ctx, "ordered", 3, refreshed))
	s, _ = f.Secret("nebula/ordered")
	assert.Equal(t, string(refreshed), s.Value)

	require.NoError(t, target.Put(ctx, "ordered", 4, testContent(4)))
	s, _ = f.Secret("nebula/ordered")
	assert.Equal(t, string(testContent(4)), s.Value)
}

func TestAWSConcurrentPutsEndWithLatest(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f)
	const n = 12
	versions := rand.Perm(n)
	var wg sync.WaitGroup
	for _, v := range versions {
		wg.Add(1)
		go func(v int) {
			defer wg.Done()
			assert.NoError(t, target.Put(context.Background(), "busy", v+1, testContent(v+1)))
		}(v)
	}
	wg.Wait()
	s, _ := f.Secret("nebula/busy")
	assert.Equal(t, string(testContent(n)), s.Value)
	assert.Equal(t, fmt.Sprint(n), s.Tags[AWSTagVersion])
}

func TestAWSTargetDownThenUp(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f)
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "flaky", 1, testContent(1)))

	f.FailWith(func(string) (int, string) { return 500, "InternalServiceError" })
	err := target.Put(ctx, "flaky", 2, testContent(2))
	e := assertMirrorError(t, err, KindUnreachable, true, "upstream failed")
	assert.Equal(t, 500, e.Status)

	f.FailWith(func(string) (int, string) { return 503, "" })
	err = target.Put(ctx, "flaky", 2, testContent(2))
	assertMirrorError(t, err, KindUnreachable, true, "upstream failed")

	f.FailWith(nil)
	require.NoError(t, target.Put(ctx, "flaky", 2, testContent(2)))
	s, _ := f.Secret("nebula/flaky")
	assert.Equal(t, string(testContent(2)), s.Value, "no lost update")
}

func TestAWSServerClosedThenBack(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f)
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "flaky", 1, testContent(1)))

	f.Stop()
	err := target.Put(ctx, "flaky", 2, testContent(2))
	e := assertMirrorError(t, err, KindUnreachable, true)
	assert.Equal(t, "connection_failed", e.Code)
	assert.Contains(t, e.Error(), "connection refused")

	f.Start()
	require.NoError(t, target.Put(ctx, "flaky", 2, testContent(2)))
	s, _ := f.Secret("nebula/flaky")
	assert.Equal(t, string(testContent(2)), s.Value, "no lost update")
}

func TestAWSTimeoutIsRetryable(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := target.Put(ctx, "late", 1, testContent(1))
	e := assertMirrorError(t, err, KindUnreachable, true)
	assert.Equal(t, "canceled", e.Code)
	assert.True(t, errors.Is(err, context.Canceled))
}

func TestAWSSDKRetriesWithinOnePut(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target, err := NewAWS(awsTestConfig(f), f.Client(), func(o *secretsmanager.Options) {
		o.Retryer = retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 3
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return time.Millisecond, nil })
		})
	})
	require.NoError(t, err)
	failures := 1
	f.FailWith(func(op string) (int, string) {
		if op == "PutSecretValue" && failures > 0 {
			failures--
			return 503, "ServiceUnavailable"
		}
		return 0, ""
	})
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "retried", 1, testContent(1)))
	require.NoError(t, target.Put(ctx, "retried", 2, testContent(2)))
	s, _ := f.Secret("nebula/retried")
	assert.Equal(t, string(testContent(2)), s.Value)
	assert.Zero(t, failures)
}

func TestAWSForeignSecretIsNotTouched(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f)
	f.AddSecret(mirrortest.AWSSecret{Name: "nebula/theirs", Value: "keep"})
	f.AddSecret(mirrortest.AWSSecret{Name: "nebula/other", Value: "keep",
		Tags: map[string]string{AWSTagCredential: "someone-else", AWSTagVersion: "1"}})

	for _, name := range []string{"theirs", "other"} {
		err := target.Put(context.Background(), name, 9, testContent(9))
		e := assertMirrorError(t, err, KindForeign, false)
		assert.Equal(t, "not_managed", e.Code)
		err = target.Delete(context.Background(), name)
		assertMirrorError(t, err, KindForeign, false)
		s, ok := f.Secret("nebula/" + name)
		require.True(t, ok)
		assert.Equal(t, "keep", s.Value)
	}
}

func TestAWSRecoveryWindowDeleteThenRecreate(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f, func(c *AWSConfig) { c.RecoveryWindowDays = 7 })
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "reborn", 5, testContent(5)))

	require.NoError(t, target.Delete(ctx, "reborn"))
	s, ok := f.Secret("nebula/reborn")
	require.True(t, ok)
	assert.False(t, s.Deleted.IsZero(), "scheduled for deletion")
	assert.NotContains(t, s.Tags, AWSTagVersion, "version tag removed before deletion")
	require.NoError(t, target.Delete(ctx, "reborn"), "deleting again succeeds")

	// The credential is created again: its versions start over.
	require.NoError(t, target.Put(ctx, "reborn", 1, testContent(1)))
	s, _ = f.Secret("nebula/reborn")
	assert.True(t, s.Deleted.IsZero(), "restored")
	assert.Equal(t, string(testContent(1)), s.Value)
	assert.Equal(t, "1", s.Tags[AWSTagVersion])
}

func TestAWSCreateWhileDeletionPendingIsRetryable(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f)
	f.FailWith(func(op string) (int, string) {
		if op == "CreateSecret" {
			return 400, "InvalidRequestException"
		}
		return 0, ""
	})
	err := target.Put(context.Background(), "pending", 1, testContent(1))
	assertMirrorError(t, err, KindConflict, true, "upstream failed")
}

func TestAWSAssumeRole(t *testing.T) {
	f := mirrortest.NewAWS(t)
	const role = "arn:aws:iam::123456789012:role/nebula-mirror"
	target := newAWSTestTarget(t, f, func(c *AWSConfig) {
		c.RoleARN = role
		c.STSEndpoint = f.URL()
	})
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "assumed", 1, testContent(1)))
	require.NoError(t, target.Put(ctx, "assumed", 2, testContent(2)))

	assert.Equal(t, []string{role}, f.AssumedRoles(), "one AssumeRole, credentials cached")
	assert.Contains(t, f.LastAuthorization("sts"), "Credential="+f.AccessKey()+"/", "AssumeRole signed with the static key")
	assert.Contains(t, f.LastAuthorization("secretsmanager"), "Credential=ASIAFAKEASSUMED00001/", "Secrets Manager called with the role's key")
	s, _ := f.Secret("nebula/assumed")
	assert.Equal(t, string(testContent(2)), s.Value)
}

func TestAWSInvalidPut(t *testing.T) {
	f := mirrortest.NewAWS(t)
	target := newAWSTestTarget(t, f)
	ctx := context.Background()
	tests := map[string]struct {
		version int
		content []byte
		code    string
	}{
		"not json":         {1, []byte("token=" + testSecret), "invalid_content"},
		"empty":            {1, nil, "invalid_content"},
		"negative version": {-1, testContent(1), "invalid_version"},
		"too large":        {1, []byte(`"` + strings.Repeat("x", awsMaxSecretSize) + `"`), "content_too_large"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := target.Put(ctx, "invalid", tc.version, tc.content)
			e := assertMirrorError(t, err, KindInvalid, false)
			assert.Equal(t, tc.code, e.Code)
		})
	}
	assert.Empty(t, f.Calls(), "nothing sent")
}

func TestNewAWSRejectsInvalidConfig(t *testing.T) {
	_, err := NewAWS(AWSConfig{Region: "nowhere", AccessKey: "AKIA"}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "region")
	assert.Contains(t, err.Error(), "secret_key is required")
}

func TestNewAWSDefaultChain(t *testing.T) {
	// Without static keys the SDK's default chain is used; building the
	// target reads no network.
	f := mirrortest.NewAWS(t)
	t.Setenv("AWS_ACCESS_KEY_ID", f.AccessKey())
	t.Setenv("AWS_SECRET_ACCESS_KEY", f.SecretKey())
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	target, err := NewAWS(AWSConfig{Region: f.Region(), Endpoint: f.URL()}, f.Client(),
		func(o *secretsmanager.Options) { o.Retryer = aws.NopRetryer{} })
	require.NoError(t, err)
	require.NoError(t, target.Put(context.Background(), "from-env", 1, testContent(1)))
	_, ok := f.Secret("nebula/from-env")
	assert.True(t, ok)
}
