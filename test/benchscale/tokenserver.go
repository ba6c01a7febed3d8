package main

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// tokenServer is an OAuth2 token endpoint on loopback that answers every
// client_credentials request after a fixed latency, counting requests and
// the most in flight at once.
type tokenServer struct {
	srv      *http.Server
	host     string // 127.0.0.1:port
	latency  time.Duration
	lifetime atomic.Int64 // expires_in of the tokens it issues, seconds

	requests atomic.Int64
	mu       sync.Mutex // guards cur, max
	cur, max int
}

// startTokenServer listens on a free loopback port.
func startTokenServer(latency, lifetime time.Duration) (*tokenServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &tokenServer{host: l.Addr().String(), latency: latency}
	t.lifetime.Store(int64(lifetime.Seconds()))
	t.srv = &http.Server{Handler: http.HandlerFunc(t.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = t.srv.Serve(l) }()
	return t, nil
}

func (t *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	t.mu.Lock()
	t.cur++
	t.max = max(t.max, t.cur)
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.cur--
		t.mu.Unlock()
	}()
	n := t.requests.Add(1)
	select {
	case <-time.After(t.latency):
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintf(w, `{"access_token":"bench-token-%d","token_type":"Bearer","expires_in":%d}`, n, t.lifetime.Load())
}

// url is the token endpoint's URL.
func (t *tokenServer) url() string { return "http://" + t.host + "/token" }

// resetMax starts a new high-water mark of requests in flight.
func (t *tokenServer) resetMax() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.max = t.cur
}

func (t *tokenServer) maxInFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.max
}

func (t *tokenServer) close() { _ = t.srv.Close() }
