package nebula

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
)

// gatedTokenServer is a loopback token endpoint that, while its gate is
// set, holds every request until the gate closes, and counts the requests
// in flight.
type gatedTokenServer struct {
	*httptest.Server
	gate     atomic.Pointer[chan struct{}]
	requests atomic.Int64

	mu       sync.Mutex // guards cur, max
	cur, max int
}

func newGatedTokenServer(tb testing.TB) *gatedTokenServer {
	tb.Helper()
	s := &gatedTokenServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.cur++
		s.max = max(s.max, s.cur)
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.cur--
			s.mu.Unlock()
		}()
		if g := s.gate.Load(); g != nil {
			select {
			case <-*g:
			case <-r.Context().Done():
				return
			}
		}
		n := s.requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"tok-%d","token_type":"Bearer","expires_in":600}`, n)
	}))
	tb.Cleanup(func() {
		if g := s.gate.Swap(nil); g != nil {
			close(*g)
		}
		s.Close()
	})
	return s
}

func (s *gatedTokenServer) counts() (cur, max int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.max
}

// hostStats is the engine's limiter state of a host (zero without a
// limiter).
func hostStats(tb testing.TB, e *testEnv, rawURL string) upstream.HostStats {
	tb.Helper()
	cfg, err := e.b.getConfig(context.Background(), e.storage)
	require.NoError(tb, err)
	l := e.b.upstream(cfg).HostLimiter()
	if l == nil {
		return upstream.HostStats{}
	}
	return l.Stats()[rawURL]
}

// TestExpiredTokenStormStaysWithinThePerHostLimit reads 500 different
// expired tokens of one host at once: at most upstream.DefaultConcurrencyPerHost
// requests reach the host at any time, and every read succeeds.
func TestExpiredTokenStormStaysWithinThePerHostLimit(t *testing.T) {
	const creds, limit = 500, upstream.DefaultConcurrencyPerHost
	srv := newGatedTokenServer(t)
	e := newTestBackend(t)
	e.clock.now = time.Now()
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1"})
	name := func(i int) string { return fmt.Sprintf("storm-%03d", i) }
	for i := range creds {
		e.mustRequest(t, logical.CreateOperation, "creds/"+name(i), map[string]any{
			"type": "oauth2", "client_id": "client-" + name(i), "client_secret": "s", "token_url": srv.URL + "/token",
		})
		e.mustRequest(t, logical.ReadOperation, "token/"+name(i), nil)
	}
	e.clock.Advance(11 * time.Minute) // every token expired

	gate := make(chan struct{})
	srv.gate.Store(&gate)
	var wg sync.WaitGroup
	errs := make([]error, creds)
	for i := range creds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.request(t, logical.ReadOperation, "token/"+name(i), nil)
		}()
	}

	// Wait until the host is saturated (the limit in flight, more waiting)
	// or more than the limit reached it.
	host := srv.Listener.Addr().String()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cur, _ := srv.counts()
		s := hostStats(t, e, host)
		if cur > limit || cur == limit && s.InFlight == limit && s.Waiting > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "host not saturated: %d at the server, limiter %+v", cur, s)
		time.Sleep(5 * time.Millisecond)
	}
	cur, _ := srv.counts()
	require.Equal(t, limit, cur, "requests at the token endpoint while the others wait")

	close(*srv.gate.Swap(nil))
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, name(i))
	}
	_, most := srv.counts()
	require.Equal(t, limit, most, "most requests in flight at the token endpoint")
	require.EqualValues(t, 2*creds, srv.requests.Load(), "one refresh per credential")
}
