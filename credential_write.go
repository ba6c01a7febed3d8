package nebula

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hashicorp/go-uuid"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/types"
)

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
	if err := checkMirrorDestination(existing, &c, current, in.Values); err != nil {
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
	// The metadata is the commit point: until it is written, nothing refers
	// to the new secret version or the idempotency record.
	if err := b.writeMeta(ctx, s, c, staged...); err != nil {
		return err
	}
	b.dropIdemRecords(ctx, s, c.Name, dropped)
	return nil
}

// writeMeta writes a credential's metadata (creds/<name>), the one writer of
// that entry, and notes the outcome in the operator-read summary. Staged
// entries (new keys nothing points to yet: a secret version, an idempotency
// record) are written first and the metadata commits them, all or nothing
// (commitEntries). Callers that must not fail log the error themselves.
func (b *backend) writeMeta(ctx context.Context, s logical.Storage, c *credential, staged ...*logical.StorageEntry) error {
	meta, err := jsonEntry(credKey(c.Name), c, false)
	if err != nil {
		return fmt.Errorf("encoding credential: %w", err)
	}
	err = commitEntries(ctx, s, staged, meta)
	b.summary.noteCred(c, err)
	if err != nil {
		return storageError("writing credential", err)
	}
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
