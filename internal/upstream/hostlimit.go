package upstream

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Per-host limits of upstream calls.
const (
	// DefaultConcurrencyPerHost is how many requests may be in flight to one
	// host at once (config upstream_concurrency_per_host).
	DefaultConcurrencyPerHost = 8
	// MaxRetryAfter bounds the pause a Retry-After answer imposes on a
	// host, whatever the host asks for.
	MaxRetryAfter = 5 * time.Minute
)

// HostLimiter bounds the requests in flight to each upstream host and
// pauses a host that answered 429 (Too Many Requests) or 503 (Service
// Unavailable) with a Retry-After header (RFC 9110 section 10.2.3), for the
// time it asked, at most MaxRetryAfter. Other hosts are not affected.
//
// A host is the URL's host and port (the scheme's default port when the
// URL names none), so two servers on one address but different ports are
// two hosts.
//
// A request waits for a free slot until its context ends. A request to a
// paused host waits until the pause ends, unless its context's deadline
// (http.Client.Timeout sets one) would pass first: then it fails at once
// with a transient *Error, without being sent. A slot is held until the
// response body is read to its end or closed.
//
// The zero value is not usable; use NewHostLimiter.
type HostLimiter struct {
	mu          sync.Mutex // guards limit, hosts, maxInFlight
	limit       int
	hosts       map[string]*hostState
	maxInFlight int // most requests ever in flight to one host

	// now and newTimer are the clock (tests replace them). newTimer
	// returns a channel that receives when d has passed and a stop func.
	now      func() time.Time
	newTimer func(d time.Duration) (<-chan time.Time, func() bool)
}

// hostState is one host's slots, waiters and pause.
type hostState struct {
	inFlight    int
	waiters     []chan struct{} // FIFO; closed when granted a slot
	pending     int             // requests inside acquire (waiting for a pause or a slot)
	pausedUntil time.Time
}

// HostStats is the state of one upstream host.
type HostStats struct {
	// InFlight is the number of requests sent and not yet answered in full.
	InFlight int
	// Waiting is the number of requests waiting for a slot or a pause's end.
	Waiting int
	// PausedUntil is when a Retry-After pause ends; zero when not paused.
	PausedUntil time.Time
}

// NewHostLimiter returns a limiter allowing perHost requests in flight to
// each host; perHost < 1 means DefaultConcurrencyPerHost.
func NewHostLimiter(perHost int) *HostLimiter {
	l := &HostLimiter{
		hosts: make(map[string]*hostState),
		now:   time.Now,
		newTimer: func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		},
	}
	l.limit = normaliseLimit(perHost)
	return l
}

func normaliseLimit(n int) int {
	if n < 1 {
		return DefaultConcurrencyPerHost
	}
	return n
}

// SetLimit changes the number of requests allowed in flight to each host
// (n < 1 means DefaultConcurrencyPerHost). Raising it lets waiting requests
// go at once; lowering it lets requests in flight finish.
func (l *HostLimiter) SetLimit(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.limit = normaliseLimit(n)
	for key, h := range l.hosts {
		l.grantLocked(h)
		l.forgetLocked(key, h)
	}
}

// Limit is the number of requests allowed in flight to each host.
func (l *HostLimiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}

// Stats returns the state of every host with requests in flight or
// waiting, or a pause, keyed by host:port.
func (l *HostLimiter) Stats() map[string]HostStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	out := make(map[string]HostStats, len(l.hosts))
	for key, h := range l.hosts {
		s := HostStats{InFlight: h.inFlight, Waiting: h.pending}
		if now.Before(h.pausedUntil) {
			s.PausedUntil = h.pausedUntil
		}
		out[key] = s
	}
	return out
}

// InFlight is the number of requests in flight to one host (host:port, as
// the keys of Stats).
func (l *HostLimiter) InFlight(host string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.hosts[host]; h != nil {
		return h.inFlight
	}
	return 0
}

// MaxInFlight is the most requests ever in flight to one host at once (a
// high-water mark over all hosts, for tests and benchmarks).
func (l *HostLimiter) MaxInFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxInFlight
}

// Wrap returns a RoundTripper sending requests through next within the
// limiter's bounds.
func (l *HostLimiter) Wrap(next http.RoundTripper) http.RoundTripper {
	return &limitedTransport{next: next, limiter: l}
}

// limitedTransport is a RoundTripper bounded by a HostLimiter.
type limitedTransport struct {
	next    http.RoundTripper
	limiter *HostLimiter
}

// RoundTrip waits for a slot of the request's host, sends the request,
// pauses the host on a 429 or 503 with Retry-After, and frees the slot when
// the response body is read or closed.
func (t *limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	l := t.limiter
	key := hostKey(req.URL)
	if err := l.acquire(req.Context(), key); err != nil {
		return nil, err
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp == nil || resp.Body == nil {
		l.release(key)
		return resp, err
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), l.now()); ok {
			l.pause(key, d)
		}
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: sync.OnceFunc(func() { l.release(key) })}
	return resp, nil
}

// CloseIdleConnections passes http.Client.CloseIdleConnections on to the
// wrapped transport.
func (t *limitedTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// releasingBody frees a slot when the body is read to its end (or fails)
// or is closed, whichever comes first.
type releasingBody struct {
	io.ReadCloser
	release func()
}

func (b *releasingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.release()
	}
	return n, err
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

// hostKey is a URL's host:port, lower case, with the scheme's default port
// when the URL has none.
func hostKey(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "http":
			port = "80"
		default:
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// acquire takes a slot of host, waiting for a pause to end and for a slot
// to be free.
func (l *HostLimiter) acquire(ctx context.Context, key string) error {
	l.mu.Lock()
	h := l.hostLocked(key)
	h.pending++
	defer func() {
		l.mu.Lock()
		h.pending--
		l.forgetLocked(key, h)
		l.mu.Unlock()
	}()
	for {
		if wait := h.pausedUntil.Sub(l.now()); wait > 0 {
			l.mu.Unlock()
			if err := l.waitPause(ctx, key, wait); err != nil {
				return err
			}
			l.mu.Lock()
			continue
		}
		if h.inFlight < l.limit && len(h.waiters) == 0 {
			l.takeLocked(h)
			l.mu.Unlock()
			return nil
		}
		granted := make(chan struct{})
		h.waiters = append(h.waiters, granted)
		limit := l.limit
		l.mu.Unlock()
		select {
		case <-granted:
		case <-ctx.Done():
			l.mu.Lock()
			if !removeWaiter(h, granted) {
				// Granted meanwhile: hand the slot on.
				l.releaseLocked(h)
			}
			l.mu.Unlock()
			return &Error{Reason: fmt.Sprintf("gave up waiting for one of the %d request slots of %s: %v", limit, key, ctx.Err())}
		}
		l.mu.Lock()
		if l.now().Before(h.pausedUntil) {
			// The host was paused while this request waited: wait again.
			l.releaseLocked(h)
			continue
		}
		l.mu.Unlock()
		return nil
	}
}

// waitPause waits for wait (the rest of a host's pause), or fails at once
// when the context's deadline would pass first.
func (l *HostLimiter) waitPause(ctx context.Context, key string, wait time.Duration) error {
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
		return &Error{Reason: fmt.Sprintf("%s asked to wait (Retry-After) %s more, past the request's deadline; request not sent", key, wait.Round(time.Second))}
	}
	c, stop := l.newTimer(wait)
	defer stop()
	select {
	case <-c:
		return nil
	case <-ctx.Done():
		return &Error{Reason: fmt.Sprintf("gave up waiting for the Retry-After pause of %s: %v", key, ctx.Err())}
	}
}

// removeWaiter drops a waiter that was not granted; it reports false when
// the waiter is gone (granted).
func removeWaiter(h *hostState, w chan struct{}) bool {
	for i, x := range h.waiters {
		if x == w {
			h.waiters = append(h.waiters[:i], h.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// release frees a slot of host.
func (l *HostLimiter) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.hosts[key]; h != nil {
		l.releaseLocked(h)
		l.forgetLocked(key, h)
	}
}

func (l *HostLimiter) releaseLocked(h *hostState) {
	h.inFlight--
	l.grantLocked(h)
}

// grantLocked gives free slots to waiters, first come first served.
func (l *HostLimiter) grantLocked(h *hostState) {
	for len(h.waiters) > 0 && h.inFlight < l.limit {
		w := h.waiters[0]
		h.waiters = h.waiters[1:]
		l.takeLocked(h)
		close(w)
	}
}

func (l *HostLimiter) takeLocked(h *hostState) {
	h.inFlight++
	l.maxInFlight = max(l.maxInFlight, h.inFlight)
}

// pause stops requests to host for d (at most MaxRetryAfter); a pause
// already running longer is kept.
func (l *HostLimiter) pause(key string, d time.Duration) {
	d = min(d, MaxRetryAfter)
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.hostLocked(key)
	if until := l.now().Add(d); until.After(h.pausedUntil) {
		h.pausedUntil = until
	}
}

func (l *HostLimiter) hostLocked(key string) *hostState {
	h := l.hosts[key]
	if h == nil {
		h = &hostState{}
		l.hosts[key] = h
	}
	return h
}

// forgetLocked drops the state of a host that has nothing in flight, no
// one waiting and no pause, so the map stays as small as the set of busy
// hosts.
func (l *HostLimiter) forgetLocked(key string, h *hostState) {
	if h.inFlight == 0 && h.pending == 0 && len(h.waiters) == 0 && !l.now().Before(h.pausedUntil) && l.hosts[key] == h {
		delete(l.hosts, key)
	}
}

// parseRetryAfter reads a Retry-After value (RFC 9110 section 10.2.3):
// delay-seconds or an HTTP-date. It reports false for a missing, malformed,
// zero or past value. The duration is capped at MaxRetryAfter.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(MaxRetryAfter/time.Second) {
			// Too large for int64 or past the cap.
			return MaxRetryAfter, true
		}
		if secs == 0 {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0, false
	}
	return min(d, MaxRetryAfter), true
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// limitHosts puts c's requests under l, or a new HostLimiter with the
// default limit when l is nil (New calls it last).
func limitHosts(c *Client, l *HostLimiter) *Client {
	if l == nil {
		l = NewHostLimiter(DefaultConcurrencyPerHost)
	}
	c.http.Transport = l.Wrap(c.http.Transport)
	return c
}

// HostLimiter returns the limiter c's requests go through, nil when c was
// not built by New.
func (c *Client) HostLimiter() *HostLimiter {
	if t, ok := c.http.Transport.(*limitedTransport); ok {
		return t.limiter
	}
	return nil
}
