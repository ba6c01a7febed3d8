package nebula

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// BenchmarkTokenRead measures token/<name> reads through HandleRequest, from
// the cache and from storage, for a static and an oauth2 credential.
func BenchmarkTokenRead(b *testing.B) {
	e, srv := newOAuthEnv(b, oauthserver.WithAccessTokenLifetime(24*time.Hour))
	e.mustRequest(b, logical.CreateOperation, "creds/key", validCreds["api_key"])
	createClientCredentials(b, e, srv, "oauth")
	for _, name := range []string{"key", "oauth"} {
		for _, cached := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/cached=%v", name, cached), func(b *testing.B) {
				req := &logical.Request{Operation: logical.ReadOperation, Path: "token/" + name, Storage: e.storage}
				e.mustRequest(b, logical.ReadOperation, req.Path, nil)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if !cached {
						e.b.dropCached(name)
					}
					if _, err := e.b.HandleRequest(context.Background(), req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	require.EqualValues(b, 1, srv.TokenRequests(), "reads of a valid token never call the upstream")
}

// BenchmarkRefreshDue measures refresh with 10 credentials due among many
// stored: the cost should follow the number due, not the number stored.
func BenchmarkRefreshDue(b *testing.B) {
	for _, stored := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("stored=%d/due=10", stored), func(b *testing.B) {
			benchmarkRefreshDue(b, stored, 10)
		})
	}
}

func benchmarkRefreshDue(b *testing.B, stored, due int) {
	const lifetime = 10 * time.Minute
	e, srv := newOAuthEnv(b, oauthserver.WithAccessTokenLifetime(lifetime))
	for i := range due {
		name := fmt.Sprintf("due-%d", i)
		createClientCredentials(b, e, srv, name)
		e.mustRequest(b, logical.ReadOperation, "token/"+name, nil)
	}
	// The others: stored credentials whose tokens expire 30 to 120 days
	// out, written directly to storage (creating 100k through the API
	// would only slow the setup).
	ctx := context.Background()
	now := e.clock.Now()
	for i := range stored - due {
		name := fmt.Sprintf("idle-%d", i)
		c := &credential{ID: name, Name: name, Type: "oauth2", Version: 1, Fields: map[string]any{"client_id": "c"}}
		entry, err := jsonEntry(credKey(name), c, false)
		require.NoError(b, err)
		require.NoError(b, e.storage.Put(ctx, entry))
		expiry := now.Add(30*24*time.Hour + time.Duration(i)*(90*24*time.Hour)/time.Duration(stored))
		require.NoError(b, e.storage.Put(ctx, &logical.StorageEntry{Key: expiryKey(expiry, name)}))
	}
	// The first run loads the in-memory index from storage, once per
	// active node; the benchmark measures the runs after it.
	_, err := e.b.refreshDue(ctx, e.storage)
	require.NoError(b, err)
	b.ResetTimer()
	for range b.N {
		e.clock.Advance(lifetime)
		res, err := e.b.refreshDue(ctx, e.storage)
		if err != nil || len(res.Refreshed) != due {
			b.Fatalf("refreshed %d of %d: %v %v", len(res.Refreshed), due, err, res.Failed)
		}
	}
}

// BenchmarkRefreshDueParallel measures refresh of 300 due oauth2 tokens
// against a loopback token endpoint answering after 100 ms, with the
// default refresh_concurrency (16) and upstream_concurrency_per_host (8):
// the floor is 300 x 100 ms / 8 = 3.75 s per op.
func BenchmarkRefreshDueParallel(b *testing.B) {
	const due = 300
	e := newTestBackend(b)
	e.b.upstreamBackoff = time.Millisecond
	srv := newTokenServer(b)
	e.mustRequest(b, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1"})
	names := createTokenCreds(b, e, srv, "due", due)
	require.NoError(b, readAll(b, e, names, 32))
	srv.delay.Store(int64(100 * time.Millisecond))
	srv.resetPeak()
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		e.clock.Advance(time.Hour) // every token is due
		res, err := e.b.refreshDue(ctx, e.storage)
		if err != nil || len(res.Refreshed) != due {
			b.Fatalf("refreshed %d of %d: %v %v", len(res.Refreshed), due, err, res.Failed)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(srv.peak.Load()), "max-in-flight")
}
