package nebula

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// tokenServer is a loopback OAuth2 token endpoint for the tests that need
// to control when and how an upstream token request is answered: it can
// hold requests until released (all of them, or those after the first
// few), answer after a delay, or answer an error status, and it counts
// what reached it. Every request, whatever its grant, is answered with a
// new bearer token tok-1, tok-2, ... (numbered in the order they are
// issued) lasting lifetime seconds.
//
// oauthserver is the server for tests of the protocol itself; this one
// knows no clients and checks nothing.
type tokenServer struct {
	*httptest.Server

	// lifetime is the expires_in of the tokens, in seconds (an hour unless
	// set).
	lifetime atomic.Int64
	// delay is how long every request waits before it is answered, after
	// any hold (none unless set).
	delay atomic.Int64 // nanoseconds

	// gate, while set, is what held requests wait on (see hold); passes is
	// the number of the last request that is not held.
	gate   atomic.Pointer[chan struct{}]
	passes atomic.Int64

	// status, when not zero, is answered instead of a token (with
	// retryAfter as Retry-After when set) by the next failN requests
	// (every request when failN is negative); see failNext.
	status     atomic.Int64
	failN      atomic.Int64
	retryAfter atomic.Pointer[string]

	// requests counts the requests that reached the server, issued the
	// tokens it answered.
	requests atomic.Int64
	issued   atomic.Int64
	// inFlight is the number of requests the server has not finished
	// with (held and delayed ones included), peak the most there were at
	// once (since resetPeak).
	inFlight atomic.Int64
	peak     atomic.Int64

	// arrived has one value for each request that reached the server, as
	// long as there is room (see waitArrival).
	arrived chan struct{}
}

// newTokenServer starts a tokenServer that answers every request at once
// until told otherwise; it is closed (releasing what it holds) when the
// test ends.
func newTokenServer(tb testing.TB) *tokenServer {
	tb.Helper()
	s := &tokenServer{arrived: make(chan struct{}, 100)}
	s.lifetime.Store(3600)
	s.retryAfter.Store(new(string))
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	tb.Cleanup(func() { s.release(); s.Close() })
	return s
}

func (s *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	select {
	case s.arrived <- struct{}{}:
	default:
	}
	current := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for {
		peak := s.peak.Load()
		if current <= peak || s.peak.CompareAndSwap(peak, current) {
			break
		}
	}

	if g := s.gate.Load(); g != nil && n > s.passes.Load() {
		select {
		case <-*g:
		case <-r.Context().Done():
			return
		case <-time.After(testWait): // bounded: a test that never releases does not hang
		}
	}
	select {
	case <-time.After(time.Duration(s.delay.Load())):
	case <-r.Context().Done():
		return
	}

	w.Header().Set("Content-Type", "application/json")
	if status := s.status.Load(); status != 0 && s.failN.Load() != 0 {
		s.failN.Add(-1)
		if ra := *s.retryAfter.Load(); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		w.WriteHeader(int(status))
		fmt.Fprint(w, `{"error":"temporarily_unavailable"}`)
		return
	}
	fmt.Fprintf(w, `{"access_token":"tok-%d","token_type":"bearer","expires_in":%d}`, s.issued.Add(1), s.lifetime.Load())
}

// hold makes the requests that arrive after the next pass ones wait until
// release (or until their client gives up, when they are not answered),
// so that a test can act while an upstream call is under way.
func (s *tokenServer) hold(pass int) {
	s.passes.Store(s.requests.Load() + int64(pass))
	gate := make(chan struct{})
	if old := s.gate.Swap(&gate); old != nil {
		close(*old)
	}
}

// release answers the held requests and ends the hold; it may be called
// more than once.
func (s *tokenServer) release() {
	if g := s.gate.Swap(nil); g != nil {
		close(*g)
	}
}

// waitArrival waits until a request reached the server (one that
// waitArrival did not wait for already).
func (s *tokenServer) waitArrival(tb testing.TB) {
	tb.Helper()
	select {
	case <-s.arrived:
	case <-time.After(testWait):
		tb.Fatal("no request reached the token server")
	}
}

// failNext makes the next n requests (all when n < 0) answer status.
func (s *tokenServer) failNext(n int, status int, retryAfter string) {
	s.retryAfter.Store(&retryAfter)
	s.status.Store(int64(status))
	s.failN.Store(int64(n))
}

// resetPeak forgets the most requests seen in flight.
func (s *tokenServer) resetPeak() { s.peak.Store(s.inFlight.Load()) }
