package nebula

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-uuid"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/types"
)

// Rotation strategies.
const (
	strategyImmediate = "immediate"
	strategyBlueGreen = "blue_green"
)

// walKindRotate marks WAL entries of rotations (framework.PutWAL).
const walKindRotate = "rotate"

// versionRef names one secret version of a credential.
type versionRef struct {
	ID      string `json:"id"`
	Version int    `json:"version"`
	// GraceUntil is when a blue/green previous version is destroyed.
	GraceUntil time.Time `json:"grace_until,omitempty"`
}

// rotationWAL is the WAL record of one rotation in progress.
type rotationWAL struct {
	Name   string `json:"name"`
	FromID string `json:"from_id"`
	NewID  string `json:"new_id"`
}

// rotating tracks rotations in progress on this node, so a second one of
// the same credential answers rotation_in_progress.
type rotating struct {
	mu    sync.Mutex
	names map[string]bool // guarded by mu
}

func (r *rotating) start(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.names == nil {
		r.names = map[string]bool{}
	}
	if r.names[name] {
		return false
	}
	r.names[name] = true
	return true
}

func (r *rotating) end(name string) {
	r.mu.Lock()
	delete(r.names, name)
	r.mu.Unlock()
}

// running reports whether a rotation of name is in progress on this node.
func (r *rotating) running(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.names[name]
}

// rotateResult is what rotate/<name> answers.
type rotateResult struct {
	ID         string
	PreviousID string
	Version    int
}

// rotate makes a new version of a credential: with the supplied secret
// values, or values from the credential's webhook, a generated secret, or
// (oauth2) fresh tokens. Steps with effects outside storage are covered by a
// WAL entry, so a crash leaves the rotation finished or rolled back
// (walRollback).
func (b *backend) rotate(ctx context.Context, s logical.Storage, name string, supplied types.Values) (*rotateResult, error) {
	if !b.inRotation.start(name) {
		return nil, newError(KindRotationInProgress, "credential %q is being rotated; try again when it finishes", name)
	}
	defer b.inRotation.end(name)
	// The rotation's upstream calls take the name's upstream lock (not the
	// lock shard other names share) until the new version is committed, so
	// a token refresh of the same credential neither runs with the refresh
	// token the rotation is using nor stores a token for the version being
	// replaced.
	unlockUpstream, err := b.upstreamLocks.lock(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlockUpstream()

	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	lock := b.lock(name)
	lock.RLock()
	c, sv, err := loadCredentialWithCurrent(ctx, s, name)
	lock.RUnlock()
	if err != nil {
		return nil, err
	}
	newID, err := uuid.GenerateUUID()
	if err != nil {
		return nil, fmt.Errorf("generating id: %w", err)
	}
	walID, err := framework.PutWAL(ctx, s, walKindRotate, &rotationWAL{Name: name, FromID: c.ID, NewID: newID})
	if err != nil {
		return nil, storageError("writing the rotation WAL", err)
	}
	if err := b.rotationStep("wal"); err != nil {
		return nil, err
	}

	next, err := b.newVersion(ctx, s, cfg, c, sv, supplied)
	if err != nil {
		b.finishWAL(ctx, s, walID)
		return nil, err
	}
	next.ID = newID
	if err := b.rotationStep("obtained"); err != nil {
		return nil, err
	}
	staged, err := jsonEntry(secretKey(name, newID), next, true)
	if err != nil {
		return nil, fmt.Errorf("encoding secret version: %w", err)
	}
	if err := s.Put(ctx, staged); err != nil {
		b.finishWAL(ctx, s, walID)
		if next.Token != nil && len(supplied) == 0 {
			// The token came from the current version's grant, whose
			// refresh token the provider may have consumed: keep it for the
			// current version, which stores it on its next read.
			b.held.put(name, sv.ID, next.Token)
		}
		return nil, storageError("storing the new version", err)
	}
	if err := b.rotationStep("staged"); err != nil {
		return nil, err
	}

	// The retired version's revocations are made after the lock is
	// released (deferred calls run last first).
	ctx, revoke := b.deferRevocations(ctx)
	defer revoke()
	lock.Lock()
	defer lock.Unlock()
	c, err = loadCredential(ctx, s, name)
	if err == nil && (c == nil || c.ID != sv.ID) {
		err = newError(KindRotationInProgress, "credential %q changed during the rotation; try again", name)
	}
	if err != nil {
		b.deleteVersion(ctx, s, name, newID)
		b.finishWAL(ctx, s, walID)
		return nil, err
	}
	res, err := b.commitRotation(ctx, s, c, next)
	if err != nil {
		return nil, err // the WAL finishes (rolls forward) the staged version
	}
	if err := b.rotationStep("cleaned"); err != nil {
		return nil, err
	}
	b.finishWAL(ctx, s, walID)
	return res, nil
}

// commitRotation makes a staged version current, then retires what the
// strategy does not keep. The caller holds the credential's write lock.
func (b *backend) commitRotation(ctx context.Context, s logical.Storage, c *credential, next *secretVersion) (*rotateResult, error) {
	previousID := c.ID
	next.Version = c.Version + 1
	retired := b.promote(c, next)
	c.UpdatedAt = b.now().UTC()
	c.RotationState.Failures, c.RotationState.NextAttemptAt, c.RotationState.LastError = 0, time.Time{}, ""
	if p := c.Rotation; p != nil && !p.RotateAt.IsZero() && !b.now().Before(p.RotateAt) {
		p.RotateAt = time.Time{} // the one-off rotation happened
	}
	entry, err := jsonEntry(secretKey(c.Name, next.ID), next, true)
	if err != nil {
		return nil, fmt.Errorf("encoding secret version: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil { // the version number is final now
		return nil, storageError("storing the new version", err)
	}
	if err := b.writeMeta(ctx, s, c); err != nil {
		return nil, err
	}
	b.stats.rotations.Add(1)
	if err := b.rotationStep("committed"); err != nil {
		return nil, err
	}
	b.afterNewVersion(ctx, s, c, next, retired)
	return &rotateResult{ID: c.ID, PreviousID: previousID, Version: c.Version}, nil
}

// promote makes next the current version of c in memory and returns the
// versions to destroy: the old current one unless blue/green keeps it for
// its grace period, and any earlier previous version.
func (b *backend) promote(c *credential, next *secretVersion) (retired []versionRef) {
	now := b.now().UTC()
	old := versionRef{ID: c.ID, Version: c.Version}
	if c.Previous != nil {
		retired = append(retired, *c.Previous)
	}
	c.Previous = nil
	if p := c.Rotation; p != nil && p.Strategy == strategyBlueGreen && p.GracePeriod > 0 {
		old.GraceUntil = now.Add(p.GracePeriod)
		c.Previous = &old
	} else {
		retired = append(retired, old)
	}
	c.ID, c.Version = next.ID, next.Version
	c.RotationState.LastRotatedAt = now
	return retired
}

// afterNewVersion runs once a new version is committed: it destroys the
// retired versions, indexes the new token's expiry, reschedules, and drops
// the cached token.
func (b *backend) afterNewVersion(ctx context.Context, s logical.Storage, c *credential, next *secretVersion, retired []versionRef) {
	for _, ref := range retired {
		b.destroyVersion(ctx, s, c, ref.ID)
	}
	if next.Token != nil {
		b.indexExpiry(ctx, s, c.Name, nil, next.Token)
	}
	b.reschedule(ctx, s, c)
	b.dropCached(c.Name)
	if len(c.Mirror) > 0 {
		b.markMirrorPending(ctx, s, c)
	}
}

// destroyVersion revokes a retired version's tokens at the provider (oauth2,
// where a revocation endpoint exists) and deletes it. Failures are logged:
// the version is no longer served either way. A version the stored
// credential still serves is left alone. The caller holds the credential's
// write lock.
func (b *backend) destroyVersion(ctx context.Context, s logical.Storage, c *credential, id string) {
	if b.stillServed(ctx, s, c.Name, id) {
		return
	}
	sv, err := loadSecret(ctx, s, c.Name, id)
	if err != nil {
		return // already gone
	}
	if sv.Token != nil {
		b.revokeTokens(ctx, s, c, sv)
		b.indexExpiry(ctx, s, c.Name, sv.Token, nil)
	}
	b.deleteVersion(ctx, s, c.Name, id)
	b.audit(ctx, nil, auditEvent{Action: actionDestroyVersion, Credential: c.Name, Version: sv.Version, Success: true}, nil)
}

// deleteVersion deletes a secret version, unless the stored credential
// still serves it (a rotation or rollback working from a stale view must
// never delete the current version). The caller holds the credential's
// write lock.
func (b *backend) deleteVersion(ctx context.Context, s logical.Storage, name, id string) {
	if b.stillServed(ctx, s, name, id) {
		return
	}
	if err := s.Delete(ctx, secretKey(name, id)); err != nil {
		b.logger.Warn("could not delete a retired secret version", "credential", name, "error", err)
	}
}

// stillServed reports whether the stored credential serves version id: it
// is the current version, or the previous one within its grace period. When
// the credential cannot be read it answers true (nothing is deleted). The
// caller holds the credential's write lock.
func (b *backend) stillServed(ctx context.Context, s logical.Storage, name, id string) bool {
	c, err := loadCredential(ctx, s, name)
	if err != nil {
		b.logger.Warn("not deleting a secret version: the credential could not be read", "credential", name, "error", err)
		return true
	}
	if c == nil {
		return false
	}
	if c.ID == id || c.Previous != nil && c.Previous.ID == id && b.now().Before(c.Previous.GraceUntil) {
		b.logger.Warn("not deleting a secret version that is still served", "credential", name, "version_id", id)
		return true
	}
	return false
}

func (b *backend) finishWAL(ctx context.Context, s logical.Storage, id string) {
	if err := framework.DeleteWAL(ctx, s, id); err != nil {
		b.logger.Warn("could not delete a rotation WAL entry; rollback will find nothing to do", "error", err)
	}
}

// rotationStep lets tests interrupt a rotation after a step, as a crash
// would.
func (b *backend) rotationStep(step string) error {
	if b.rotationHook == nil {
		return nil
	}
	return b.rotationHook(step)
}

// newVersion obtains the secret values of a new version (ID and Version are
// set by the caller).
func (b *backend) newVersion(ctx context.Context, s logical.Storage, cfg *Config, c *credential, sv *secretVersion, supplied types.Values) (*secretVersion, error) {
	t := c.typ()
	if !t.Rotatable {
		return nil, newError(KindInvalidInput, "type %s cannot be rotated", t.Name)
	}
	if err := t.CheckInput(supplied); err != nil {
		return nil, invalidInput(err)
	}
	public, secret := supplied.Split(t)
	if len(public) > 0 {
		return nil, newError(KindInvalidInput, "rotation takes secret fields only (%v); change %v with a write to creds/%s", t.SecretFields(), public.Names(), c.Name)
	}
	fields := sv.Fields.Merge(secret)
	switch {
	case len(secret) > 0 || t == types.OAuth2:
	case t.Generates():
		gen, err := t.Generate(c.Fields.Merge(fields))
		if err != nil {
			return nil, err
		}
		fields = fields.Merge(gen)
	case c.Rotation != nil && c.Rotation.WebhookURL != "":
		got, err := b.callWebhook(ctx, s, cfg, c, t)
		if err != nil {
			return nil, err
		}
		fields = fields.Merge(got)
	default:
		return nil, newError(KindInvalidInput, "rotating a %s credential needs new values (%v) or a rotation webhook (creds/%s/rotation webhook_url)", t.Name, t.SecretFields(), c.Name)
	}
	if err := t.Check(c.Fields.Merge(fields)); err != nil {
		return nil, newError(KindRotationFailed, "the new values of %q are not valid: %v", c.Name, joinedMessage(err))
	}
	next := &secretVersion{CreatedAt: b.now().UTC(), Fields: fields}
	if t == types.OAuth2 {
		probe := &secretVersion{Fields: fields, Token: sv.Token}
		if len(secret) > 0 {
			probe.Token = nil // new client credentials start afresh
		}
		issued, err := b.requestToken(ctx, s, cfg, c, probe)
		b.stats.observeRefresh(c.Name, b.now(), 0, err)
		if err != nil {
			var ce *CredentialError
			if errors.As(err, &ce) && ce.Kind == KindRefreshFailed {
				return nil, &CredentialError{Kind: KindRotationFailed, Msg: ce.Msg, Err: err}
			}
			return nil, err
		}
		next.Token = issued
	}
	return next, nil
}

// walRollback finishes or rolls back a rotation that did not complete (a
// crash, or a failure after its WAL entry). A staged new version whose
// credential is still at the version the rotation started from is made
// current (the new secret may already be in force upstream); a committed one
// gets its clean-up; anything else is an orphan and is deleted (unless it is
// still served). A rotation of the credential still running on this node is
// left alone: the rollback fails and Vault retries it later.
func (b *backend) walRollback(ctx context.Context, req *logical.Request, kind string, data any) error {
	if kind != walKindRotate {
		return nil
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	var w rotationWAL
	if err := json.Unmarshal(raw, &w); err != nil {
		return err
	}
	s := req.Storage
	// Revocations of an orphaned version are sent once the lock is
	// released.
	ctx, revoke := b.deferRevocations(ctx)
	defer revoke()
	lock := b.lock(w.Name)
	lock.Lock()
	defer lock.Unlock()
	if b.inRotation.running(w.Name) {
		// Maybe this very rotation, slower than WALRollbackMinAge: finishing
		// it here would race its commit. Vault keeps the entry and retries.
		return newError(KindRotationInProgress, "credential %q is being rotated; its WAL entry is left for a later rollback", w.Name)
	}
	c, err := loadCredential(ctx, s, w.Name)
	if err != nil {
		return err
	}
	if c == nil {
		b.deleteVersion(ctx, s, w.Name, w.NewID)
		return nil
	}
	staged, stagedErr := loadSecret(ctx, s, w.Name, w.NewID)
	switch {
	case c.ID == w.NewID:
		// Committed; finish the clean-up of the version it replaced.
		if c.Previous == nil || c.Previous.ID != w.FromID {
			b.destroyVersion(ctx, s, c, w.FromID)
		}
		b.reschedule(ctx, s, c)
		b.dropCached(c.Name)
	case c.ID == w.FromID && stagedErr == nil:
		b.logger.Info("finishing an interrupted rotation", "credential", c.Name)
		if _, err := b.commitRotation(ctx, s, c, staged); err != nil {
			return err
		}
	default:
		b.deleteVersion(ctx, s, w.Name, w.NewID)
	}
	return nil
}
