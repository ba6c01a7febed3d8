package nebula

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

// createTokenCreds creates n client_credentials credentials prefix-0.. on
// srv.
func createTokenCreds(tb testing.TB, e *testEnv, srv *tokenServer, prefix string, n int) []string {
	tb.Helper()
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("%s-%d", prefix, i)
		e.mustRequest(tb, logical.CreateOperation, "creds/"+names[i], map[string]any{
			"type": "oauth2", "client_id": "c", "client_secret": "s", "token_url": srv.URL + "/token", "auth_style": "header"})
	}
	return names
}

// readAll reads the tokens of names from parallel readers and returns the
// first error.
func readAll(tb testing.TB, e *testEnv, names []string, readers int) error {
	tb.Helper()
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		mu    sync.Mutex
		first error
	)
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(names) {
					return
				}
				if _, err := e.request(tb, logical.ReadOperation, "token/"+names[i], nil); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("token/%s: %w", names[i], err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// TestRefreshDueRunsInParallelWithinTheHostLimit (issue 13): refresh of 300
// due tokens against an endpoint answering after 100 ms runs on several
// workers at once, and never has more than upstream_concurrency_per_host
// (8) requests in flight to that host.
func TestRefreshDueRunsInParallelWithinTheHostLimit(t *testing.T) {
	e := newTestBackend(t)
	e.b.upstreamBackoff = time.Millisecond
	srv := newTokenServer(t)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1", "refresh_ahead": "5m"})
	names := createTokenCreds(t, e, srv, "due", 300)
	require.NoError(t, readAll(t, e, names, 32)) // first tokens, one hour long
	require.EqualValues(t, 300, srv.requests.Load())

	srv.delay.Store(int64(100 * time.Millisecond))
	srv.resetPeak()
	e.clock.Advance(time.Hour) // every token is due
	start := time.Now()
	resp := e.mustRequest(t, logical.UpdateOperation, "refresh", nil)
	t.Logf("refresh of 300 due tokens against a 100 ms endpoint took %s (max %d in flight)", time.Since(start), srv.peak.Load())
	require.Len(t, resp.Data["refreshed"], 300)
	require.Empty(t, resp.Data["failed"])
	require.EqualValues(t, 600, srv.requests.Load())
	require.LessOrEqual(t, srv.peak.Load(), int64(8), "requests in flight to the host")
	require.Greater(t, srv.peak.Load(), int64(1), "refreshes run in parallel")
}

// TestReadStormStaysWithinTheHostLimit (issue 13): 500 concurrent reads of
// 500 different expired tokens on one host never have more requests in
// flight than upstream_concurrency_per_host, even when a config write in
// the middle of the storm makes the engine build a new upstream client.
func TestReadStormStaysWithinTheHostLimit(t *testing.T) {
	e := newTestBackend(t)
	e.b.upstreamBackoff = time.Millisecond
	srv := newTokenServer(t)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1", "upstream_concurrency_per_host": 4})
	names := createTokenCreds(t, e, srv, "storm", 500)
	require.NoError(t, readAll(t, e, names, 16))

	srv.delay.Store(int64(20 * time.Millisecond))
	srv.resetPeak()
	e.clock.Advance(2 * time.Hour) // every token has expired
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.request(t, logical.ReadOperation, "token/"+name, nil)
		}()
		if i == len(names)/2 {
			// A new config: the engine builds a new upstream client.
			e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"cache_ttl": "4m"})
		}
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "token/%s", names[i])
	}
	require.EqualValues(t, 1000, srv.requests.Load())
	require.LessOrEqual(t, srv.peak.Load(), int64(4), "requests in flight to the host (upstream_concurrency_per_host=4)")
}

// fakeTimers is a controllable clock for the host limiter's Retry-After
// pauses.
type fakeTimers struct {
	mu     sync.Mutex
	now    time.Time
	timers []chan time.Time
}

func (f *fakeTimers) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeTimers) NewTimer(time.Duration) (<-chan time.Time, func() bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := make(chan time.Time, 1)
	f.timers = append(f.timers, c)
	return c, func() bool { return true }
}

func (f *fakeTimers) waiting() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// advance moves the clock and fires every timer.
func (f *fakeTimers) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	for _, c := range f.timers {
		c <- f.now
	}
	f.timers = nil
}

// eventually polls cond every 10 ms for at most 10 s.
func eventually(tb testing.TB, cond func() bool, msg string) {
	tb.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatal(msg)
}

// TestRetryAfterPausesTheHost (issue 13): a 429 with Retry-After from a
// token endpoint pauses that host for the engine as a whole (token reads of
// other credentials on it wait, also through an upstream client built for
// a new config), while credentials on another host go on.
func TestRetryAfterPausesTheHost(t *testing.T) {
	e := newTestBackend(t)
	e.b.upstreamBackoff = time.Millisecond
	clock := &fakeTimers{now: time.Now()}
	e.b.hostLimits.SetClock(clock.Now, clock.NewTimer)
	paused, other := newTokenServer(t), newTokenServer(t)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1"})
	onPaused := createTokenCreds(t, e, paused, "paused", 2)
	onOther := createTokenCreds(t, e, other, "other", 1)
	paused.failNext(1, http.StatusTooManyRequests, "5")

	results := make(chan error, 2)
	go func() { _, err := e.request(t, logical.ReadOperation, "token/"+onPaused[0], nil); results <- err }()
	eventually(t, func() bool { return clock.waiting() == 1 }, "the retry after the 429 waits for the pause")
	require.EqualValues(t, 1, paused.requests.Load())

	// A config write: the engine builds a new upstream client, which must
	// see the same pause.
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"cache_ttl": "4m"})
	go func() { _, err := e.request(t, logical.ReadOperation, "token/"+onPaused[1], nil); results <- err }()
	eventually(t, func() bool { return clock.waiting() == 2 }, "a read of another credential on the paused host waits for the pause")

	e.mustRequest(t, logical.ReadOperation, "token/"+onOther[0], nil)
	require.EqualValues(t, 1, other.requests.Load(), "the other host is not paused")
	require.EqualValues(t, 1, paused.requests.Load(), "nothing is sent to the paused host during the pause")
	u, err := url.Parse(paused.URL)
	require.NoError(t, err)
	stats := e.b.hostLimits.Stats()[u.Host]
	require.Equal(t, 2, stats.Waiting)
	require.False(t, stats.PausedUntil.IsZero())

	clock.advance(5 * time.Second)
	for range 2 {
		select {
		case err := <-results:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("the reads did not complete after the pause")
		}
	}
	require.EqualValues(t, 3, paused.requests.Load())
}

// TestRefreshFailureBacksOff (issue 13): after a failed background refresh
// the credential is not tried again before its backoff (one minute, then
// two, with up to a tenth more of jitter) ends; the failure is recorded on
// the credential and counted, and a success resets it.
func TestRefreshFailureBacksOff(t *testing.T) {
	e := newTestBackend(t)
	e.b.upstreamAttempts = 1
	srv := newTokenServer(t)
	srv.lifetime.Store(600)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1", "refresh_ahead": "1m"})
	createTokenCreds(t, e, srv, "b", 1)
	e.mustRequest(t, logical.ReadOperation, "token/b-0", nil)
	run := func() int64 {
		t.Helper()
		before := srv.requests.Load()
		require.NoError(t, e.b.periodic(context.Background(), &logical.Request{Storage: e.storage}))
		return srv.requests.Load() - before
	}
	meta := func() *credential {
		t.Helper()
		c, err := loadCredential(context.Background(), e.storage, "b-0")
		require.NoError(t, err)
		return c
	}

	srv.failNext(-1, http.StatusInternalServerError, "")
	e.clock.Advance(9 * time.Minute) // due (jitter takes it up to 2 min before expiry)
	require.EqualValues(t, 1, run(), "the due token is refreshed")
	c := meta()
	require.Equal(t, 1, c.RefreshFailures)
	require.NotEmpty(t, c.LastError)
	wait := c.RefreshRetryAt.Sub(e.clock.Now())
	require.True(t, wait >= time.Minute && wait <= time.Minute+6*time.Second, "first backoff %s", wait)
	require.EqualValues(t, 1, e.b.stats.refreshFailuresByCode()["temporarily_unavailable"])
	read := e.mustRequest(t, logical.ReadOperation, "creds/b-0", nil)
	require.EqualValues(t, 1, read.Data["refresh_failures"], "creds/ reads show the failure count")
	require.Equal(t, c.RefreshRetryAt.UTC().Format(time.RFC3339), read.Data["next_refresh_attempt_at"])

	e.clock.Advance(30 * time.Second)
	require.Zero(t, run(), "no upstream request within the backoff")
	e.clock.Advance(40 * time.Second)
	require.EqualValues(t, 1, run(), "one request once the backoff ended")
	c = meta()
	require.Equal(t, 2, c.RefreshFailures)
	wait = c.RefreshRetryAt.Sub(e.clock.Now())
	require.True(t, wait >= 2*time.Minute && wait <= 2*time.Minute+12*time.Second, "second backoff %s", wait)

	e.clock.Advance(90 * time.Second)
	require.Zero(t, run(), "no upstream request within the doubled backoff")
	srv.failNext(0, 0, "")
	e.clock.Advance(60 * time.Second)
	require.EqualValues(t, 1, run(), "one request once the backoff ended")
	c = meta()
	require.Zero(t, c.RefreshFailures, "a success resets the backoff")
	require.True(t, c.RefreshRetryAt.IsZero())
	require.Empty(t, c.LastError)
	read = e.mustRequest(t, logical.ReadOperation, "creds/b-0", nil)
	require.EqualValues(t, 0, read.Data["refresh_failures"])
	require.Nil(t, read.Data["next_refresh_attempt_at"])
	require.EqualValues(t, 2, e.b.stats.refreshFailuresByCode()["temporarily_unavailable"])
}

// TestRefreshesOfTokensExpiringTogetherAreSpread (issue 13): tokens that
// expire in the same minute are taken up by background refresh at times
// spread over min(10% of their lifetime, refresh_ahead) before expiry -
// refresh_ahead, not all in one run.
func TestRefreshesOfTokensExpiringTogetherAreSpread(t *testing.T) {
	e := newTestBackend(t)
	srv := newTokenServer(t)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1", "refresh_ahead": "5m"})
	names := createTokenCreds(t, e, srv, "batch", 200)
	require.NoError(t, readAll(t, e, names, 8)) // every token expires in an hour

	keys, err := logical.CollectKeysWithPrefix(context.Background(), e.storage, expiryPrefix)
	require.NoError(t, err)
	require.Len(t, keys, 200)
	minutes := map[string]int{}
	for _, k := range keys {
		minutes[strings.Split(strings.TrimPrefix(k, expiryPrefix), "/")[1]]++
	}
	require.GreaterOrEqual(t, len(minutes), 4, "index minutes of tokens expiring together: %v", minutes)

	// 7.5 minutes before expiry: about half are due (jitter is in [0, 5m)).
	e.clock.Advance(time.Hour - 7*time.Minute - 30*time.Second)
	res, err := e.b.refreshAhead(context.Background(), e.storage)
	require.NoError(t, err)
	require.Empty(t, res.Failed)
	require.Greater(t, len(res.Refreshed), 20, "some are refreshed early")
	require.Less(t, len(res.Refreshed), 180, "not all are refreshed in the same run")

	// Five minutes before expiry every one is due.
	e.clock.Advance(2*time.Minute + 30*time.Second)
	more, err := e.b.refreshAhead(context.Background(), e.storage)
	require.NoError(t, err)
	require.Len(t, more.Refreshed, 200-len(res.Refreshed))
}

// blockingListStorage blocks List of the expiry index until released, as a
// slow listing of 100,000 entries would.
type blockingListStorage struct {
	*faultStorage
	listing chan struct{} // closed when a blocked List starts
	release chan struct{}
	once    sync.Once
}

func (s *blockingListStorage) List(ctx context.Context, prefix string) ([]string, error) {
	if strings.HasPrefix(prefix, expiryPrefix) {
		s.once.Do(func() { close(s.listing) })
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.faultStorage.List(ctx, prefix)
}

// TestIndexRebuildDoesNotBlockReads (issue 13): while the expiry index is
// rebuilt from storage (a node becoming active, a reload), a token read
// that refreshes completes; the change it made is in the rebuilt index.
func TestIndexRebuildDoesNotBlockReads(t *testing.T) {
	e := newTestBackend(t)
	srv := newTokenServer(t)
	srv.lifetime.Store(600)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1", "refresh_ahead": "1m"})
	createTokenCreds(t, e, srv, "r", 1)
	e.mustRequest(t, logical.ReadOperation, "token/r-0", nil)

	s := &blockingListStorage{faultStorage: e.storage, listing: make(chan struct{}), release: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(s.release)
		}
	}()
	e.b.expiry.reset() // as after a reload: the next use rebuilds from storage
	rebuilt := make(chan error, 1)
	go func() {
		_, err := e.b.refreshAhead(context.Background(), s)
		rebuilt <- err
	}()
	select {
	case <-s.listing:
	case <-time.After(10 * time.Second):
		t.Fatal("the rebuild did not start")
	}

	e.clock.Advance(9*time.Minute + 30*time.Second) // the token is expiring: a read refreshes
	read := make(chan error, 1)
	go func() {
		_, err := e.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "token/r-0", Storage: s})
		read <- err
	}()
	select {
	case err := <-read:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the token read did not complete while the index rebuild was blocked")
	}
	require.EqualValues(t, 2, srv.requests.Load(), "the read refreshed")

	close(s.release)
	released = true
	require.NoError(t, <-rebuilt)
	// The rebuilt index has the new token (expiring in 10 minutes), not
	// the old one: nothing is due 2 minutes later.
	e.clock.Advance(2 * time.Minute)
	res, err := e.b.refreshAhead(context.Background(), e.storage)
	require.NoError(t, err)
	require.Empty(t, res.Refreshed)
	require.EqualValues(t, 2, srv.requests.Load())
}

// TestBackgroundRefreshGoesOnPastItsBudget (issue 13): when the periodic
// refresh-ahead task's budget ends with due tokens left, refreshing goes on
// detached from the periodic call (for refreshContinueBudget) instead of
// leaving them to the next call a minute later: at Vault's budget for the
// task (about 15 s of every minute) background refresh could not keep up
// with 100,000 one-hour tokens.
func TestBackgroundRefreshGoesOnPastItsBudget(t *testing.T) {
	e := newTestBackend(t)
	e.b.taskBudget = 300 * time.Millisecond
	srv := newTokenServer(t)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1", "refresh_concurrency": 2})
	names := createTokenCreds(t, e, srv, "cont", 40)
	require.NoError(t, readAll(t, e, names, 8))

	srv.delay.Store(int64(100 * time.Millisecond))
	e.clock.Advance(time.Hour) // every token is due
	require.NoError(t, e.b.periodic(context.Background(), &logical.Request{Storage: e.storage}))
	require.Less(t, srv.requests.Load(), int64(80), "the periodic task's budget ends before every token is refreshed")
	eventually(t, func() bool { return srv.requests.Load() == 80 && !e.b.continuing.Load() },
		"the tokens left when the task's budget ended are refreshed without another periodic call")
	res, err := e.b.refreshDue(context.Background(), e.storage)
	require.NoError(t, err)
	require.Empty(t, res.Refreshed, "nothing is left due")
}

// refreshFailuresByCode returns the failed upstream token requests by
// the token endpoint's OAuth2 error code, or the engine's error code when
// the endpoint answered none (from the refresh counters by outcome).
func (s *engineStats) refreshFailuresByCode() map[string]int64 {
	out := map[string]int64{}
	s.refreshes.Range(func(k, v any) bool {
		if key := k.(refreshLabels); key != (refreshLabels{}) {
			out[firstNonEmpty(key.upstream, key.code)] += v.(*atomic.Int64).Load()
		}
		return true
	})
	return out
}
