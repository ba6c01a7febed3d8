package nebula

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Rotation retry backoff bounds.
const (
	rotationRetryMin = time.Minute
	rotationRetryMax = time.Hour
)

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
	if err := b.writeMeta(ctx, s, c); err != nil {
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
		if err := b.writeMeta(ctx, s, c); err != nil {
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
	if err := b.writeMeta(ctx, s, c); err != nil {
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
