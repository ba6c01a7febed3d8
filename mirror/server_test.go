package mirror

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The secret used as mirrored content in tests; no error may contain it.
const testSecret = "s3cr3t-t0ken-value"

// testContent returns a mirrored document of version v.
func testContent(v int) []byte {
	return []byte(`{"access_token":"` + testSecret + `-v` + strconv.Itoa(v) + `","token_type":"Bearer"}`)
}

// loopbackServer is an httptest server that can be stopped and started again
// on the same loopback address, keeping its handler and state: a target that
// goes down and comes back.
type loopbackServer struct {
	tb      testing.TB
	handler http.Handler
	tls     bool

	mu   sync.Mutex // guards srv
	srv  *httptest.Server
	addr string
}

func newLoopbackServer(tb testing.TB, handler http.Handler, useTLS bool) *loopbackServer {
	tb.Helper()
	s := &loopbackServer{tb: tb, handler: handler, tls: useTLS}
	s.start()
	tb.Cleanup(s.stop)
	return s
}

// start serves on the server's address (a new one the first time).
func (s *loopbackServer) start() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
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
		s.tb.Fatalf("listen on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(s.handler)
	srv.Listener.Close()
	srv.Listener = ln
	if s.tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	s.srv, s.addr = srv, ln.Addr().String()
}

// stop closes the listener and every connection.
func (s *loopbackServer) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.srv.CloseClientConnections()
		s.srv.Close()
		s.srv = nil
	}
}

func (s *loopbackServer) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tls {
		return "https://" + s.addr
	}
	return "http://" + s.addr
}

// client returns an HTTP client trusting the server's certificate. httptest
// servers share one certificate, so it stays valid across restarts.
func (s *loopbackServer) client() *http.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.srv.Client()
	// A fresh transport per client: closing the server must not close the
	// client's idle connections behind the test's back.
	c.Transport = c.Transport.(*http.Transport).Clone()
	return c
}

// assertMirrorError checks that err is an *Error of kind with retryable, and
// that its message holds no secret content and none of the upstream texts.
func assertMirrorError(tb testing.TB, err error, kind Kind, retryable bool, upstream ...string) *Error {
	tb.Helper()
	var e *Error
	if !errors.As(err, &e) {
		tb.Fatalf("error %v (%T) is not a *mirror.Error", err, err)
	}
	if e.Kind != kind || e.Retryable != retryable {
		tb.Fatalf("error %q: kind %s retryable %v, want kind %s retryable %v", e, e.Kind, e.Retryable, kind, retryable)
	}
	if IsRetryable(err) != retryable {
		tb.Fatalf("IsRetryable(%q) = %v", e, !retryable)
	}
	msg := err.Error()
	for _, s := range append(upstream, testSecret) {
		if strings.Contains(msg, s) {
			tb.Fatalf("error message %q contains %q", msg, s)
		}
	}
	return e
}
