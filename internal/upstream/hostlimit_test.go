package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/stretchr/testify/require"
)

// waitLimit bounds every wait of these tests.
const waitLimit = 10 * time.Second

// blockingServer is a loopback upstream that holds every request until the
// test releases it, and counts requests in flight.
type blockingServer struct {
	*httptest.Server
	arrived chan struct{} // one value per request that reached the handler
	release chan struct{} // one value lets one request answer

	mu       sync.Mutex // guards cur, max
	cur, max int
}

func newBlockingServer(tb testing.TB) *blockingServer {
	tb.Helper()
	s := &blockingServer{arrived: make(chan struct{}, 1000), release: make(chan struct{}, 1000)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.cur++
		s.max = max(s.max, s.cur)
		s.mu.Unlock()
		s.arrived <- struct{}{}
		select {
		case <-s.release:
		case <-r.Context().Done():
		}
		s.mu.Lock()
		s.cur--
		s.mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	tb.Cleanup(func() {
		close(s.release) // lets anything still held answer
		s.Close()
	})
	return s
}

func (s *blockingServer) counts() (cur, max int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.max
}

// waitArrivals waits until n more requests reached the server.
func (s *blockingServer) waitArrivals(tb testing.TB, n int) {
	tb.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-s.arrived:
		case <-time.After(waitLimit):
			tb.Fatalf("only %d of %d requests reached the server", i, n)
		}
	}
}

// key is the server's host key in the limiter.
func key(tb testing.TB, srv *httptest.Server) string {
	tb.Helper()
	u, err := url.Parse(srv.URL)
	require.NoError(tb, err)
	return hostKey(u)
}

// limitedClient is an HTTP client whose requests go through l. It has no
// timeout of its own (that would fail requests to a host paused for longer
// at once); the tests bound their waits.
func limitedClient(l *HostLimiter) *http.Client {
	return &http.Client{Transport: l.Wrap(cleanhttp.DefaultPooledTransport())}
}

// get sends a GET and reads the answer in full.
func get(ctx context.Context, c *http.Client, u string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// eventually polls cond every few milliseconds, at most waitLimit.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %s: %s", waitLimit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// goGet sends a GET in the background; the answer arrives on the channel.
func goGet(ctx context.Context, c *http.Client, u string) <-chan error {
	done := make(chan error, 1)
	go func() {
		status, err := get(ctx, c, u)
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("status %d", status)
		}
		done <- err
	}()
	return done
}

func waitDone(tb testing.TB, done <-chan error) error {
	tb.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(waitLimit):
		tb.Fatalf("request not answered within %s", waitLimit)
		return nil
	}
}

func TestHostLimitBoundsRequestsInFlight(t *testing.T) {
	const requests, limit = 50, DefaultConcurrencyPerHost
	srv := newBlockingServer(t)
	l := NewHostLimiter(limit)
	c := limitedClient(l)
	host := key(t, srv.Server)

	dones := make([]<-chan error, requests)
	for i := range dones {
		dones[i] = goGet(context.Background(), c, srv.URL)
	}
	// The limit's worth reach the server; the rest wait in the limiter.
	srv.waitArrivals(t, limit)
	eventually(t, "every request at the server or waiting in the limiter", func() bool {
		cur, _ := srv.counts()
		return cur+l.Stats()[host].Waiting == requests
	})
	cur, _ := srv.counts()
	require.Equal(t, limit, cur, "requests at the server while the others wait")
	require.Equal(t, limit, l.InFlight(host))

	for range requests {
		srv.release <- struct{}{}
	}
	for _, d := range dones {
		require.NoError(t, waitDone(t, d))
	}
	_, most := srv.counts()
	require.Equal(t, limit, most, "most requests the server saw at once")
	require.Equal(t, limit, l.MaxInFlight())
	require.Empty(t, l.Stats(), "an idle host leaves no state behind")
}

func TestSaturatedHostDoesNotBlockOthers(t *testing.T) {
	busy := newBlockingServer(t)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer other.Close()
	l := NewHostLimiter(2)
	c := limitedClient(l)

	var dones []<-chan error
	for range 3 {
		dones = append(dones, goGet(context.Background(), c, busy.URL))
	}
	busy.waitArrivals(t, 2)
	eventually(t, "one request waiting for the busy host", func() bool { return l.Stats()[key(t, busy.Server)].Waiting == 1 })

	status, err := get(context.Background(), c, other.URL)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 2, l.InFlight(key(t, busy.Server)), "the busy host is still saturated")

	for range 3 {
		busy.release <- struct{}{}
	}
	for _, d := range dones {
		require.NoError(t, waitDone(t, d))
	}
}

func TestWaitingForASlotEndsWithTheContext(t *testing.T) {
	srv := newBlockingServer(t)
	l := NewHostLimiter(1)
	c := limitedClient(l)
	host := key(t, srv.Server)

	first := goGet(context.Background(), c, srv.URL)
	srv.waitArrivals(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	second := goGet(ctx, c, srv.URL)
	eventually(t, "the second request waiting", func() bool { return l.Stats()[host].Waiting == 1 })
	cancel()
	err := waitDone(t, second)
	var ue *Error
	require.ErrorAs(t, err, &ue)
	require.False(t, ue.Permanent)
	require.Contains(t, ue.Reason, "gave up waiting")
	require.Equal(t, 0, l.Stats()[host].Waiting)

	srv.release <- struct{}{}
	require.NoError(t, waitDone(t, first))
	// The cancelled waiter took no slot with it.
	third := goGet(context.Background(), c, srv.URL)
	srv.waitArrivals(t, 1)
	srv.release <- struct{}{}
	require.NoError(t, waitDone(t, third))
	require.Equal(t, 1, l.MaxInFlight())
}

func TestRaisingTheLimitLetsWaitersGo(t *testing.T) {
	srv := newBlockingServer(t)
	l := NewHostLimiter(1)
	c := limitedClient(l)
	var dones []<-chan error
	for range 3 {
		dones = append(dones, goGet(context.Background(), c, srv.URL))
	}
	srv.waitArrivals(t, 1)
	eventually(t, "two requests waiting", func() bool { return l.Stats()[key(t, srv.Server)].Waiting == 2 })
	l.SetLimit(3)
	srv.waitArrivals(t, 2)
	require.Equal(t, 3, l.Limit())
	for range 3 {
		srv.release <- struct{}{}
	}
	for _, d := range dones {
		require.NoError(t, waitDone(t, d))
	}
}

// fakeClock replaces a limiter's clock: time moves only when the test says,
// and every timer the limiter starts is handed to the test to fire.
type fakeClock struct {
	mu     sync.Mutex // guards t
	t      time.Time
	timers chan *fakeTimer
}

type fakeTimer struct {
	d time.Duration
	c chan time.Time
}

func useFakeClock(l *HostLimiter) *fakeClock {
	fc := &fakeClock{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), timers: make(chan *fakeTimer, 100)}
	l.now = fc.Now
	l.newTimer = func(d time.Duration) (<-chan time.Time, func() bool) {
		ft := &fakeTimer{d: d, c: make(chan time.Time, 1)}
		fc.timers <- ft
		return ft.c, func() bool { return true }
	}
	return fc
}

func (fc *fakeClock) Now() time.Time {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.t
}

// fire moves the clock to the timer's end and fires it.
func (fc *fakeClock) fire(ft *fakeTimer) {
	fc.mu.Lock()
	fc.t = fc.t.Add(ft.d)
	fc.mu.Unlock()
	ft.c <- fc.Now()
}

// eventLog is the order in which things happened, told by the server and
// the test.
type eventLog struct {
	mu     sync.Mutex // guards events
	events []string
}

func (e *eventLog) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, s)
}

func (e *eventLog) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.events)
}

// throttlingServer answers its first request with status and Retry-After
// (from retryAfter, called then), and every later one with 200.
func throttlingServer(tb testing.TB, log *eventLog, status int, retryAfter func() string) *httptest.Server {
	tb.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		log.add("request arrived")
		if first {
			w.Header().Set("Retry-After", retryAfter())
			w.WriteHeader(status)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	tb.Cleanup(srv.Close)
	return srv
}

// nextTimer is the next timer the limiter starts; it fails the test when a
// request finishes first (it was not held back).
func nextTimer(tb testing.TB, fc *fakeClock, done <-chan error) *fakeTimer {
	tb.Helper()
	select {
	case ft := <-fc.timers:
		return ft
	case err := <-done:
		tb.Fatalf("the request to the paused host was sent without waiting (answer: %v)", err)
	case <-time.After(waitLimit):
		tb.Fatalf("no pause started within %s", waitLimit)
	}
	return nil
}

// checkPause sends a request that is throttled, then one that must wait
// for the pause of want, and checks the order of events.
func checkPause(t *testing.T, status int, retryAfter func(fc *fakeClock) string, want time.Duration) {
	t.Helper()
	l := NewHostLimiter(DefaultConcurrencyPerHost)
	fc := useFakeClock(l)
	log := &eventLog{}
	srv := throttlingServer(t, log, status, func() string { return retryAfter(fc) })
	other := throttlingServer(t, &eventLog{}, http.StatusOK, func() string { return "" })
	c := limitedClient(l)

	got, err := get(context.Background(), c, srv.URL)
	require.NoError(t, err)
	require.Equal(t, status, got, "the throttled answer reaches the caller")
	pausedAt := fc.Now()

	// Another host is not paused.
	got, err = get(context.Background(), c, other.URL)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, got)

	done := goGet(context.Background(), c, srv.URL)
	ft := nextTimer(t, fc, done)
	require.Equal(t, want, ft.d, "the pause the waiting request sleeps")
	require.Equal(t, pausedAt.Add(want), l.Stats()[key(t, srv)].PausedUntil)
	log.add("pause over")
	fc.fire(ft)
	require.NoError(t, waitDone(t, done))
	require.Equal(t, []string{"request arrived", "pause over", "request arrived"}, log.list())
	require.Empty(t, l.Stats())
}

func TestRetryAfterSecondsOn429PausesTheHost(t *testing.T) {
	checkPause(t, http.StatusTooManyRequests, func(*fakeClock) string { return "2" }, 2*time.Second)
}

func TestRetryAfterDateOn503PausesTheHost(t *testing.T) {
	checkPause(t, http.StatusServiceUnavailable, func(fc *fakeClock) string {
		return fc.Now().Add(30 * time.Second).Format(http.TimeFormat)
	}, 30*time.Second)
}

func TestRetryAfterPauseIsCapped(t *testing.T) {
	t.Run("seconds", func(t *testing.T) {
		checkPause(t, http.StatusTooManyRequests, func(*fakeClock) string { return "86400" }, MaxRetryAfter)
	})
	t.Run("date", func(t *testing.T) {
		checkPause(t, http.StatusServiceUnavailable, func(fc *fakeClock) string {
			return fc.Now().Add(48 * time.Hour).Format(http.TimeFormat)
		}, MaxRetryAfter)
	})
}

func TestPausedHostFailsFastPastTheDeadline(t *testing.T) {
	l := NewHostLimiter(DefaultConcurrencyPerHost)
	fc := useFakeClock(l)
	log := &eventLog{}
	srv := throttlingServer(t, log, http.StatusTooManyRequests, func() string { return "120" })
	c := limitedClient(l)
	_, err := get(context.Background(), c, srv.URL)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = get(ctx, c, srv.URL)
	var ue *Error
	require.ErrorAs(t, err, &ue)
	require.False(t, ue.Permanent, "a pause is transient")
	require.Contains(t, ue.Reason, "Retry-After")
	require.Equal(t, []string{"request arrived"}, log.list(), "the second request was not sent")
	require.Empty(t, fc.timers, "no wait was started")
}

func TestNoPauseWithoutRetryAfter(t *testing.T) {
	l := NewHostLimiter(DefaultConcurrencyPerHost)
	fc := useFakeClock(l)
	log := &eventLog{}
	srv := throttlingServer(t, log, http.StatusTooManyRequests, func() string { return "" })
	c := limitedClient(l)
	for range 2 {
		_, err := get(context.Background(), c, srv.URL)
		require.NoError(t, err)
	}
	require.Len(t, log.list(), 2)
	require.Empty(t, fc.timers)
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"2", 2 * time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"0", 0, false},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"301", MaxRetryAfter, true},
		{"99999999999999999999999", MaxRetryAfter, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(90 * time.Second).Format(time.RFC850), 90 * time.Second, true},
		{now.Add(90 * time.Second).Format(time.ANSIC), 90 * time.Second, true},
		{now.Add(time.Hour).Format(http.TimeFormat), MaxRetryAfter, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := parseRetryAfter(tc.in, now)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestHostKey(t *testing.T) {
	for in, want := range map[string]string{
		"https://Auth.Example.com/token":  "auth.example.com:443",
		"http://127.0.0.1:8080/token":     "127.0.0.1:8080",
		"http://example.com/token":        "example.com:80",
		"https://[::1]:8443/token":        "[::1]:8443",
		"https://user:pw@example.com/tok": "example.com:443",
	} {
		u, err := url.Parse(in)
		require.NoError(t, err)
		require.Equal(t, want, hostKey(u), in)
	}
}

// TestClientTokenCallsShareTheLimiter shows Token requests of a Client
// count against the limiter passed to New, and against a default one of
// its own without.
func TestClientTokenCallsShareTheLimiter(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"a","token_type":"bearer","expires_in":3600}`)
	}))
	defer srv.Close()
	own := New(loopbackPolicy, nil, nil)
	require.NotNil(t, own.HostLimiter())
	require.Equal(t, DefaultConcurrencyPerHost, own.HostLimiter().Limit())

	shared := NewHostLimiter(3)
	a, b := New(loopbackPolicy, nil, shared), New(loopbackPolicy, nil, shared)
	require.Same(t, shared, a.HostLimiter())
	require.Same(t, shared, b.HostLimiter())
	for _, c := range []*Client{a, b} {
		_, err := c.Token(context.Background(), Request{Grant: "client_credentials", ClientID: "c", ClientSecret: "s", TokenURL: srv.URL + "/token"})
		require.NoError(t, err)
	}
	require.Equal(t, 1, shared.MaxInFlight())
	require.Zero(t, own.HostLimiter().MaxInFlight(), "another client's requests are not counted")
}

// TestTokenRetryWaitsForRetryAfter: a token endpoint answering 429 with
// Retry-After is asked again only after the pause, by Token's own retry.
func TestTokenRetryWaitsForRetryAfter(t *testing.T) {
	log := &eventLog{}
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		log.add("token request")
		if first {
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"a","token_type":"bearer","expires_in":3600}`)
	}))
	defer srv.Close()
	c := limitHosts(&Client{http: &http.Client{Transport: cleanhttp.DefaultPooledTransport(), Timeout: DefaultTimeout}, Attempts: 2, Backoff: time.Millisecond}, nil)
	fc := useFakeClock(c.HostLimiter())

	done := make(chan error, 1)
	go func() {
		_, err := c.Token(context.Background(), Request{Grant: "client_credentials", ClientID: "c", ClientSecret: "s", TokenURL: srv.URL + "/token"})
		done <- err
	}()
	ft := nextTimer(t, fc, done)
	require.Equal(t, 3*time.Second, ft.d)
	log.add("pause over")
	fc.fire(ft)
	require.NoError(t, waitDone(t, done))
	require.Equal(t, []string{"token request", "pause over", "token request"}, log.list())
}
