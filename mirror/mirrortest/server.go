package mirrortest

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server is an httptest server on loopback that can be stopped and started
// again on the same address, keeping its handler and state: a target that
// goes down and comes back.
type server struct {
	tb      testing.TB
	handler http.Handler
	tls     bool
	conns   atomic.Int64 // connections accepted, over all starts

	mu        sync.Mutex        // guards the fields below
	srv       *httptest.Server  // nil while stopped
	addr      string            // host:port, fixed by the first start
	transport *http.Transport   // trusts the server's certificate; cloned per client
	clients   []*http.Transport // transports of the clients handed out
}

// newServer starts a server for handler, over TLS when useTLS, and stops it
// when the test ends.
func newServer(tb testing.TB, handler http.Handler, useTLS bool) *server {
	tb.Helper()
	s := &server{tb: tb, handler: handler, tls: useTLS}
	s.start()
	tb.Cleanup(s.stop)
	return s
}

// start serves on the server's address (a new one the first time). Starting
// a running server does nothing.
func (s *server) start() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return
	}
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old socket may linger briefly
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.tb.Fatalf("mirrortest: listen on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(s.handler)
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.conns.Add(1)
		}
	}
	if s.tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	if s.transport == nil {
		// httptest servers share one certificate, so a transport trusting
		// the first one stays valid across restarts.
		s.transport = srv.Client().Transport.(*http.Transport).Clone()
	}
	s.srv, s.addr = srv, ln.Addr().String()
}

// stop closes the listener and every connection, and drops the idle
// connections of the clients handed out: the next request of a client then
// fails to connect (connection refused) instead of racing the client's
// discovery that its kept-alive connection was closed. Stopping a stopped
// server does nothing.
func (s *server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return
	}
	s.srv.CloseClientConnections()
	s.srv.Close()
	s.srv = nil
	for _, t := range s.clients {
		t.CloseIdleConnections()
	}
}

// url returns the server's base URL, also while it is stopped.
func (s *server) url() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tls {
		return "https://" + s.addr
	}
	return "http://" + s.addr
}

// connections returns how many connections the server accepted (before any
// TLS handshake), over all its starts.
func (s *server) connections() int { return int(s.conns.Load()) }

// client returns an HTTP client trusting the server's certificate, with a
// transport of its own.
func (s *server) client() *http.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.transport.Clone()
	s.clients = append(s.clients, t)
	return &http.Client{Transport: t}
}
