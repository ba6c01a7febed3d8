package nebula

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/queue"
)

// Expiry index. Each refreshable token's expiry is kept twice:
//
//   - in storage, as an empty entry "expiry/<unix day>/<unix minute>/<name>",
//     so a node that becomes active (or restarts) can rebuild the index;
//   - in memory, in a priority queue ordered by expiry (the pattern of Vault's
//     database engine for static role rotation), loaded once from storage on
//     first use.
//
// Finding what is due pops the queue up to the horizon, so the cost of a
// refresh run grows with the number due, not with the number stored. Entries
// are hints: a stale one (refreshed elsewhere, deleted) is dropped when found.
//
// The rotation scheduler keeps the same kind of index under "sched/".
const (
	expiryPrefix = "expiry/"
	schedPrefix  = "sched/"
)

func expiryKey(t time.Time, name string) string { return timeKey(expiryPrefix, t, name) }

func timeKey(prefix string, t time.Time, name string) string {
	return fmt.Sprintf("%s%08d/%012d/%s", prefix, t.Unix()/86400, t.Unix()/60, name)
}

// timeIndex orders credential names by a time, at minute resolution: the
// in-memory side of an index whose entries are also in storage under
// prefix.
type timeIndex struct {
	prefix string
	mu     sync.Mutex
	q      *queue.PriorityQueue // guarded by mu; key name, priority unix minute
	loaded bool                 // guarded by mu; false: rebuild from storage on next use
}

// reset makes the next use reload the index from storage.
func (x *timeIndex) reset() {
	x.mu.Lock()
	x.loaded = false
	x.mu.Unlock()
}

// ensureLoaded builds the queue from storage once. The caller holds x.mu.
func (x *timeIndex) ensureLoaded(ctx context.Context, s logical.Storage) error {
	if x.loaded {
		return nil
	}
	keys, err := logical.CollectKeysWithPrefix(ctx, s, x.prefix)
	if err != nil {
		return storageError("loading the "+x.prefix+" index", err)
	}
	q := queue.New()
	for _, key := range keys {
		parts := strings.Split(strings.TrimPrefix(key, x.prefix), "/")
		if len(parts) != 3 {
			continue
		}
		minute, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil {
			continue
		}
		setPriority(q, parts[2], minute, true)
	}
	x.q, x.loaded = q, true
	return nil
}

// setPriority puts name in the queue at minute; with keepEarlier, an
// earlier existing entry wins (so nothing due is missed).
func setPriority(q *queue.PriorityQueue, name string, minute int64, keepEarlier bool) {
	if old, err := q.PopByKey(name); err == nil && old != nil && keepEarlier && old.Priority < minute {
		minute = old.Priority
	}
	_ = q.Push(&queue.Item{Key: name, Priority: minute}) // cannot be a duplicate: popped above
}

// update moves name to its new expiry, when the queue is loaded (an
// unloaded queue reads storage, which the caller updated, when it loads).
func (x *timeIndex) update(name string, at time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.loaded {
		setPriority(x.q, name, at.Unix()/60, false)
	}
}

// remove drops name from the in-memory queue.
func (x *timeIndex) remove(name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.loaded {
		_, _ = x.q.PopByKey(name)
	}
}

// move changes name's entry from old to at (either may be zero: none), in
// storage and in memory. Storage failures are logged: entries are hints.
func (x *timeIndex) move(ctx context.Context, s logical.Storage, logger hclog.Logger, name string, old, at time.Time) {
	if !at.IsZero() {
		if err := s.Put(ctx, &logical.StorageEntry{Key: timeKey(x.prefix, at, name)}); err != nil {
			logger.Warn("could not write an index entry", "index", x.prefix, "credential", name, "error", err)
		}
		x.update(name, at)
	} else {
		x.remove(name)
	}
	if !old.IsZero() && (at.IsZero() || timeKey(x.prefix, old, name) != timeKey(x.prefix, at, name)) {
		if err := s.Delete(ctx, timeKey(x.prefix, old, name)); err != nil {
			logger.Warn("could not drop an old index entry", "index", x.prefix, "credential", name, "error", err)
		}
	}
}

// popDue removes and returns the names whose expiry minute is at or before
// horizon's.
func (x *timeIndex) popDue(ctx context.Context, s logical.Storage, horizon time.Time) ([]string, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.ensureLoaded(ctx, s); err != nil {
		return nil, err
	}
	limit := horizon.Unix() / 60
	var due []string
	for x.q.Len() > 0 {
		item, err := x.q.Pop()
		if err != nil {
			break
		}
		if item.Priority > limit {
			_ = x.q.Push(item)
			break
		}
		due = append(due, item.Key)
	}
	return due, nil
}

// putBack returns names popDue removed, whose work was not done (the run
// ran out of time, or storage failed), to the queue at at, keeping an
// earlier entry, so the next run finds them due. An unloaded queue needs
// nothing: popping left their storage entries in place.
func (x *timeIndex) putBack(names []string, at time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.loaded {
		return
	}
	for _, name := range names {
		setPriority(x.q, name, at.Unix()/60, true)
	}
}

// indexExpiry moves a credential's expiry index entry from the previous
// token's expiry to the next one's (either may be nil).
func (b *backend) indexExpiry(ctx context.Context, s logical.Storage, name string, previous, next *issuedToken) {
	var old, at time.Time
	if previous != nil {
		old = previous.Expiry
	}
	if next != nil {
		at = next.Expiry
	}
	b.expiry.move(ctx, s, b.logger, name, old, at)
}

// refreshResult is the outcome of refreshing what is due.
type refreshResult struct {
	Refreshed []string
	Failed    map[string]string // name -> error message
}

// refreshDue refreshes every credential whose token expires within
// refresh_ahead of now.
func (b *backend) refreshDue(ctx context.Context, s logical.Storage) (*refreshResult, error) {
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	due, err := b.expiry.popDue(ctx, s, b.now().Add(cfg.RefreshAhead))
	if err != nil {
		return nil, err
	}
	res := &refreshResult{Refreshed: []string{}, Failed: map[string]string{}}
	for i, name := range due {
		if ctx.Err() != nil {
			b.requeue(ctx, s, due[i:])
			break
		}
		refreshed, err := b.refreshIfDue(ctx, s, cfg, name)
		if isReadOnly(err) {
			// Not the node to refresh on; the active node does.
			b.requeue(ctx, s, due[i:])
			return nil, logical.ErrReadOnly
		}
		if err != nil && ErrorKind(err) != KindNotFound || refreshed {
			b.audit(ctx, nil, auditOutcome(auditEvent{Action: actionRefresh, Credential: name}, err), nil)
		}
		switch {
		case err != nil && ErrorKind(err) == KindNotFound:
			// Deleted since it was indexed; delete dropped its entry.
		case err != nil:
			res.Failed[name] = err.Error()
			b.requeue(ctx, s, []string{name}) // due again on the next run
		case refreshed:
			res.Refreshed = append(res.Refreshed, name)
		}
	}
	return res, nil
}

// requeue puts names back at their stored token's expiry.
func (b *backend) requeue(ctx context.Context, s logical.Storage, names []string) {
	for _, name := range names {
		_, sv, err := loadCurrent(ctx, s, name)
		if err == nil && sv.Token != nil {
			b.expiry.update(name, sv.Token.Expiry)
		}
	}
}

// refreshIfDue refreshes one credential when its token is expiring. The
// upstream request is made without the lock shard held (refresh), so it
// never blocks other credentials; refresh serialises it with token reads of
// the same name. A token that is not due (refreshed by a read since it was
// queued) is queued again at its expiry.
func (b *backend) refreshIfDue(ctx context.Context, s logical.Storage, cfg *Config, name string) (bool, error) {
	lock := b.lock(name)
	lock.RLock()
	c, sv, err := loadCurrent(ctx, s, name)
	lock.RUnlock()
	if err != nil {
		return false, err
	}
	if !c.typ().Refreshable || sv.Token == nil || c.needsReconnect() {
		return false, nil // needs_reconnect: no upstream request until a new version
	}
	if held := b.held.get(name, c.ID); held != nil {
		sv.Token = held
	}
	if !sv.Token.expiring(b.now(), cfg.RefreshAhead) {
		b.expiry.update(name, sv.Token.Expiry)
		return false, nil
	}
	out, err := b.refresh(ctx, s, cfg, name, false)
	if err != nil {
		return false, err
	}
	if !out.refreshed {
		b.expiry.update(name, out.token.Expiry)
		return false, nil
	}
	b.dropCached(name)
	return true, nil
}
