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

// Rotation retry backoff bounds.
const (
	rotationRetryMin = time.Minute
	rotationRetryMax = time.Hour
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

// rotationPolicy is a credential's rotation schedule (creds/<name>/rotation).
type rotationPolicy struct {
	// Interval between rotations; zero means no periodic rotation.
	Interval time.Duration `json:"interval"`
	// WarningPeriod before a due rotation during which the credential is
	// flagged "rotation due".
	WarningPeriod time.Duration `json:"warning_period"`
	Strategy      string        `json:"strategy"`
	// GracePeriod a blue/green previous version stays readable.
	GracePeriod time.Duration `json:"grace_period"`
	// RotateAt is a one-off rotation time; zero means none.
	RotateAt time.Time `json:"rotate_at,omitempty"`
	// WebhookURL is called (HMAC-signed) for new values of types that
	// cannot make their own; its secret is stored seal-wrapped apart.
	WebhookURL string `json:"webhook_url,omitempty"`
}

// rotationState is what the engine remembers of past rotations.
type rotationState struct {
	LastRotatedAt time.Time `json:"last_rotated_at,omitempty"`
	LastAttemptAt time.Time `json:"last_attempt_at,omitempty"`
	// Failures counts consecutive failed scheduled rotations.
	Failures int `json:"failures,omitempty"`
	// NextAttemptAt delays a retry after a failure (backoff).
	NextAttemptAt time.Time `json:"next_attempt_at,omitempty"`
	LastError     string    `json:"last_error,omitempty"`
	// ScheduledAt is when the credential's schedule index entry fires.
	ScheduledAt time.Time `json:"scheduled_at,omitempty"`
	// WarnedFor is the rotation time a rotation_due notification was sent
	// for (notify.go).
	WarnedFor time.Time `json:"warned_for,omitempty"`
}

// nextRotation is when the policy next rotates; zero means never.
func (c *credential) nextRotation() time.Time {
	p := c.Rotation
	if p == nil {
		return time.Time{}
	}
	var next time.Time
	if p.Interval > 0 {
		base := c.RotationState.LastRotatedAt
		if base.IsZero() {
			base = c.CreatedAt
		}
		next = base.Add(p.Interval)
	}
	if !p.RotateAt.IsZero() && (next.IsZero() || p.RotateAt.Before(next)) {
		next = p.RotateAt
	}
	return next
}

// rotationWarning reports whether now is inside the warning period of a
// due rotation.
func (c *credential) rotationWarning(now time.Time) bool {
	next := c.nextRotation()
	return !next.IsZero() && !now.Before(next.Add(-c.Rotation.WarningPeriod))
}

// rotationDue reports whether a scheduled rotation should run at now.
func (c *credential) rotationDue(now time.Time) bool {
	next := c.nextRotation()
	if next.IsZero() || now.Before(next) {
		return false
	}
	return c.RotationState.NextAttemptAt.IsZero() || !now.Before(c.RotationState.NextAttemptAt)
}

// nextWork is when the scheduler must look at the credential again: the
// next rotation (or retry), or the end of a grace period; zero means never.
func (c *credential) nextWork() time.Time {
	var at time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	if next := c.nextRotation(); !next.IsZero() {
		if retry := c.RotationState.NextAttemptAt; retry.After(next) {
			next = retry
		}
		earliest(next)
	}
	earliest(c.warningStart()) // a rotation_due notification to send
	if c.Previous != nil {
		earliest(c.Previous.GraceUntil)
	}
	return at
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
	c, sv, err := loadCurrent(ctx, s, name)
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
	if err := b.putMeta(ctx, s, c); err != nil {
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

func (b *backend) putMeta(ctx context.Context, s logical.Storage, c *credential) error {
	entry, err := jsonEntry(credKey(c.Name), c, false)
	if err != nil {
		return fmt.Errorf("encoding credential: %w", err)
	}
	err = s.Put(ctx, entry)
	b.summary.noteCred(c, err)
	if err != nil {
		return storageError("writing credential", err)
	}
	return nil
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

// reschedule moves the credential's schedule entry to its next work time.
func (b *backend) reschedule(ctx context.Context, s logical.Storage, c *credential) {
	at := c.nextWork()
	old := c.RotationState.ScheduledAt
	if at.Equal(old) {
		// The stored entry is right; put the name back in the queue, which
		// pops a whole minute at a time (it may be early by seconds).
		if !at.IsZero() {
			b.sched.update(c.Name, at)
		}
		return
	}
	b.sched.move(ctx, s, b.logger, c.Name, old, at)
	c.RotationState.ScheduledAt = at
	if err := b.putMeta(ctx, s, c); err != nil {
		b.logger.Warn("could not store the rotation schedule", "credential", c.Name, "error", err)
	}
}

// periodicRotation is the scheduler: it rotates what is due, destroys
// previous versions whose grace period ended, and retries failures with
// backoff. Its cost grows with the number due. Each credential gets
// b.itemBudget, so one whose upstream hangs does not hold up the others;
// names the run does not get to (its context ended) are due again on the
// next run.
func (b *backend) periodicRotation(ctx context.Context, s logical.Storage) error {
	now := b.now()
	due, err := b.sched.popDue(ctx, s, now)
	if err != nil {
		return err
	}
	var errs []error
	for i, name := range due {
		if ctx.Err() != nil {
			b.sched.putBack(due[i:], now)
			errs = append(errs, fmt.Errorf("%d due credentials left for the next run: %w", len(due)-i, ctx.Err()))
			break
		}
		itemCtx, cancel := context.WithTimeout(ctx, b.itemBudget)
		errs = append(errs, b.maintain(itemCtx, s, name))
		cancel()
	}
	return errors.Join(errs...)
}

// maintain does one credential's due rotation work. When it fails before
// the credential is rescheduled (storage, or ctx ended), the name goes back
// in the schedule queue, due on the next run.
func (b *backend) maintain(ctx context.Context, s logical.Storage, name string) (err error) {
	now := b.now()
	rescheduled := false
	defer func() {
		if err != nil && !rescheduled {
			b.sched.putBack([]string{name}, now)
		}
	}()
	// A grace end's revocations are sent once the lock is released.
	ctx, revoke := b.deferRevocations(ctx)
	defer revoke()
	lock := b.lock(name)
	lock.Lock()
	c, err := loadCredential(ctx, s, name)
	if err != nil || c == nil {
		lock.Unlock()
		return err
	}
	if c.Previous != nil && !now.Before(c.Previous.GraceUntil) {
		b.destroyVersion(ctx, s, c, c.Previous.ID)
		c.Previous = nil
		if err := b.putMeta(ctx, s, c); err != nil {
			lock.Unlock()
			return err
		}
	}
	b.noteRotationDue(ctx, s, c, now)
	due := c.rotationDue(now)
	if !due {
		b.reschedule(ctx, s, c)
		rescheduled = true
	}
	lock.Unlock()
	if !due {
		return nil
	}

	res, rotErr := b.rotate(ctx, s, name, nil)
	// Record the outcome even when the rotation used up ctx (a hanging
	// upstream): a failure recorded gets its backoff.
	ctx = context.WithoutCancel(ctx)
	ev := auditEvent{Action: actionRotate, Credential: name}
	if res != nil {
		ev.Version = res.Version
	}
	b.audit(ctx, nil, auditOutcome(ev, rotErr), nil)
	lock.Lock()
	defer lock.Unlock()
	if c, err = loadCredential(ctx, s, name); err != nil || c == nil {
		return err
	}
	c.RotationState.LastAttemptAt = b.now().UTC()
	if rotErr != nil {
		b.stats.rotationFailures.Add(1)
		c.RotationState.Failures++
		c.RotationState.NextAttemptAt = b.now().UTC().Add(rotationBackoff(c.RotationState.Failures))
		c.RotationState.LastError = rotErr.Error()
		b.notify(ctx, s, eventRotationFailed, c, "")
		b.logger.Warn("scheduled rotation failed", "credential", name, "failures", c.RotationState.Failures, "error", rotErr)
	}
	if err := b.putMeta(ctx, s, c); err != nil {
		return err
	}
	b.reschedule(ctx, s, c)
	rescheduled = true
	return rotErr
}

// rotationBackoff is the wait before retry n (1-based): one minute,
// doubling, at most an hour.
func rotationBackoff(n int) time.Duration {
	d := rotationRetryMin
	for i := 1; i < n && d < rotationRetryMax; i++ {
		d *= 2
	}
	return min(d, rotationRetryMax)
}
