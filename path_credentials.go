package nebula

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-uuid"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
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
	lock := b.lock(name)
	lock.RLock()
	defer lock.RUnlock()
	c, err := loadExisting(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: c.responseData(b.now())}, nil
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

// replayIdempotent answers a write whose idempotency key was used before:
// the same input answers the recorded id and changes nothing; other input is
// a conflict. done is false when the key is new (or none was given).
func (b *backend) replayIdempotent(ctx context.Context, s logical.Storage, in *credInput) (done bool, resp *logical.Response, err error) {
	if in.idempotencyKey == "" {
		return false, nil, nil
	}
	rec, err := loadIdem(ctx, s, idemStorageID(in.idempotencyKey), b.now())
	if err != nil || rec == nil {
		return false, nil, err
	}
	fp, err := b.fingerprint(ctx, s, in)
	if err != nil {
		return false, nil, err
	}
	if rec.Name != in.Name || !hmac.Equal([]byte(rec.Fingerprint), []byte(fp)) {
		return true, nil, newError(KindDuplicate, "idempotency key was already used with different input")
	}
	c, err := loadCredential(ctx, s, in.Name)
	if err != nil {
		return true, nil, err
	}
	data := c.responseData(b.now())
	data["id"] = rec.ID
	return true, &logical.Response{Data: data}, nil
}

func (b *backend) createCredential(ctx context.Context, s logical.Storage, in *credInput) (*credential, error) {
	if in.Type == "" {
		return nil, newError(KindInvalidInput, "field \"type\" is required; one of %v", types.Names())
	}
	t, ok := types.Lookup(in.Type)
	if !ok {
		return nil, newError(KindUnsupportedType, "type %q is not supported; one of %v", in.Type, types.Names())
	}
	c, sv, err := b.buildCredential(ctx, s, in, t, nil)
	if err != nil {
		return nil, err
	}
	if sv.Token, err = b.verify(ctx, s, in, c, sv); err != nil {
		return nil, err
	}
	if err := b.saveCredential(ctx, s, c, sv, in); err != nil {
		return nil, err
	}
	b.indexExpiry(ctx, s, c.Name, nil, sv.Token)
	return c, nil
}

// verify obtains a token for a credential about to be written, when the
// write asked for it (verify=true) and the type has an upstream; nil when
// not asked. A failure refuses the write.
func (b *backend) verify(ctx context.Context, s logical.Storage, in *credInput, c *credential, sv *secretVersion) (*issuedToken, error) {
	if !in.verify || !c.typ().Refreshable {
		return nil, nil
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	probe := &secretVersion{Fields: sv.Fields}
	if sv.Token != nil && sv.Token.RefreshToken != "" {
		// The grant's latest refresh token, not the one first supplied.
		probe.Token = &issuedToken{RefreshToken: sv.Token.RefreshToken}
	}
	lock, ok := ctx.Value(shardHandoffKey{}).(*locksutil.LockEntry)
	if !ok {
		return b.requestToken(ctx, s, cfg, c, probe)
	}
	return b.verifyUnlocked(ctx, s, lock, c.Name, func() (*issuedToken, error) {
		return b.requestToken(ctx, s, cfg, c, probe)
	})
}

// shardHandoffKey carries the lock shard a verify=true write holds, so
// verify can release it while the provider is contacted.
type shardHandoffKey struct{}

// verifyUnlocked runs request (an upstream call) with the credential's
// lock shard released, so a slow provider does not stall other credentials
// that share the shard; the caller holds the name's upstream lock. When the
// stored credential changed meanwhile (another write), the write is refused
// rather than made on a stale state.
func (b *backend) verifyUnlocked(ctx context.Context, s logical.Storage, lock *locksutil.LockEntry, name string, request func() (*issuedToken, error)) (*issuedToken, error) {
	before, err := loadCredential(ctx, s, name)
	if err != nil {
		return nil, err
	}
	lock.Unlock()
	issued, reqErr := request()
	lock.Lock()
	after, err := loadCredential(ctx, s, name)
	if err != nil {
		return nil, err
	}
	a, _ := json.Marshal(before)
	z, _ := json.Marshal(after)
	if !bytes.Equal(a, z) {
		return nil, newError(KindRotationInProgress, "credential %q changed while its provider was contacted (verify=true); write again", name)
	}
	return issued, reqErr
}

// buildCredential makes a new credential and its first version from the
// input: defaults, validation, generated secrets, upstream policy. issued,
// when not nil, is the first version's token (interactive flows).
func (b *backend) buildCredential(ctx context.Context, s logical.Storage, in *credInput, t *types.Type, issued *issuedToken) (*credential, *secretVersion, error) {
	values := in.Values.Merge(nil)
	t.ApplyDefaults(values)
	if err := t.Check(values); err != nil {
		return nil, nil, invalidInput(err)
	}
	if t.Generates() && values.String("value") == "" {
		generated, err := t.Generate(values)
		if err != nil {
			return nil, nil, err
		}
		values = values.Merge(generated)
	}
	if err := b.checkUpstream(ctx, s, t, values); err != nil {
		return nil, nil, err
	}
	id, err := uuid.GenerateUUID()
	if err != nil {
		return nil, nil, fmt.Errorf("generating id: %w", err)
	}
	now := b.now().UTC()
	public, secret := values.Split(t)
	c := &credential{
		ID: id, Name: in.Name, Type: t.Name, Version: 1,
		Tags: in.Tags, Metadata: in.Metadata, Fields: public,
		CreatedAt: now, UpdatedAt: now,
	}
	if in.Description != nil {
		c.Description = *in.Description
	}
	if t == types.OAuth2 {
		if c.ProviderEndpoints, err = b.providerEndpoints(ctx, s, values); err != nil {
			return nil, nil, err
		}
	}
	if err := b.applyMirrorInput(ctx, s, c, in); err != nil {
		return nil, nil, err
	}
	return c, &secretVersion{ID: id, Version: 1, CreatedAt: now, Fields: secret, Token: issued}, nil
}

func (b *backend) updateCredential(ctx context.Context, s logical.Storage, existing *credential, in *credInput) (*credential, error) {
	t := existing.typ()
	if in.Type != "" && in.Type != existing.Type {
		return nil, newError(KindInvalidInput, "field \"type\" cannot change from %s to %s; delete and re-create the credential", existing.Type, in.Type)
	}
	if err := t.CheckInput(in.Values); err != nil {
		return nil, invalidInput(err)
	}
	current, err := loadSecret(ctx, s, existing.Name, existing.ID)
	if err != nil {
		return nil, err
	}
	public, secret := in.Values.Split(t)
	c := *existing
	c.Fields = existing.Fields.Merge(public)
	if in.Description != nil {
		c.Description = *in.Description
	}
	if in.HasTags {
		c.Tags = in.Tags
	}
	if in.HasMetadata {
		c.Metadata = in.Metadata
	}
	if err := b.applyMirrorInput(ctx, s, &c, in); err != nil {
		return nil, err
	}
	moved, err := b.checkDestination(ctx, s, existing, &c, current, in.Values)
	if err != nil {
		return nil, err
	}
	var next *secretVersion
	var retired []versionRef
	if moved || !secretsEqual(current.Fields, secret) {
		// Different secret values make a new version, as rotation with
		// supplied values does (the policy's strategy applies). So does a
		// new destination: the tokens issued by the old one stay behind.
		id, err := uuid.GenerateUUID()
		if err != nil {
			return nil, fmt.Errorf("generating id: %w", err)
		}
		next = &secretVersion{ID: id, Version: existing.Version + 1, CreatedAt: b.now().UTC(), Fields: current.Fields.Merge(secret)}
		if _, supplied := secret["refresh_token"]; !supplied && !moved {
			// The grant goes on: a provider that rotates refresh tokens
			// accepts only the latest one, which the current version holds.
			if refresh := current.refreshToken(); refresh != "" {
				next.Token = &issuedToken{RefreshToken: refresh}
			}
		}
		retired = b.promote(&c, next)
	}
	if moved && c.Previous != nil {
		// The previous version's secrets were never supplied for the new
		// destination: retire it now rather than at the end of its grace.
		retired = append(retired, *c.Previous)
		c.Previous = nil
	}
	full := c.Fields.Merge(current.Fields)
	if next != nil {
		full = c.Fields.Merge(next.Fields)
	}
	if err := t.Check(full); err != nil {
		return nil, invalidInput(err)
	}
	if err := b.checkUpstream(ctx, s, t, full); err != nil {
		return nil, err
	}
	probe := next
	if probe == nil {
		probe = current
	}
	issued, err := b.verify(ctx, s, in, &c, probe)
	if err != nil {
		return nil, err
	}
	if next != nil && issued != nil {
		next.Token = issued
	}
	c.UpdatedAt = b.now().UTC()
	reconnected := reactivate(&c, next != nil) // new secret material
	if err := b.saveCredential(ctx, s, &c, next, in); err != nil {
		return nil, err
	}
	if next == nil && issued != nil {
		// verify=true obtained a token for the current version (its refresh
		// token may be consumed upstream): store it, or hold it until
		// storage takes it.
		if err := b.putToken(ctx, s, &c, current, issued); err != nil {
			b.held.put(c.Name, c.ID, issued)
			b.logger.Warn("could not store the token verify obtained; holding it in memory until storage takes it", "credential", c.Name, "error", err)
		}
	}
	b.notifyReactivated(ctx, s, reconnected, &c)
	if moved {
		// Retired versions are revoked where they were used, never at the
		// new endpoints.
		old := c
		old.Fields, old.ProviderEndpoints = existing.Fields, existing.ProviderEndpoints
		if old.ProviderEndpoints == nil {
			old.ProviderEndpoints, _ = b.snapshotOf(ctx, s, existing)
		}
		for _, ref := range retired {
			b.destroyVersion(ctx, s, &old, ref.ID)
		}
		retired = nil
	}
	if next != nil {
		b.afterNewVersion(ctx, s, &c, next, retired)
	}
	return &c, nil
}

// checkDestination enforces that no write omitting a credential's secrets
// can change where they are sent. It sets the provider endpoints c keeps (a
// write naming provider or tenant resolves the preset again; others keep the
// stored snapshot), then compares the endpoints before and after: moved is
// true when any differs, and then every secret the current version holds
// must be supplied in values, else invalid_input names the missing ones.
func (b *backend) checkDestination(ctx context.Context, s logical.Storage, existing, c *credential, current *secretVersion, values types.Values) (moved bool, err error) {
	t := existing.typ()
	if t != types.OAuth2 {
		return false, nil
	}
	before, err := b.snapshotOf(ctx, s, existing)
	if err != nil {
		return false, err
	}
	c.ProviderEndpoints = before
	_, provider := values["provider"]
	_, tenant := values["tenant"]
	if provider || tenant {
		if c.ProviderEndpoints, err = b.providerEndpoints(ctx, s, c.Fields); err != nil {
			return false, err
		}
	}
	was, will := destinations(existing.Fields, before), destinations(c.Fields, c.ProviderEndpoints)
	var changed []string
	for _, field := range endpointFields {
		if was[field] != will[field] {
			changed = append(changed, field)
		}
	}
	if len(changed) == 0 {
		return false, nil
	}
	var missing []string
	for _, name := range heldSecrets(t, current) {
		if supplied, _ := values[name].(string); supplied == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return false, newError(KindInvalidInput, "this write changes %s, where the credential's secrets are sent; supply %s in the same write (stored secrets are never sent to a new endpoint)",
			quoteList(changed), quoteList(missing))
	}
	return true, nil
}

// quoteList renders field names as "a", "b".
func quoteList(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(quoted, ", ")
}

// checkUpstream checks what a type's values say about upstreams that only
// the mount knows: that a named provider preset exists, and that the
// endpoints are allowed by config (https, or hosts listed for plain http).
func (b *backend) checkUpstream(ctx context.Context, s logical.Storage, t *types.Type, v types.Values) error {
	if t != types.OAuth2 {
		return nil
	}
	if _, err := b.resolveProvider(ctx, s, v); err != nil {
		return err
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return err
	}
	var errs []error
	for _, field := range []string{"token_url", "auth_url", "device_url", "revocation_url"} {
		if u := v.String(field); u != "" {
			if err := upstream.CheckURL(cfg.HostAllowed, u); err != nil {
				errs = append(errs, fmt.Errorf("field %q: %w", field, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return invalidInput(err)
	}
	return nil
}

// saveCredential writes a new secret version (when sv is not nil), the
// credential's idempotency record and its metadata, all or nothing.
func (b *backend) saveCredential(ctx context.Context, s logical.Storage, c *credential, sv *secretVersion, in *credInput) error {
	var idem *logical.StorageEntry
	var storageID string
	if in.idempotencyKey != "" {
		storageID = idemStorageID(in.idempotencyKey)
	}
	dropped := c.useIdempotencyKey(storageID, b.now().UTC())
	if in.idempotencyKey != "" {
		fp, err := b.fingerprint(ctx, s, in)
		if err != nil {
			return err
		}
		if idem, err = jsonEntry(idemKey(storageID), &idemRecord{Name: c.Name, ID: c.ID, Fingerprint: fp}, false); err != nil {
			return fmt.Errorf("encoding idempotency record: %w", err)
		}
	}
	var staged []*logical.StorageEntry
	if sv != nil {
		entry, err := jsonEntry(secretKey(c.Name, sv.ID), sv, true)
		if err != nil {
			return fmt.Errorf("encoding secret version: %w", err)
		}
		staged = append(staged, entry)
	}
	if idem != nil {
		staged = append(staged, idem)
	}
	meta, err := jsonEntry(credKey(c.Name), c, false)
	if err != nil {
		return fmt.Errorf("encoding credential: %w", err)
	}
	// The metadata is the commit point: until it is written, nothing refers
	// to the new secret version or the idempotency record.
	err = commitEntries(ctx, s, staged, meta)
	b.summary.noteCred(c, err)
	if err != nil {
		return storageError("writing credential", err)
	}
	b.dropIdemRecords(ctx, s, c.Name, dropped)
	return nil
}

// dropIdemRecords deletes the records of idempotency keys a credential no
// longer lists. They are unreferenced already (loadIdem ignores them), so
// this only reclaims space: failures are logged. A record another
// credential has taken over since (the key expired here and was used there)
// is left alone.
func (b *backend) dropIdemRecords(ctx context.Context, s logical.Storage, name string, storageIDs []string) {
	for _, id := range storageIDs {
		entry, err := s.Get(ctx, idemKey(id))
		var rec idemRecord
		if err == nil && entry != nil {
			err = entry.DecodeJSON(&rec)
		}
		if err == nil && entry != nil && rec.Name == name {
			err = s.Delete(ctx, idemKey(id))
		}
		if err != nil {
			b.logger.Warn("could not delete an expired idempotency record", "credential", name, "error", err)
		}
	}
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

// applyMirrorInput sets the mirror fields the input names, after checking
// them against the configured targets.
func (b *backend) applyMirrorInput(ctx context.Context, s logical.Storage, c *credential, in *credInput) error {
	if !in.HasMirror && in.MirrorContent == nil {
		return nil
	}
	targets, content := c.Mirror, c.MirrorContent
	if in.HasMirror {
		targets = in.Mirror
	}
	if in.MirrorContent != nil {
		content = *in.MirrorContent
	}
	if err := b.checkMirrorInput(ctx, s, targets, content); err != nil {
		return err
	}
	c.Mirror, c.MirrorContent = targets, content
	return nil
}

// afterWrite brings the mirrors in line with a created or updated
// credential: copies to its targets, deletes from targets it dropped.
// Mirror failures do not fail the write; they show in mirror/status and
// health and are retried.
func (b *backend) afterWrite(ctx context.Context, s logical.Storage, c, before *credential) {
	if before != nil {
		var dropped []string
		for _, t := range before.Mirror {
			if !slices.Contains(c.Mirror, t) {
				dropped = append(dropped, t)
			}
		}
		b.unmirror(ctx, s, c.Name, dropped)
	}
	// Pending first: if the engine stops before the write below, the
	// periodic work finds the credential still to be mirrored.
	b.markMirrorPending(ctx, s, c)
	if err := b.syncMirrors(ctx, s, c.Name); err != nil {
		b.logger.Warn("mirror write failed; will retry", "credential", c.Name, "error", err)
	}
}
