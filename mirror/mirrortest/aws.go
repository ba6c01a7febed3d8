package mirrortest

import (
	"maps"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// The fixed identity of the AWS fake. Only the static key is accepted at
// first; AssumeRole adds session keys.
const (
	awsRegion    = "eu-west-1"
	awsAccessKey = "AKIAFAKEFAKEFAKE0001"
	awsSecretKey = "fake/secret+key0000000000000000000000000"
	awsAccount   = "123456789012"
)

// AWS is an AWS Secrets Manager (JSON 1.1 protocol) and STS (query protocol,
// AssumeRole only) on loopback, over plain HTTP. It keeps secrets in memory
// and answers a request only when its SigV4 signature, recomputed with the
// SDK's signer from the request and the known secret key, matches.
//
// It implements CreateSecret, DescribeSecret, GetSecretValue,
// PutSecretValue, TagResource, UntagResource, DeleteSecret (immediate or
// scheduled) and RestoreSecret, answering errors with the codes Secrets
// Manager uses (ResourceNotFoundException, ResourceExistsException,
// InvalidRequestException for a secret scheduled for deletion).
type AWS struct {
	server *server

	mu       sync.Mutex
	keys     map[string]awsKey     // access key -> key; guarded by mu
	secrets  map[string]*awsSecret // by name; guarded by mu
	calls    []string              // "Operation name" per accepted request; guarded by mu
	signed   int                   // requests whose signature was verified; guarded by mu
	fail     func(op string) (status int, code string)
	assumed  []string          // RoleArn of each AssumeRole call; guarded by mu
	lastAuth map[string]string // service -> last verified Authorization; guarded by mu
}

// awsKey is the secret half of an access key, with its session token for
// assumed-role keys.
type awsKey struct {
	secret, sessionToken string
}

// awsSecret is a stored secret; its fields mirror AWSSecret.
type awsSecret struct {
	name, kmsKeyID, description string
	value                       string
	versions                    int
	tags                        map[string]string
	deleted                     time.Time // zero unless scheduled for deletion
}

// AWSSecret is a snapshot of a secret held by the AWS fake.
type AWSSecret struct {
	Name        string
	Value       string // SecretString of the current version
	KMSKeyID    string // as given to CreateSecret; "" for the default key
	Description string
	Tags        map[string]string
	// Versions counts the values stored: 1 after CreateSecret, one more per
	// PutSecretValue.
	Versions int
	// Deleted is when DeleteSecret scheduled the secret for deletion; zero
	// when it is not scheduled. A forced delete removes the secret at once.
	Deleted time.Time
}

// EngineVersion returns the engine version tag (mirror.AWSTagVersion,
// "nebula:version") of the secret; "" when it has none.
func (s AWSSecret) EngineVersion() string { return s.Tags[awsTagVersion] }

// Credential returns the ownership tag (mirror.AWSTagCredential,
// "nebula:credential"): the credential the secret mirrors; "" when it has
// none.
func (s AWSSecret) Credential() string { return s.Tags[awsTagCredential] }

// NewAWS starts an AWS fake on 127.0.0.1 that accepts the static credentials
// AccessKey and SecretKey in Region. It stops when the test ends.
func NewAWS(tb testing.TB) *AWS {
	tb.Helper()
	f := &AWS{
		keys:     map[string]awsKey{awsAccessKey: {secret: awsSecretKey}},
		secrets:  map[string]*awsSecret{},
		lastAuth: map[string]string{},
	}
	f.server = newServer(tb, http.HandlerFunc(f.serveHTTP), false)
	return f
}

// URL returns the base URL ("http://127.0.0.1:port") of Secrets Manager and
// STS, also while the fake is stopped.
func (f *AWS) URL() string { return f.server.url() }

// Client returns an HTTP client for the fake, with a transport of its own.
func (f *AWS) Client() *http.Client { return f.server.client() }

// Region returns the only region the fake accepts in signatures.
func (f *AWS) Region() string { return awsRegion }

// AccessKey returns the access key ID of the static credentials the fake
// accepts.
func (f *AWS) AccessKey() string { return awsAccessKey }

// SecretKey returns the secret access key of the static credentials the fake
// accepts.
func (f *AWS) SecretKey() string { return awsSecretKey }

// Account returns the account ID in the ARNs the fake returns.
func (f *AWS) Account() string { return awsAccount }

// Connections returns how many connections the fake accepted, counted before
// any TLS handshake: zero means nothing reached it.
func (f *AWS) Connections() int { return f.server.connections() }

// Stop takes the fake down: its listener and every connection are closed,
// and so are the idle connections of the clients from Client, so their
// requests fail with connection refused. Its secrets are kept.
func (f *AWS) Stop() { f.server.stop() }

// Start brings a stopped fake up again on the same address.
func (f *AWS) Start() { f.server.start() }

// FailWith makes the fake answer each Secrets Manager operation op
// ("CreateSecret", "PutSecretValue", ...) for which fn returns a non-zero
// status with that status and error code, instead of running it. The error
// message echoes the request body, which must never reach an error of the
// caller. nil restores normal operation. Signatures are checked first.
func (f *AWS) FailWith(fn func(op string) (status int, code string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

// Secret returns the secret named name, also when it is scheduled for
// deletion (see AWSSecret.Deleted).
func (f *AWS) Secret(name string) (AWSSecret, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.secrets[name]
	if !ok {
		return AWSSecret{}, false
	}
	return AWSSecret{
		Name: s.name, Value: s.value, KMSKeyID: s.kmsKeyID, Description: s.description,
		Tags: maps.Clone(s.tags), Versions: s.versions, Deleted: s.deleted,
	}, true
}

// AddSecret stores s as if created by other tooling, replacing any secret of
// the same name, without a request. Versions is at least 1; Tags may be nil.
func (f *AWS) AddSecret(s AWSSecret) {
	tags := maps.Clone(s.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secrets[s.Name] = &awsSecret{
		name: s.Name, kmsKeyID: s.KMSKeyID, description: s.Description, value: s.Value,
		versions: max(s.Versions, 1), tags: tags, deleted: s.Deleted,
	}
}

// Names returns the names of the secrets not scheduled for deletion, sorted.
func (f *AWS) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := make([]string, 0, len(f.secrets))
	for name, s := range f.secrets {
		if s.deleted.IsZero() {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// Calls returns the Secrets Manager operations run so far, in order, each as
// "Operation secret-name" (e.g. "DescribeSecret nebula/api-key"). Requests
// refused for their signature or failed by FailWith are not included.
func (f *AWS) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// ResetCalls forgets the operations recorded so far.
func (f *AWS) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

// Signed returns how many requests (Secrets Manager and STS) carried a valid
// signature.
func (f *AWS) Signed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.signed
}

// LastAuthorization returns the Authorization header of the last validly
// signed request to service ("secretsmanager" or "sts").
func (f *AWS) LastAuthorization(service string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastAuth[service]
}

// AssumedRoles returns the RoleArn of each AssumeRole call, in order.
func (f *AWS) AssumedRoles() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.assumed)
}
