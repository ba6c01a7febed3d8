package nebula

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
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

// Refresh scheduling. Background refresh takes a token up at
//
//	refreshAt = expiry - refresh_ahead - jitter
//
// where jitter is fixed per (name, expiry) in [0, min(lifetime/10,
// refresh_ahead)), so tokens that expire together (created in one batch,
// or all refreshed after an outage) are spread over several minutes instead
// of loading one. The expiry index is keyed at refreshAt + refresh_ahead
// (expiry - jitter) and popped up to now + refresh_ahead, which keeps entries
// written before jitter existed (keyed at expiry) valid. Token reads and the
// cache are unaffected: a read refreshes at expiry - refresh_ahead.

// refreshJitter is the jitter of a token of name (see above).
func refreshJitter(name string, t *issuedToken, ahead time.Duration) time.Duration {
	bound := ahead
	if !t.IssuedAt.IsZero() && t.Expiry.After(t.IssuedAt) {
		bound = min(bound, t.Expiry.Sub(t.IssuedAt)/10)
	}
	if bound <= 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(name)) // never fails
	var exp [8]byte
	binary.BigEndian.PutUint64(exp[:], uint64(t.Expiry.Unix()))
	_, _ = h.Write(exp[:])
	return time.Duration(h.Sum64() % uint64(bound))
}

// indexTime is the expiry index time of a token of name: expiry - jitter.
func indexTime(name string, t *issuedToken, ahead time.Duration) time.Time {
	return t.Expiry.Add(-refreshJitter(name, t, ahead))
}

// refreshAt is when background refresh takes a token of name up.
func refreshAt(name string, t *issuedToken, ahead time.Duration) time.Time {
	return indexTime(name, t, ahead).Add(-ahead)
}

// indexExpiry moves a credential's expiry index entry from the previous
// token's to the next one's (either may be nil).
func (b *backend) indexExpiry(ctx context.Context, s logical.Storage, name string, previous, next *issuedToken) {
	ahead := DefaultConfig().RefreshAhead
	if cfg, err := b.getConfig(ctx, s); err == nil {
		ahead = cfg.RefreshAhead
	}
	var old, at time.Time
	if previous != nil {
		old = indexTime(name, previous, ahead)
	}
	if next != nil {
		at = indexTime(name, next, ahead)
		b.backoff.drop(name)
	}
	b.expiry.move(ctx, s, b.logger, name, old, at)
}

// Background refresh failure backoff: one minute, doubling, at most an
// hour (the bounds of scheduled rotations), plus up to a tenth of it of
// jitter.
func refreshBackoff(name string, failures int) time.Duration {
	d := rotationBackoff(failures)
	h := fnv.New64a()
	_, _ = fmt.Fprintf(h, "%s/%d", name, failures)
	return d + time.Duration(h.Sum64()%uint64(d/10+1))
}

// backedOff is the set of names whose expiry index entry sits at their
// backoff time instead of their token's: refresh (the operator's) takes
// them up at once, background refresh-ahead when the backoff ends.
type backedOff struct {
	mu    sync.Mutex
	names map[string]bool // guarded by mu
}

func (o *backedOff) put(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.names == nil {
		o.names = map[string]bool{}
	}
	o.names[name] = true
}

func (o *backedOff) drop(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.names, name)
}

func (o *backedOff) list() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	names := make([]string, 0, len(o.names))
	for name := range o.names {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// refreshResult is the outcome of refreshing what is due.
type refreshResult struct {
	Refreshed []string
	Failed    map[string]string // name -> error message
}

// refreshDue refreshes every credential whose token is due (the refresh
// endpoint): what background refresh-ahead would take up now, and the
// credentials backing off after a failure.
func (b *backend) refreshDue(ctx context.Context, s logical.Storage) (*refreshResult, error) {
	return b.runRefresh(ctx, s, false)
}

// refreshAhead is background refresh-ahead: refreshDue, except that a
// credential whose last refresh failed waits for its backoff to end.
func (b *backend) refreshAhead(ctx context.Context, s logical.Storage) (*refreshResult, error) {
	return b.runRefresh(ctx, s, true)
}

// errStillRunning marks a refresh the run stopped waiting for.
var errStillRunning = errors.New("still running")

// runRefresh pops what is due from the expiry index and refreshes it on
// refresh_concurrency workers (every upstream request also takes a slot of
// its host's limit, upstream_concurrency_per_host). Each credential gets
// b.itemBudget: a refresh still running then (a slow or hanging upstream)
// goes on detached, as refresh does, and stores and indexes its result
// itself; the worker moves on. When ctx ends, the names not started go back
// in the queue at their own times.
func (b *backend) runRefresh(ctx context.Context, s logical.Storage, honourBackoff bool) (*refreshResult, error) {
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	due, err := b.expiry.popDueItems(ctx, s, b.now().Add(cfg.RefreshAhead))
	if err != nil {
		return nil, err
	}
	if !honourBackoff {
		for _, name := range b.backoff.list() {
			if b.expiry.take(name) {
				due = append(due, dueItem{name: name, minute: b.now().Unix() / 60})
			} else {
				b.backoff.drop(name) // deleted, or in a run that settles it
			}
		}
	}
	res, left, readOnly := b.work(ctx, s, cfg, due, honourBackoff)
	switch {
	case readOnly:
		b.expiry.putBackItems(left)
		return nil, logical.ErrReadOnly
	case len(left) > 0 && honourBackoff && b.continueBudget > 0 && b.continuing.CompareAndSwap(false, true):
		b.continueRefresh(ctx, s, cfg, left)
	default:
		b.expiry.putBackItems(left) // not started: due again on the next run
	}
	return res, nil
}

// refreshContinueBudget is how long background refresh-ahead goes on after
// its periodic task's budget ended with due tokens left (continueRefresh):
// with Vault calling the periodic function once a minute and the task's
// share of it (about 15 s), refreshing runs for about 55 s of every minute.
const refreshContinueBudget = 40 * time.Second

// continueRefresh works through the due items a background run did not
// get to, detached from the periodic call, for at most b.continueBudget;
// it puts back what it does not reach. One runs at a time (b.continuing,
// which the caller set); clean stops it.
func (b *backend) continueRefresh(ctx context.Context, s logical.Storage, cfg *Config, left []dueItem) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.continueBudget)
	b.continueMu.Lock()
	b.continueStop = cancel
	b.continueMu.Unlock()
	go func() {
		defer b.continuing.Store(false)
		defer cancel()
		res, rest, _ := b.work(cctx, s, cfg, left, true)
		b.expiry.putBackItems(rest)
		b.logger.Debug("background refresh went on past its periodic budget", "refreshed", len(res.Refreshed), "failed", len(res.Failed), "left", len(rest))
	}()
}

// stopContinuedRefresh ends a continued background refresh (clean).
func (b *backend) stopContinuedRefresh() {
	b.continueMu.Lock()
	defer b.continueMu.Unlock()
	if b.continueStop != nil {
		b.continueStop()
		b.continueStop = nil
	}
}

// work refreshes due items on refresh_concurrency workers until they are
// done or ctx ends. It returns the outcome, the items not started, and
// whether storage turned out read-only (the run stopped).
func (b *backend) work(ctx context.Context, s logical.Storage, cfg *Config, due []dueItem, honourBackoff bool) (*refreshResult, []dueItem, bool) {
	res := &refreshResult{Refreshed: []string{}, Failed: map[string]string{}}
	if len(due) == 0 {
		return res, nil, false
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		mu       sync.Mutex
		next     int  // guarded by mu; the next item of due to take
		readOnly bool // guarded by mu
		wg       sync.WaitGroup
	)
	take := func() (dueItem, bool) {
		mu.Lock()
		defer mu.Unlock()
		if runCtx.Err() != nil || next == len(due) {
			return dueItem{}, false
		}
		next++
		return due[next-1], true
	}
	for range min(max(cfg.RefreshConcurrency, 1), len(due)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				item, ok := take()
				if !ok {
					return
				}
				name := item.name
				refreshed, err := b.refreshItem(runCtx, s, cfg, item, honourBackoff)
				mu.Lock()
				switch {
				case isReadOnly(err):
					// Not the node to refresh on; the active node does.
					readOnly = true
					stop()
				case err != nil && ErrorKind(err) == KindNotFound:
					// Deleted since it was indexed; delete dropped its entry.
				case errors.Is(err, errStillRunning):
					res.Failed[name] = newError(KindRefreshFailed, "credential %q: the refresh did not finish within %s; it goes on in the background", name, b.itemBudget).Error()
				case err != nil:
					res.Failed[name] = err.Error()
				case refreshed:
					res.Refreshed = append(res.Refreshed, name)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Strings(res.Refreshed)
	return res, due[next:], readOnly
}

// refreshItem refreshes one due credential and settles its index entry
// and audit event, waiting at most b.itemBudget (and until ctx ends): after
// that it answers errStillRunning and the refresh settles on its own.
func (b *backend) refreshItem(ctx context.Context, s logical.Storage, cfg *Config, item dueItem, honourBackoff bool) (bool, error) {
	itemCtx, cancel := context.WithTimeout(ctx, b.itemBudget)
	defer cancel()
	type outcome struct {
		refreshed bool
		err       error
	}
	done := make(chan outcome, 1)
	go func() {
		refreshed, tok, err := b.refreshIfDue(itemCtx, s, cfg, item.name, honourBackoff)
		b.settle(context.WithoutCancel(itemCtx), s, cfg, item, tok, refreshed, err)
		done <- outcome{refreshed, err}
	}()
	select {
	case o := <-done:
		return o.refreshed, o.err
	case <-itemCtx.Done():
		return false, errStillRunning
	}
}

// settle finishes one credential of a refresh run: its audit event, its
// place in the expiry index when the refresh failed (a stored token
// indexed itself), and the storage entry it was popped by when that entry
// is stale (not the one of the credential's token, tok: an entry written
// under another refresh_ahead or before jitter, or of a deleted
// credential), so stale entries do not pile up.
func (b *backend) settle(ctx context.Context, s logical.Storage, cfg *Config, item dueItem, tok *issuedToken, refreshed bool, err error) {
	name := item.name
	if err != nil && ErrorKind(err) != KindNotFound && !isReadOnly(err) || refreshed {
		b.audit(ctx, nil, auditOutcome(auditEvent{Action: actionRefresh, Credential: name}, err), nil)
	}
	switch {
	case refreshed:
		// putToken moved the entry.
	case err == nil, ErrorKind(err) == KindNotFound:
		popped := timeKey(expiryPrefix, time.Unix(item.minute*60, 0), name)
		if tok == nil || popped != expiryKey(indexTime(name, tok, cfg.RefreshAhead), name) {
			if err := s.Delete(ctx, popped); err != nil {
				b.logger.Debug("could not drop a stale index entry", "credential", name, "error", err)
			}
		}
	case isReadOnly(err):
		b.expiry.putBack([]string{name}, b.now())
	default:
		b.requeueFailed(ctx, s, cfg, name)
	}
}

// requeueFailed puts a credential whose refresh failed back in the expiry
// index at the end of its backoff (recorded on the credential by
// recordErrorFor; the first step when none is recorded), or, when the
// credential cannot be read, due on the next run. ctx must not be one that
// ended with the run.
func (b *backend) requeueFailed(ctx context.Context, s logical.Storage, cfg *Config, name string) {
	c, err := loadCredential(ctx, s, name)
	if err != nil {
		b.expiry.putBack([]string{name}, b.now())
		return
	}
	if c == nil {
		return
	}
	retry := c.RefreshRetryAt
	if !retry.After(b.now()) {
		retry = b.now().Add(refreshBackoff(name, 1))
	}
	b.expiry.update(name, retry.Add(cfg.RefreshAhead))
	b.backoff.put(name)
}

// refreshIfDue refreshes one credential when background refresh should
// take it up (refreshAt; with honourBackoff, also not before a failed
// refresh's backoff ends). The upstream request is made without the lock
// shard held (refresh), so it never blocks other credentials; refresh
// serialises it with token reads of the same name. A token that is not due
// (refreshed by a read since it was queued) is queued again at its time.
func (b *backend) refreshIfDue(ctx context.Context, s logical.Storage, cfg *Config, name string, honourBackoff bool) (bool, *issuedToken, error) {
	lock := b.lock(name)
	lock.RLock()
	c, sv, err := loadCurrent(ctx, s, name)
	lock.RUnlock()
	if err != nil {
		return false, nil, err
	}
	if !c.typ().Refreshable || sv.Token == nil || c.needsReconnect() { // needs_reconnect: no upstream request
		b.backoff.drop(name)
		return false, sv.Token, nil
	}
	if held := b.held.get(name, c.ID); held != nil {
		sv.Token = held
	}
	now := b.now()
	if now.Before(refreshAt(name, sv.Token, cfg.RefreshAhead)) {
		b.backoff.drop(name)
		b.expiry.update(name, indexTime(name, sv.Token, cfg.RefreshAhead))
		return false, sv.Token, nil
	}
	if honourBackoff && now.Before(c.RefreshRetryAt) {
		b.expiry.update(name, c.RefreshRetryAt.Add(cfg.RefreshAhead))
		b.backoff.put(name)
		return false, sv.Token, nil
	}
	out, err := b.refreshToken(ctx, s, cfg, name)
	if err != nil {
		return false, nil, err
	}
	if !out.refreshed {
		b.expiry.update(name, indexTime(name, out.token, cfg.RefreshAhead))
		return false, out.token, nil
	}
	b.dropCached(name)
	return true, out.token, nil
}

// refreshToken refreshes a token background refresh took up, unless
// another request replaced it meanwhile: it counts as fresh until its own
// refreshAt (jitter included), which is earlier than the expiry -
// refresh_ahead that token reads go by.
func (b *backend) refreshToken(ctx context.Context, s logical.Storage, cfg *Config, name string) (*refreshOutcome, error) {
	return b.refreshUnlessFresh(ctx, s, cfg, name, func(t *issuedToken) bool {
		return t != nil && b.now().Before(refreshAt(name, t, cfg.RefreshAhead))
	})
}
