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
//
// Rebuilding the queue from storage (after start, a reload or an
// invalidation) lists every entry, which takes a while at 100,000
// credentials; it runs without mu held, so the index's other users (a token
// read that refreshes moves its entry) never wait for it: changes made
// meanwhile are recorded in pending and applied to the new queue when the
// listing is done.
type timeIndex struct {
	prefix string
	mu     sync.Mutex
	q      *queue.PriorityQueue // guarded by mu; key name, priority unix minute
	loaded bool                 // guarded by mu; false: rebuild from storage on next use
	// loading is non-nil while a rebuild lists storage, and closed when it
	// ends; pending holds the changes made meanwhile, in order.
	loading chan struct{} // guarded by mu
	pending []indexChange // guarded by mu
	// gen changes on every reset: a rebuild that started before one is
	// discarded (storage may have changed under it).
	gen uint64 // guarded by mu
}

// indexChange is one change to the queue made while it was being rebuilt.
type indexChange struct {
	name   string
	minute int64
	// remove drops name; else name moves to minute, keeping an earlier
	// entry when keepEarlier is set.
	remove, keepEarlier bool
}

func (c indexChange) apply(q *queue.PriorityQueue) {
	if c.remove {
		_, _ = q.PopByKey(c.name)
		return
	}
	setPriority(q, c.name, c.minute, c.keepEarlier)
}

// reset makes the next use reload the index from storage.
func (x *timeIndex) reset() {
	x.mu.Lock()
	x.loaded = false
	x.gen++
	x.mu.Unlock()
}

// changeLocked applies a change to the loaded queue, or records it for the
// rebuild in progress; with neither, storage (which the caller updated
// first) has it for the next rebuild. The caller holds x.mu.
func (x *timeIndex) changeLocked(c indexChange) {
	switch {
	case x.loaded:
		c.apply(x.q)
	case x.loading != nil:
		x.pending = append(x.pending, c)
	}
}

// ensureLoaded builds the queue from storage once; concurrent callers wait
// for the one rebuild (until their ctx ends). The caller does not hold
// x.mu.
func (x *timeIndex) ensureLoaded(ctx context.Context, s logical.Storage) error {
	for {
		x.mu.Lock()
		if x.loaded {
			x.mu.Unlock()
			return nil
		}
		if wait := x.loading; wait != nil {
			x.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return storageError("loading the "+x.prefix+" index", ctx.Err())
			}
		}
		done := make(chan struct{})
		x.loading, x.pending = done, nil
		gen := x.gen
		x.mu.Unlock()

		keys, err := logical.CollectKeysWithPrefix(ctx, s, x.prefix)
		var q *queue.PriorityQueue
		if err == nil {
			q = x.build(keys)
		}

		x.mu.Lock()
		if err == nil && gen == x.gen {
			for _, c := range x.pending {
				c.apply(q)
			}
			x.q, x.loaded = q, true
		}
		x.loading, x.pending = nil, nil
		close(done)
		x.mu.Unlock()
		if err != nil {
			return storageError("loading the "+x.prefix+" index", err)
		}
		// A reset during the rebuild: go again (unless loaded meanwhile).
	}
}

// build makes a queue of the index entries' keys (relative to prefix).
func (x *timeIndex) build(keys []string) *queue.PriorityQueue {
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
	return q
}

// setPriority puts name in the queue at minute; with keepEarlier, an
// earlier existing entry wins (so nothing due is missed).
func setPriority(q *queue.PriorityQueue, name string, minute int64, keepEarlier bool) {
	if old, err := q.PopByKey(name); err == nil && old != nil && keepEarlier && old.Priority < minute {
		minute = old.Priority
	}
	_ = q.Push(&queue.Item{Key: name, Priority: minute}) // cannot be a duplicate: popped above
}

// update moves name to its new time, when the queue is loaded or being
// rebuilt (an unloaded queue reads storage, which the caller updated, when
// it loads).
func (x *timeIndex) update(name string, at time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.changeLocked(indexChange{name: name, minute: at.Unix() / 60})
}

// remove drops name from the in-memory queue.
func (x *timeIndex) remove(name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.changeLocked(indexChange{name: name, remove: true})
}

// take removes name from the in-memory queue and reports whether it was
// there (the queue must be loaded).
func (x *timeIndex) take(name string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.loaded {
		return false
	}
	item, err := x.q.PopByKey(name)
	return err == nil && item != nil
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

// dueItem is a name popped from a timeIndex with its minute.
type dueItem struct {
	name   string
	minute int64
}

// popDue removes and returns the names whose minute is at or before
// horizon's.
func (x *timeIndex) popDue(ctx context.Context, s logical.Storage, horizon time.Time) ([]string, error) {
	items, err := x.popDueItems(ctx, s, horizon)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(items))
	for i, it := range items {
		names[i] = it.name
	}
	return names, nil
}

// popDueItems is popDue with each name's minute, in queue order.
func (x *timeIndex) popDueItems(ctx context.Context, s logical.Storage, horizon time.Time) ([]dueItem, error) {
	for attempt := 0; ; attempt++ {
		if err := x.ensureLoaded(ctx, s); err != nil {
			return nil, err
		}
		x.mu.Lock()
		if x.loaded {
			break // x.mu held
		}
		x.mu.Unlock()
		if attempt == 3 {
			return nil, newError(KindUnavailable, "the %s index keeps being reset while it loads; try again", x.prefix)
		}
	}
	defer x.mu.Unlock()
	limit := horizon.Unix() / 60
	var due []dueItem
	for x.q.Len() > 0 {
		item, err := x.q.Pop()
		if err != nil {
			break
		}
		if item.Priority > limit {
			_ = x.q.Push(item)
			break
		}
		due = append(due, dueItem{name: item.Key, minute: item.Priority})
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
	for _, name := range names {
		x.changeLocked(indexChange{name: name, minute: at.Unix() / 60, keepEarlier: true})
	}
}

// putBackItems returns popped items to the queue at their own minutes
// (keeping an earlier entry).
func (x *timeIndex) putBackItems(items []dueItem) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, it := range items {
		x.changeLocked(indexChange{name: it.name, minute: it.minute, keepEarlier: true})
	}
}
