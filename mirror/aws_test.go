package mirror

import (
	"context"
	"errors"
	"strings"
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

// awsContractFake adapts mirrortest's AWS fake to targetFake; credential
// name is mirrored as secret nebula/name (the default template).
type awsContractFake struct{ *mirrortest.AWS }

// newAWSContractFake returns an adapter over a new AWS fake.
func newAWSContractFake(tb testing.TB) awsContractFake {
	return awsContractFake{mirrortest.NewAWS(tb)}
}

// Stored returns the value and version tag of secret nebula/name.
func (f awsContractFake) Stored(name string) (value, version string, ok bool) {
	s, ok := f.Secret("nebula/" + name)
	return s.Value, s.Tags[AWSTagVersion], ok
}

// Lookup returns the DescribeSecret call of secret nebula/name.
func (f awsContractFake) Lookup(name string) string { return "DescribeSecret nebula/" + name }

// FailWrites makes every operation answer status, with code
// InternalServiceError for 500 and none otherwise.
func (f awsContractFake) FailWrites(status int) {
	code := map[int]string{500: "InternalServiceError"}[status]
	f.FailWith(func(string) (int, string) { return status, code })
}

// Throttle makes every operation answer 400 ThrottlingException.
func (f awsContractFake) Throttle() string {
	f.FailWith(func(string) (int, string) { return 400, "ThrottlingException" })
	return "ThrottlingException"
}

// Heal restores normal answers.
func (f awsContractFake) Heal() { f.FailWith(nil) }

// PlantForeign adds secret nebula/name, tagged for owner unless empty.
func (f awsContractFake) PlantForeign(name, owner, value string) {
	s := mirrortest.AWSSecret{Name: "nebula/" + name, Value: value}
	if owner != "" {
		s.Tags = map[string]string{AWSTagCredential: owner, AWSTagVersion: "1"}
	}
	f.AddSecret(s)
}

// MaxSecretSize is Secrets Manager's limit.
func (f awsContractFake) MaxSecretSize() int { return awsMaxSecretSize }

// TooLongName returns a name over Secrets Manager's 512 characters.
func (f awsContractFake) TooLongName() string { return strings.Repeat("n", 600) }

// TestAWSTargetContract runs the contract every target keeps.
func TestAWSTargetContract(t *testing.T) {
	runTargetContract(t, func(tb testing.TB, f awsContractFake) Target { return newAWSTestTarget(tb, f.AWS) }, newAWSContractFake)
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
