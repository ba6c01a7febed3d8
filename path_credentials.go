package nebula

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/nebula-credential/nebula-credential/types"
)

// Limits of the common credential fields.
const (
	maxDescription     = 1024
	maxTags            = 64
	maxTagLength       = 128
	maxMetadataEntries = 64
	maxMetadataKey     = 128
	maxMetadataValue   = 1024
	maxIdempotencyKey  = 256
)

// commonFields are the credential fields every type has.
var commonFields = map[string]*framework.FieldSchema{
	"name":            {Type: framework.TypeString, Description: "Name of the credential."},
	"type":            {Type: framework.TypeString, Description: "Credential type: one of types/ (api_key, basic_auth, bearer, oauth2). Required on create; cannot change."},
	"description":     {Type: framework.TypeString, Description: "Free-text description."},
	"tags":            {Type: framework.TypeCommaStringSlice, Description: "Tags for grouping and search."},
	"metadata":        {Type: framework.TypeKVPairs, Description: "Key/value metadata (non-secret)."},
	"idempotency_key": {Type: framework.TypeString, Description: "Makes a repeated write with the same input a no-op that answers the same id; the same key with other input is a conflict."},
	"verify":          {Type: framework.TypeBool, Description: "Obtain a token from the provider now (oauth2) and refuse the write when that fails; otherwise the first token read contacts the provider."},
	"mirror":          {Type: framework.TypeCommaStringSlice, Description: "Mirror targets to copy the credential to: aws, azure (configured at mirror/aws, mirror/azure)."},
	"mirror_content":  {Type: framework.TypeString, Description: "What is mirrored: secret (the secret fields, default) or token (the ready-to-use token, re-mirrored after refreshes)."},
}

// credentialSchema is the request schema of creds/<name>: the common fields
// and every type's fields.
func credentialSchema() map[string]*framework.FieldSchema {
	schema := map[string]*framework.FieldSchema{}
	for name, f := range commonFields {
		schema[name] = f
	}
	for _, f := range types.AllFields() {
		desc := f.Description
		if f.Secret {
			desc += " Secret: never returned by reads."
		}
		schema[f.Name] = &framework.FieldSchema{Type: frameworkType(f.Kind), Description: desc}
	}
	return schema
}

func frameworkType(k types.FieldKind) framework.FieldType {
	switch k {
	case types.KindStringList:
		return framework.TypeCommaStringSlice
	case types.KindInt:
		return framework.TypeInt
	case types.KindBool:
		return framework.TypeBool
	case types.KindTime:
		return framework.TypeTime
	}
	return framework.TypeString
}

func pathCredentials(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "creds/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "credentials"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathCredsList, Responses: listResponses("names of the credentials")},
			},
			HelpSynopsis:    "List credentials.",
			HelpDescription: "Lists the names of the credentials in this mount.",
		},
		{
			// Any single path segment routes here, so a bad name answers
			// invalid_input (400) rather than "unsupported path" (404).
			Pattern:        "creds/(?P<name>[^/]+)$",
			DisplayAttrs:   &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "credential"},
			Fields:         credentialSchema(),
			ExistenceCheck: b.credentialExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{Callback: b.pathCredsWrite, Responses: credentialResponses},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathCredsWrite, Responses: credentialResponses},
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathCredsRead, Responses: credentialResponses},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathCredsDelete, Responses: respNoContent},
			},
			HelpSynopsis:    "Create, read, update and delete a credential.",
			HelpDescription: credsHelp,
		},
	}
}

func (b *backend) credentialExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateName(name) != nil {
		return false, nil
	}
	c, err := loadCredential(ctx, req.Storage, name)
	return c != nil, err
}

func (b *backend) pathCredsList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, credsPrefix)
	if err != nil {
		return nil, storageError("listing credentials", err)
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	var resp *logical.Response
	err := b.withCredentialRLock(name, func() error {
		c, err := loadCredentialRequired(ctx, req.Storage, name)
		if err != nil {
			return err
		}
		resp = &logical.Response{Data: c.responseData(b.now())}
		return nil
	})
	return resp, err
}

// credInput is a parsed write to creds/<name>.
type credInput struct {
	Name          string            `json:"name"`
	Type          string            `json:"type,omitempty"`
	Description   *string           `json:"description,omitempty"`
	Tags          []string          `json:"tags,omitempty"`
	HasTags       bool              `json:"has_tags,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	HasMetadata   bool              `json:"has_metadata,omitempty"`
	Mirror        []string          `json:"mirror,omitempty"`
	HasMirror     bool              `json:"has_mirror,omitempty"`
	MirrorContent *string           `json:"mirror_content,omitempty"`
	// Values are the type fields supplied, secret ones included.
	Values types.Values `json:"values"`

	idempotencyKey string
	verify         bool
}

// parseCredInput reads the request's fields. Type fields are collected
// without checking them against a type: the caller knows which type
// applies.
func parseCredInput(d *framework.FieldData, name string) (*credInput, error) {
	in := &credInput{Name: name}
	var errs []error
	if err := validateName(name); err != nil {
		errs = append(errs, err)
	}
	if v, ok := d.GetOk("type"); ok {
		in.Type = v.(string)
	}
	if v, ok := d.GetOk("description"); ok {
		s := v.(string)
		if len(s) > maxDescription {
			errs = append(errs, fmt.Errorf("field \"description\" is %d bytes long; at most %d are allowed", len(s), maxDescription))
		}
		in.Description = &s
	}
	if v, ok := d.GetOk("tags"); ok {
		in.Tags, in.HasTags = v.([]string), true
		errs = append(errs, validateTags(in.Tags))
	}
	if v, ok := d.GetOk("metadata"); ok {
		in.Metadata, in.HasMetadata = v.(map[string]string), true
		errs = append(errs, validateMetadata(in.Metadata))
	}
	if v, ok := d.GetOk("verify"); ok {
		in.verify = v.(bool)
	}
	if v, ok := d.GetOk("mirror"); ok {
		in.Mirror, in.HasMirror = v.([]string), true
	}
	if v, ok := d.GetOk("mirror_content"); ok {
		s := v.(string)
		in.MirrorContent = &s
	}
	if v, ok := d.GetOk("idempotency_key"); ok {
		in.idempotencyKey = v.(string)
		if len(in.idempotencyKey) > maxIdempotencyKey {
			errs = append(errs, fmt.Errorf("field \"idempotency_key\" is %d bytes long; at most %d are allowed", len(in.idempotencyKey), maxIdempotencyKey))
		}
	}
	in.Values = typeValues(d, func(field string) bool {
		_, common := commonFields[field]
		return common
	})
	return in, errors.Join(errs...)
}

// typeValues collects the credential type fields a request supplies: the
// fields of the path's schema that skip does not exclude, times as RFC 3339
// strings. Fields outside the schema are left out (the framework warns about
// them).
func typeValues(d *framework.FieldData, skip func(field string) bool) types.Values {
	values := types.Values{}
	for field := range d.Raw {
		if _, inSchema := d.Schema[field]; !inSchema || skip(field) {
			continue
		}
		v, ok, err := d.GetOkErr(field)
		if err != nil || !ok {
			continue
		}
		if t, isTime := v.(time.Time); isTime {
			v = t.UTC().Format(time.RFC3339)
		}
		values[field] = v
	}
	return values
}

var tagRe = regexp.MustCompile(`^[\w.:/=+@-]+$`)

func validateTags(tags []string) error {
	if len(tags) > maxTags {
		return fmt.Errorf("field \"tags\" has %d items; at most %d are allowed", len(tags), maxTags)
	}
	var errs []error
	for _, tag := range tags {
		if len(tag) > maxTagLength || !tagRe.MatchString(tag) {
			errs = append(errs, fmt.Errorf("field \"tags\": tag %q must be 1 to %d characters of letters, digits and _.:/=+@-", truncate(tag, 40), maxTagLength))
		}
	}
	return errors.Join(errs...)
}

func validateMetadata(m map[string]string) error {
	if len(m) > maxMetadataEntries {
		return fmt.Errorf("field \"metadata\" has %d entries; at most %d are allowed", len(m), maxMetadataEntries)
	}
	var errs []error
	for k, v := range m {
		if k == "" || len(k) > maxMetadataKey {
			errs = append(errs, fmt.Errorf("field \"metadata\": key %q must be 1 to %d bytes long", truncate(k, 40), maxMetadataKey))
		}
		if len(v) > maxMetadataValue {
			errs = append(errs, fmt.Errorf("field \"metadata\": value of %q is %d bytes long; at most %d are allowed", truncate(k, 40), len(v), maxMetadataValue))
		}
	}
	return errors.Join(errs...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// pathCredsWrite creates a credential or updates an existing one. Vault
// routes a write as create or update by ExistenceCheck; the handler decides
// again under the credential's lock, since the check ran without it.
func (b *backend) pathCredsWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	in, err := parseCredInput(d, name)
	if err != nil {
		return nil, invalidInput(err)
	}

	c, existing, resp, err := b.writeCredential(ctx, req, in)
	if resp != nil || err != nil {
		return resp, err
	}
	// Mirrors are written after the lock is released: token content reads
	// the credential's token, which takes the lock.
	b.afterWrite(ctx, req.Storage, c, existing)
	return &logical.Response{Data: c.responseData(b.now())}, nil
}

// writeCredential creates or updates a credential under its lock. resp is
// set when an idempotent replay answers without a write.
func (b *backend) writeCredential(ctx context.Context, req *logical.Request, in *credInput) (c, existing *credential, resp *logical.Response, err error) {
	// Revocations of versions an update retires are sent once the lock is
	// released.
	ctx, revoke := b.deferRevocations(ctx)
	defer revoke()
	lock := b.lock(in.Name)
	if in.verify {
		// verify=true contacts the provider: under the name's own upstream
		// lock (one upstream call at a time per credential), with the lock
		// shard released meanwhile (verifyUnlocked).
		unlock, err := b.upstreamLocks.lock(ctx, in.Name)
		if err != nil {
			return nil, nil, nil, err
		}
		defer unlock()
		ctx = context.WithValue(ctx, shardHandoffKey{}, lock)
	}
	lock.Lock()
	defer lock.Unlock()

	done, resp, err := b.replayIdempotent(ctx, req.Storage, in)
	if done || err != nil {
		return nil, nil, resp, err
	}
	existing, err = loadCredential(ctx, req.Storage, in.Name)
	if err != nil {
		return nil, nil, nil, err
	}
	ev := auditEvent{Action: actionCreate, Credential: in.Name}
	if existing == nil {
		c, err = b.createCredential(ctx, req.Storage, in)
	} else {
		ev.Action = actionUpdate
		c, err = b.updateCredential(ctx, req.Storage, existing, in)
	}
	if c != nil {
		ev.Version = c.Version
	}
	b.audit(ctx, req, auditOutcome(ev, err), nil)
	if err != nil {
		return nil, nil, nil, err
	}
	b.dropCached(in.Name)
	return c, existing, nil, nil
}

func (b *backend) pathCredsDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName(name); err != nil {
		return nil, invalidInput(err)
	}
	lock := b.lock(name)
	lock.Lock()
	defer lock.Unlock()
	c, err := loadCredential(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	// The metadata goes first: once it is gone the credential is gone, and
	// the sweep below runs again on a retried delete if it fails half-way.
	if c != nil {
		b.unmirror(ctx, req.Storage, name, c.Mirror)
		if sv, err := loadSecret(ctx, req.Storage, name, c.ID); err == nil && sv.Token != nil {
			b.indexExpiry(ctx, req.Storage, name, sv.Token, nil)
		}
		err := req.Storage.Delete(ctx, credKey(name))
		b.summary.noteCredDeleted(name, err)
		if err != nil {
			return nil, storageError("deleting credential", err)
		}
		for _, ref := range c.IdempotencyKeys {
			if err := req.Storage.Delete(ctx, idemKey(ref.ID)); err != nil {
				return nil, storageError("deleting idempotency record", err)
			}
		}
	}
	versions, err := req.Storage.List(ctx, secretPrefix+name+"/")
	if err != nil {
		return nil, storageError("listing secret versions", err)
	}
	for _, id := range versions {
		if err := req.Storage.Delete(ctx, secretKey(name, id)); err != nil {
			return nil, storageError("deleting secret version", err)
		}
	}
	b.dropCached(name)
	b.stats.forget(name)
	if c != nil {
		b.audit(ctx, req, auditOutcome(auditEvent{Action: actionDelete, Credential: name, Version: c.Version}, nil), nil)
	}
	return nil, nil
}

const credsHelp = `
A credential has a name, a type (see types/) and the type's fields. Secret
fields (api_key, password, token, client_secret, refresh_token) are stored
seal-wrapped and never returned here; read token/<name> for a ready-to-use
token.

A write to an existing credential changes only the fields it names. Secret
fields equal to the stored ones change nothing; different ones make a new
version. With idempotency_key, a repeated write with the same input answers
the same id and changes nothing; keys are kept for 24 hours, at most the 100
most recent per credential, after which a key counts as new.

A write that changes where an oauth2 credential's secrets are sent
(token_url, auth_url, device_url, revocation_url, or provider/tenant when
the preset's endpoints differ) must supply every secret the credential holds
(client_secret, refresh_token) in the same write; it makes a new version and
retires the old ones at once.
`
