package mirror

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// Tags the AWS target sets on every secret it writes.
const (
	// AWSTagVersion holds the engine version of the secret's current value.
	AWSTagVersion = "nebula:version"
	// AWSTagCredential names the credential the secret mirrors; a secret
	// without it is never overwritten or deleted.
	AWSTagCredential = "nebula:credential"
)

// awsMaxSecretSize is the largest SecretString Secrets Manager accepts.
const awsMaxSecretSize = 65536

// awsSessionName is the session name of assumed-role sessions, visible in
// CloudTrail.
const awsSessionName = "nebula-credential"

// awsTarget mirrors credentials to AWS Secrets Manager.
type awsTarget struct {
	client *secretsmanager.Client
	cfg    AWSConfig // validated, defaults applied
	locks  keyLocks  // one lock per remote secret name
}

// NewAWS returns a target writing to AWS Secrets Manager in cfg.Region.
//
// Credentials: cfg.AccessKey and cfg.SecretKey when given (no environment
// variable or shared file is read then); otherwise the SDK's default chain
// (environment, shared config and credentials files, web identity, ECS and
// EC2 instance roles). With cfg.RoleARN those credentials assume the role
// through STS (at cfg.STSEndpoint when set) with session name
// "nebula-credential", refreshed before they expire.
//
// httpClient, when not nil, carries every request (Secrets Manager and STS
// AssumeRole; the default chain's own sources, such as instance metadata,
// use the SDK's client). A request it refuses with a permanent
// *upstream.Error (the engine's host policy) is not retried and fails with
// kind KindPolicy.
// optFns adjust the Secrets Manager client, e.g. its Retryer; by default the
// SDK retries retryable failures up to 3 attempts with backoff.
func NewAWS(cfg AWSConfig, httpClient *http.Client, optFns ...func(*secretsmanager.Options)) (Target, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.NameTemplate == "" {
		cfg.NameTemplate = DefaultAWSNameTemplate
	}
	awsCfg, err := sdkConfig(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	endpoint := func(o *secretsmanager.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	}
	client := secretsmanager.NewFromConfig(awsCfg, append([]func(*secretsmanager.Options){endpoint}, optFns...)...)
	return &awsTarget{client: client, cfg: cfg, locks: newKeyLocks()}, nil
}

// sdkConfig builds the SDK configuration: region, HTTP client and
// credentials.
func sdkConfig(cfg AWSConfig, httpClient *http.Client) (aws.Config, error) {
	var awsCfg aws.Config
	if cfg.AccessKey != "" {
		awsCfg = aws.Config{
			Region:      cfg.Region,
			Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")),
		}
		if httpClient != nil {
			awsCfg.HTTPClient = httpClient
		}
	} else {
		// The default chain's own HTTP client (for instance metadata and
		// SSO endpoints) honours AWS_CA_BUNDLE; httpClient, set below,
		// carries the Secrets Manager and STS requests.
		loaded, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(cfg.Region))
		if err != nil {
			return aws.Config{}, errors.New("loading the default AWS configuration failed: " + err.Error())
		}
		awsCfg = loaded
		if httpClient != nil {
			awsCfg.HTTPClient = httpClient
		}
	}
	awsCfg.AppID = awsSessionName
	if cfg.RoleARN != "" {
		stsClient := sts.NewFromConfig(awsCfg, func(o *sts.Options) {
			if cfg.STSEndpoint != "" {
				o.BaseEndpoint = aws.String(cfg.STSEndpoint)
			}
		})
		awsCfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(stsClient, cfg.RoleARN,
			func(o *stscreds.AssumeRoleOptions) { o.RoleSessionName = awsSessionName }))
	}
	return awsCfg, nil
}

func (t *awsTarget) Name() string { return NameAWS }

// Put creates the secret (CreateSecret) or, when it exists and its version tag
// is not newer than version, writes a new secret value (PutSecretValue) and
// then the tags (TagResource). The value is written before the version tag, so
// an interrupted Put leaves an older tag and its retry writes again.
func (t *awsTarget) Put(ctx context.Context, credential string, version int, content []byte) error {
	name, err := renderAWSName(t.cfg.NameTemplate, credential)
	if err != nil {
		return localError(NameAWS, opPut, credential, "invalid_name", err.Error())
	}
	if err := checkPut(NameAWS, name, version, content, awsMaxSecretSize); err != nil {
		return err
	}
	defer t.locks.lock(name)()

	for attempt := 0; ; attempt++ {
		desc, err := t.client.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
		if awsErrorCode(err) == "ResourceNotFoundException" {
			err = t.create(ctx, name, credential, version, content)
			switch awsErrorCode(err) {
			case "ResourceExistsException":
				if attempt == 0 {
					continue // created meanwhile by someone else: compare versions
				}
			case "InvalidRequestException":
				// The name still belongs to a secret being deleted (force
				// deletion completes asynchronously): retry later.
				return awsConflict(opPut, name, err)
			}
			return awsError(opPut, name, err)
		}
		if err != nil {
			return awsError(opPut, name, err)
		}
		return t.update(ctx, desc, name, credential, version, content)
	}
}

func (t *awsTarget) create(ctx context.Context, name, credential string, version int, content []byte) error {
	in := &secretsmanager.CreateSecretInput{
		Name:         aws.String(name),
		SecretString: aws.String(string(content)),
		Description:  aws.String("Mirror of nebula-credential credential " + credential),
		Tags:         t.tags(credential, version),
	}
	if t.cfg.KMSKeyID != "" {
		in.KmsKeyId = aws.String(t.cfg.KMSKeyID)
	}
	_, err := t.client.CreateSecret(ctx, in)
	return err
}

func (t *awsTarget) update(ctx context.Context, desc *secretsmanager.DescribeSecretOutput, name, credential string, version int, content []byte) error {
	if owner, ok := awsTag(desc.Tags, AWSTagCredential); !ok || owner != credential {
		return foreignError(NameAWS, opPut, name, credential)
	}
	if desc.DeletedDate != nil {
		// Scheduled for deletion (Delete with a recovery window): the
		// credential was deleted and created again. Its old version tag does
		// not apply to the new credential.
		if _, err := t.client.RestoreSecret(ctx, &secretsmanager.RestoreSecretInput{SecretId: aws.String(name)}); err != nil {
			return awsError(opPut, name, err)
		}
	} else if current := parseVersion(awsTag(desc.Tags, AWSTagVersion)); current > version {
		return nil // the target holds a newer version
	}
	if _, err := t.client.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId:     aws.String(name),
		SecretString: aws.String(string(content)),
	}); err != nil {
		return awsError(opPut, name, err)
	}
	_, err := t.client.TagResource(ctx, &secretsmanager.TagResourceInput{
		SecretId: aws.String(name),
		Tags:     t.tags(credential, version),
	})
	return awsError(opPut, name, err)
}

// Delete deletes the secret: at once (ForceDeleteWithoutRecovery) or, with
// AWSConfig.RecoveryWindowDays, after that many days; in that case it first
// removes the version tag so that a credential created again under the same
// name restores the secret and writes its own version.
func (t *awsTarget) Delete(ctx context.Context, credential string) error {
	name, err := renderAWSName(t.cfg.NameTemplate, credential)
	if err != nil {
		return localError(NameAWS, opDelete, credential, "invalid_name", err.Error())
	}
	defer t.locks.lock(name)()

	desc, err := t.client.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
	switch {
	case awsErrorCode(err) == "ResourceNotFoundException":
		return nil
	case err != nil:
		return awsError(opDelete, name, err)
	}
	if owner, ok := awsTag(desc.Tags, AWSTagCredential); !ok || owner != credential {
		return foreignError(NameAWS, opDelete, name, credential)
	}
	if desc.DeletedDate != nil {
		return nil // already scheduled for deletion
	}
	in := &secretsmanager.DeleteSecretInput{SecretId: aws.String(name)}
	if days := t.cfg.RecoveryWindowDays; days > 0 {
		if _, err := t.client.UntagResource(ctx, &secretsmanager.UntagResourceInput{
			SecretId: aws.String(name), TagKeys: []string{AWSTagVersion},
		}); err != nil && awsErrorCode(err) != "ResourceNotFoundException" {
			return awsError(opDelete, name, err)
		}
		in.RecoveryWindowInDays = aws.Int64(int64(days))
	} else {
		in.ForceDeleteWithoutRecovery = aws.Bool(true)
	}
	_, err = t.client.DeleteSecret(ctx, in)
	if awsErrorCode(err) == "ResourceNotFoundException" {
		return nil
	}
	return awsError(opDelete, name, err)
}

// tags returns the configured tags plus the engine's, sorted by key.
func (t *awsTarget) tags(credential string, version int) []types.Tag {
	tags := make([]types.Tag, 0, len(t.cfg.Tags)+2)
	for k, v := range t.cfg.Tags {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	tags = append(tags,
		types.Tag{Key: aws.String(AWSTagCredential), Value: aws.String(credential)},
		types.Tag{Key: aws.String(AWSTagVersion), Value: aws.String(strconv.Itoa(version))},
	)
	sort.Slice(tags, func(i, j int) bool { return *tags[i].Key < *tags[j].Key })
	return tags
}

// awsTag returns the value of the tag with key.
func awsTag(tags []types.Tag, key string) (string, bool) {
	for _, tag := range tags {
		if aws.ToString(tag.Key) == key {
			return aws.ToString(tag.Value), true
		}
	}
	return "", false
}
