package nebula

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
)

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
	srv := newTokenServer(t)
	srv.lifetime.Store(600)
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

	srv.hold(0)
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
		cur := int(srv.inFlight.Load())
		s := hostStats(t, e, host)
		if cur > limit || cur == limit && s.InFlight == limit && s.Waiting > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "host not saturated: %d at the server, limiter %+v", cur, s)
		time.Sleep(5 * time.Millisecond)
	}
	require.Equal(t, limit, int(srv.inFlight.Load()), "requests at the token endpoint while the others wait")

	srv.release()
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, name(i))
	}
	require.Equal(t, limit, int(srv.peak.Load()), "most requests in flight at the token endpoint")
	require.EqualValues(t, 2*creds, srv.issued.Load(), "one refresh per credential")
}
