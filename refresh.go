package nebula

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

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
	c, sv, err := loadCredentialWithCurrent(ctx, s, name)
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
