package nebula

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/types"
)

// pollFlow asks the token endpoint once whether the user approved a pending
// device flow, when its interval has passed, and records the answer:
// completed, still pending (slower after slow_down), failed or expired.
// The caller holds the flow's lock.
func (b *backend) pollFlow(ctx context.Context, s logical.Storage, f *flow) error {
	now := b.now()
	if f.Status != flowPending || f.Grant != types.GrantDeviceCode {
		return nil
	}
	if f.expired(now) {
		f.end(flowExpired, f.ExpiresAt)
		return b.storeEnded(ctx, s, f)
	}
	if now.Before(f.NextPollAt) {
		return nil
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return err
	}
	poll, err := b.pollDevice(ctx, s, cfg, f)
	if err == nil && poll.Token != nil {
		return b.completeFlow(ctx, s, cfg, f, poll.Token)
	}
	now = b.now()
	if err == nil {
		// Not an error: the user has not answered yet.
		if poll.State == upstream.DeviceSlowDown {
			f.Interval += slowDownStep
		}
		f.LastPollError = ""
		f.NextPollAt = now.Add(time.Duration(f.Interval) * time.Second)
		return saveFlow(ctx, s, f, "")
	}
	var ue *upstream.Error
	if !errors.As(err, &ue) {
		if recordedOnFlow(err) { // e.g. the provider preset is gone
			f.fail(now, safeMessage(err))
			return b.endWith(ctx, s, f, err)
		}
		return err
	}
	switch {
	case ue.Code == "expired_token":
		f.end(flowExpired, now)
		return b.storeEnded(ctx, s, f)
	case ue.Code == "access_denied":
		f.fail(now, "the user denied the authorization (access_denied)")
		return b.storeEnded(ctx, s, f)
	case !ue.Permanent:
		f.LastPollError = ue.Error()
	default:
		f.fail(now, ue.Error())
		return b.storeEnded(ctx, s, f)
	}
	f.NextPollAt = now.Add(time.Duration(f.Interval) * time.Second)
	return saveFlow(ctx, s, f, "")
}

// periodicFlows is the flows' background work, for backend.tasks: it polls
// pending device flows that are due, marks pending flows past their expiry
// as expired (dropping their secrets), and deletes ended flows
// flowRetention after they ended, with their state index entries. Each flow
// gets b.itemBudget, so one whose token endpoint hangs does not hold up the
// others.
func (b *backend) periodicFlows(ctx context.Context, s logical.Storage) error {
	ids, err := s.List(ctx, flowPrefix)
	if err != nil {
		return flowStorageError("listing flows", err)
	}
	var errs []error
	for _, id := range ids {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		itemCtx, cancel := context.WithTimeout(ctx, b.itemBudget)
		err := b.tendFlow(itemCtx, s, id)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("flow %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// tendFlow does one flow's background work.
func (b *backend) tendFlow(ctx context.Context, s logical.Storage, id string) error {
	lock := flowLock(id)
	lock.Lock()
	defer lock.Unlock()
	f, err := loadFlow(ctx, s, id)
	if err != nil || f == nil {
		return err
	}
	now := b.now()
	switch {
	case f.Status == flowPending && f.expired(now):
		f.end(flowExpired, f.ExpiresAt)
		return b.storeEnded(ctx, s, f)
	case f.Status == flowPending:
		if err := b.pollFlow(ctx, s, f); err != nil && !recordedOnFlow(err) {
			return err
		}
		return nil
	case now.Before(f.EndedAt.Add(flowRetention)):
		return nil
	}
	return deleteFlow(ctx, s, f)
}
