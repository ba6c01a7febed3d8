package mirror

import (
	"context"
	"crypto/subtle"
	"errors"
	"maps"
	"net/http"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
)

// Tags the Azure target sets on every secret version it writes.
const (
	// AzureTagVersion holds the engine version of the secret's value.
	AzureTagVersion = "nebula-version"
	// AzureTagCredential names the credential the secret mirrors; a secret
	// without it is never overwritten or deleted.
	AzureTagCredential = "nebula-credential"
)

// azureMaxSecretSize is the largest secret value Key Vault accepts (25 KiB).
const azureMaxSecretSize = 25 * 1024

// Recovery of a soft-deleted secret completes asynchronously; Put polls for
// it this often, at most this many times.
const (
	azureRecoverPollInterval = time.Second
	azureRecoverPolls        = 20
)

// azureTarget mirrors credentials to Azure Key Vault.
type azureTarget struct {
	client *azsecrets.Client
	cfg    AzureConfig // validated, defaults applied
	locks  keyLocks    // one lock per remote secret name

	pollInterval time.Duration // between polls for a recovered secret
	polls        int           // polls before giving up (retryable)
}

// NewAzure returns a target writing to the Key Vault at cfg.VaultURL.
//
// cred authenticates requests; nil means a client secret credential from
// cfg.TenantID, cfg.ClientID and cfg.ClientSecret or, when those are empty,
// azidentity's DefaultAzureCredential. The credential shares opts' retry and
// cloud settings, and the client secret credential also opts' transport (the
// default chain's sources come from the host's environment and use the SDK's
// transport); with an authority host outside the public, government and China
// clouds it skips Entra instance discovery.
//
// A request that opts.Transport refuses with a permanent *upstream.Error (the
// engine's host policy) is not retried and fails with kind KindPolicy.
//
// opts may be nil. Tests against a vault outside vault.azure.net set
// opts.DisableChallengeResourceVerification.
func NewAzure(cfg AzureConfig, cred azcore.TokenCredential, opts *azsecrets.ClientOptions) (Target, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.NameTemplate == "" {
		cfg.NameTemplate = DefaultAzureNameTemplate
	}
	if opts == nil {
		opts = &azsecrets.ClientOptions{}
	}
	if opts.Transport != nil {
		o := *opts
		o.Transport = finalRefusals{next: opts.Transport}
		opts = &o
	}
	if cred == nil {
		var err error
		if cred, err = azureCredential(cfg, opts.ClientOptions); err != nil {
			return nil, err
		}
	}
	client, err := azsecrets.NewClient(cfg.VaultURL, cred, opts)
	if err != nil {
		return nil, err
	}
	return &azureTarget{
		client:       client,
		cfg:          cfg,
		locks:        newKeyLocks(),
		pollInterval: azureRecoverPollInterval,
		polls:        azureRecoverPolls,
	}, nil
}

// azureCredential builds the credential NewAzure uses when none is given.
func azureCredential(cfg AzureConfig, clientOpts azcore.ClientOptions) (azcore.TokenCredential, error) {
	// Policies meant for Key Vault requests stay off token requests.
	clientOpts.PerCallPolicies, clientOpts.PerRetryPolicies = nil, nil
	disableDiscovery := customAuthority(clientOpts.Cloud)
	if cfg.ClientSecret != "" {
		return azidentity.NewClientSecretCredential(cfg.TenantID, cfg.ClientID, cfg.ClientSecret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: clientOpts, DisableInstanceDiscovery: disableDiscovery})
	}
	// The default chain's sources (environment, workload identity, managed
	// identity at the instance metadata or Arc endpoint on a link-local or
	// loopback address, Azure CLI) are set by the host's environment, not
	// by any engine input: they use the SDK's own transport.
	clientOpts.Transport = nil
	return azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
		ClientOptions: clientOpts, DisableInstanceDiscovery: disableDiscovery, TenantID: cfg.TenantID,
	})
}

// finalRefusals makes the SDK's retry policy give up at once on requests
// the engine's host policy refused: no retry can succeed before the
// configuration changes.
type finalRefusals struct{ next policy.Transporter }

// Do sends req through the wrapped transport.
func (t finalRefusals) Do(req *http.Request) (*http.Response, error) {
	resp, err := t.next.Do(req)
	var refused *upstream.Error
	if err != nil && errors.As(err, &refused) && refused.Permanent {
		return nil, nonRetriable{err}
	}
	return resp, err
}

// nonRetriable marks an error as not worth retrying for azcore
// (errorinfo.NonRetriable).
type nonRetriable struct{ error }

func (nonRetriable) NonRetriable()   {}
func (e nonRetriable) Unwrap() error { return e.error }

// customAuthority reports whether c names an Entra authority other than the
// well-known clouds' (Azure Stack, a test server), where instance discovery
// does not apply.
func customAuthority(c cloud.Configuration) bool {
	switch c.ActiveDirectoryAuthorityHost {
	case "", cloud.AzurePublic.ActiveDirectoryAuthorityHost,
		cloud.AzureGovernment.ActiveDirectoryAuthorityHost, cloud.AzureChina.ActiveDirectoryAuthorityHost:
		return false
	}
	return true
}

func (t *azureTarget) Name() string { return NameAzure }

// Put reads the secret's current version (GetSecret) and, unless its version
// tag is newer than version, or equal with the same content, content type and
// configured tags, sets a
// new secret version (SetSecret) holding content, content type
// "application/json" and the tags. When the name belongs to a soft-deleted
// secret of the same credential, Put recovers it first.
func (t *azureTarget) Put(ctx context.Context, credential string, version int, content []byte) error {
	name, err := renderAzureName(t.cfg.NameTemplate, credential)
	if err != nil {
		return localError(NameAzure, opPut, credential, "invalid_name", err.Error())
	}
	if err := checkPut(NameAzure, name, version, content, azureMaxSecretSize); err != nil {
		return err
	}
	defer t.locks.lock(name)()

	tags := t.tags(credential, version)
	current, err := t.client.GetSecret(ctx, name, "", nil)
	switch {
	case azureStatus(err) == 404:
		// create
	case err != nil:
		return azureError(opPut, name, err)
	case !ownedBy(current.Tags, credential):
		return foreignError(NameAzure, opPut, name, credential)
	default:
		v := parseVersion(azureTag(current.Tags, AzureTagVersion))
		if v > version || v == version && sameSecret(current.Secret, content, tags) {
			return nil
		}
	}
	err = t.set(ctx, name, content, tags)
	if azureStatus(err) == 409 {
		// The name belongs to a soft-deleted secret.
		err = t.recoverAndSet(ctx, name, credential, content, tags)
	}
	return azureError(opPut, name, err)
}

func (t *azureTarget) set(ctx context.Context, name string, content []byte, tags map[string]*string) error {
	_, err := t.client.SetSecret(ctx, name, azsecrets.SetSecretParameters{
		Value:       to(string(content)),
		ContentType: to(contentType),
		Tags:        tags,
	}, nil)
	return err
}

// recoverAndSet recovers the soft-deleted secret name, if it mirrored
// credential, waits until it is live again and sets content. The deleted
// secret's version tag is ignored: its credential was deleted.
func (t *azureTarget) recoverAndSet(ctx context.Context, name, credential string, content []byte, tags map[string]*string) error {
	deleted, err := t.client.GetDeletedSecret(ctx, name, nil)
	switch {
	case azureStatus(err) == 404:
		// Not listed as deleted (yet): the deletion is still in progress.
		return &Error{Target: NameAzure, Op: opPut, Name: name, Kind: KindConflict, Code: "deletion_in_progress", Retryable: true}
	case err != nil:
		return err
	case !ownedBy(deleted.Tags, credential):
		return foreignError(NameAzure, opPut, name, credential)
	}
	if _, err := t.client.RecoverDeletedSecret(ctx, name, nil); err != nil {
		return err
	}
	for i := 0; ; i++ {
		_, err := t.client.GetSecret(ctx, name, "", nil)
		if err == nil {
			break
		}
		if azureStatus(err) != 404 {
			return err
		}
		if i+1 >= t.polls {
			return &Error{Target: NameAzure, Op: opPut, Name: name, Kind: KindConflict, Code: "recovery_pending", Retryable: true}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(t.pollInterval):
		}
	}
	return t.set(ctx, name, content, tags)
}

// Delete deletes the secret (DeleteSecret). Key Vault keeps deleted secrets
// for the vault's retention period (soft delete); the target does not purge
// them. It first removes the version tag from the current version so that a
// credential created again under the same name recovers the secret and
// writes its own version.
func (t *azureTarget) Delete(ctx context.Context, credential string) error {
	name, err := renderAzureName(t.cfg.NameTemplate, credential)
	if err != nil {
		return localError(NameAzure, opDelete, credential, "invalid_name", err.Error())
	}
	defer t.locks.lock(name)()

	current, err := t.client.GetSecret(ctx, name, "", nil)
	switch {
	case azureStatus(err) == 404:
		return nil
	case err != nil:
		return azureError(opDelete, name, err)
	case !ownedBy(current.Tags, credential):
		return foreignError(NameAzure, opDelete, name, credential)
	}
	if _, ok := current.Tags[AzureTagVersion]; ok && current.ID != nil {
		tags := maps.Clone(current.Tags)
		delete(tags, AzureTagVersion)
		_, err := t.client.UpdateSecretProperties(ctx, name, current.ID.Version(),
			azsecrets.UpdateSecretPropertiesParameters{Tags: tags}, nil)
		if err != nil && azureStatus(err) != 404 {
			return azureError(opDelete, name, err)
		}
	}
	_, err = t.client.DeleteSecret(ctx, name, nil)
	switch azureStatus(err) {
	case 404, 409: // gone, or its deletion is in progress
		return nil
	}
	return azureError(opDelete, name, err)
}

// tags returns the configured tags plus the engine's.
func (t *azureTarget) tags(credential string, version int) map[string]*string {
	tags := make(map[string]*string, len(t.cfg.Tags)+2)
	for k, v := range t.cfg.Tags {
		tags[k] = to(v)
	}
	tags[AzureTagCredential] = to(credential)
	tags[AzureTagVersion] = to(strconv.Itoa(version))
	return tags
}

// sameSecret reports whether s already holds content with the wanted content
// type and at least the wanted tags (tags added by others, e.g. Azure Policy,
// do not cause a new version).
func sameSecret(s azsecrets.Secret, content []byte, tags map[string]*string) bool {
	if s.Value == nil || subtle.ConstantTimeCompare([]byte(*s.Value), content) != 1 {
		return false
	}
	if s.ContentType == nil || *s.ContentType != contentType {
		return false
	}
	for k, v := range tags {
		if got, ok := s.Tags[k]; !ok || got == nil || *got != *v {
			return false
		}
	}
	return true
}

func ownedBy(tags map[string]*string, credential string) bool {
	owner, ok := azureTag(tags, AzureTagCredential)
	return ok && owner == credential
}

func azureTag(tags map[string]*string, key string) (string, bool) {
	v, ok := tags[key]
	if !ok || v == nil {
		return "", false
	}
	return *v, true
}

// azureStatus returns the HTTP status of a Key Vault error response, or 0.
func azureStatus(err error) int {
	var respErr *azcore.ResponseError
	if errors.As(err, &respErr) {
		return respErr.StatusCode
	}
	return 0
}

func to[T any](v T) *T { return &v }
