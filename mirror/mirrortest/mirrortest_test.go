package mirrortest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/smithy-go"
	"github.com/nebula-credential/nebula-credential/mirror/mirrortest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newSecretsManager returns a Secrets Manager client on f with its static
// credentials and no retries.
func newSecretsManager(f *mirrortest.AWS) *secretsmanager.Client {
	return secretsmanager.NewFromConfig(aws.Config{
		Region:      f.Region(),
		Credentials: credentials.NewStaticCredentialsProvider(f.AccessKey(), f.SecretKey(), ""),
		HTTPClient:  f.Client(),
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
	}, func(o *secretsmanager.Options) { o.BaseEndpoint = aws.String(f.URL()) })
}

func TestAWS(t *testing.T) {
	f := mirrortest.NewAWS(t)
	sm := newSecretsManager(f)
	ctx := context.Background()

	_, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name: aws.String("nebula/a"), SecretString: aws.String(`{"v":1}`),
		Tags: []types.Tag{{Key: aws.String("nebula:version"), Value: aws.String("3")}},
	})
	require.NoError(t, err)
	f.AddSecret(mirrortest.AWSSecret{Name: "other/b", Value: "x"})
	assert.Equal(t, []string{"nebula/a", "other/b"}, f.Names())
	s, ok := f.Secret("nebula/a")
	require.True(t, ok)
	assert.Equal(t, `{"v":1}`, s.Value)
	assert.Equal(t, "3", s.EngineVersion())
	s.Tags["nebula:version"] = "changed"
	s, _ = f.Secret("nebula/a")
	assert.Equal(t, "3", s.EngineVersion(), "a snapshot does not share the fake's tags")

	f.FailWith(func(op string) (int, string) { return 400, "AccessDeniedException" })
	_, err = sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("nebula/a")})
	var apiErr smithy.APIError
	require.True(t, errors.As(err, &apiErr), "%v", err)
	assert.Equal(t, "AccessDeniedException", apiErr.ErrorCode())
	f.FailWith(nil)

	url := f.URL()
	f.Stop()
	_, err = sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("nebula/a")})
	assert.ErrorContains(t, err, "connection refused")
	f.Start()
	assert.Equal(t, url, f.URL(), "same address after a restart")
	_, err = sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String("nebula/a"), RecoveryWindowInDays: aws.Int64(7)})
	require.NoError(t, err)
	s, _ = f.Secret("nebula/a")
	assert.False(t, s.Deleted.IsZero())
	assert.Equal(t, []string{"other/b"}, f.Names(), "a secret scheduled for deletion is not listed")
	assert.Equal(t, []string{"CreateSecret nebula/a", "DeleteSecret nebula/a"}, f.Calls())
	assert.Equal(t, 3, f.Signed())

	other := secretsmanager.NewFromConfig(aws.Config{Region: f.Region(), HTTPClient: f.Client(),
		Credentials: credentials.NewStaticCredentialsProvider(f.AccessKey(), "wrong", "")},
		func(o *secretsmanager.Options) { o.BaseEndpoint = aws.String(f.URL()) })
	_, err = other.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("other/b")})
	require.True(t, errors.As(err, &apiErr), "%v", err)
	assert.Equal(t, "InvalidSignatureException", apiErr.ErrorCode())
}

func TestAzure(t *testing.T) {
	f := mirrortest.NewAzure(t)
	cred := f.Credential()
	kv, err := azsecrets.NewClient(f.URL(), cred, f.ClientOptions())
	require.NoError(t, err)
	ctx := context.Background()

	for _, value := range []string{"one", "two"} {
		_, err = kv.SetSecret(ctx, "Nebula-A", azsecrets.SetSecretParameters{
			Value: &value, Tags: map[string]*string{"nebula-version": to("7")},
		}, nil)
		require.NoError(t, err)
	}
	s, ok := f.Secret("nebula-a")
	require.True(t, ok, "names compare case-insensitively")
	assert.Equal(t, mirrortest.AzureSecret{Name: "Nebula-A", VersionID: "v2", Value: "two",
		Tags: map[string]string{"nebula-version": "7"}}, s)
	assert.Equal(t, "7", s.EngineVersion())
	assert.Equal(t, 2, f.Versions("nebula-a"))
	assert.Equal(t, []string{"Nebula-A"}, f.Names())
	assert.Equal(t, 1, f.Challenges())
	assert.NotEmpty(t, cred.Requests())

	f.FailWith(func(method, _ string) int { return 503 })
	_, err = kv.GetSecret(ctx, "nebula-a", "", nil)
	var respErr *azcore.ResponseError
	require.True(t, errors.As(err, &respErr), "%v", err)
	assert.Equal(t, 503, respErr.StatusCode)
	f.FailWith(nil)

	url := f.URL()
	f.Stop()
	_, err = kv.GetSecret(ctx, "nebula-a", "", nil)
	assert.ErrorContains(t, err, "connection refused")
	f.Start()
	assert.Equal(t, url, f.URL(), "same address after a restart")
	_, err = kv.DeleteSecret(ctx, "nebula-a", nil)
	require.NoError(t, err)
	_, ok = f.DeletedSecret("nebula-a")
	assert.True(t, ok)
	assert.Empty(t, f.Names())

	wrong, err := azsecrets.NewClient(f.URL(), mirrortest.NewStaticCredential("wrong"), f.ClientOptions())
	require.NoError(t, err)
	_, err = wrong.GetSecret(ctx, "nebula-a", "", nil)
	require.True(t, errors.As(err, &respErr), "%v", err)
	assert.Equal(t, 401, respErr.StatusCode)
}

func to(s string) *string { return &s }
