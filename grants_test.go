package nebula

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// testWait bounds every wait of these tests; nothing here should come
// close to it.
const testWait = 20 * time.Second

// newHangingEnv is a backend on the real clock with a client_credentials
// credential "a" at a token server that the test can make hang (hold).
func newHangingEnv(tb testing.TB) (*testEnv, *tokenServer) {
	tb.Helper()
	h := newTokenServer(tb)
	e := newTestBackend(tb)
	e.clock.now = time.Now()
	e.b.upstreamBackoff = time.Millisecond
	e.mustRequest(tb, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1"})
	e.mustRequest(tb, logical.CreateOperation, "creds/a", map[string]any{
		"type": "oauth2", "client_id": "c", "client_secret": "client-secret-a", "token_url": h.URL + "/token"})
	return e, h
}

// sameShardName returns a credential name other than name whose lock is
// name's shard.
func sameShardName(tb testing.TB, name string) string {
	tb.Helper()
	want := locksutil.LockIndexForKey(name)
	for i := range 100000 {
		candidate := fmt.Sprintf("other-%d", i)
		if locksutil.LockIndexForKey(candidate) == want {
			return candidate
		}
	}
	tb.Fatal("no name shares the lock shard")
	return ""
}

// Item 13: a hanging token endpoint of one credential must not block reads
// and writes of another credential whose name hashes to the same lock
// shard, whichever path makes the upstream call (a creds/ write with
// verify=true included).
func TestSlowUpstreamDoesNotBlockTheLockShard(t *testing.T) {
	for _, trigger := range []string{"token read", "refresh one", "refresh due", "verify write"} {
		t.Run(trigger, func(t *testing.T) {
			e, h := newHangingEnv(t)
			other := sameShardName(t, "a")
			e.mustRequest(t, logical.CreateOperation, "creds/"+other, map[string]any{"type": "api_key", "api_key": "other-key-1"})
			e.mustRequest(t, logical.ReadOperation, "token/a", nil) // a first token, not blocked
			h.waitArrival(t)
			e.clock.Advance(2 * time.Hour) // expired: due for refresh
			h.hold(0)

			hung := make(chan error, 1)
			go func() {
				var err error
				switch trigger {
				case "token read":
					_, err = e.request(t, logical.ReadOperation, "token/a", nil)
				case "refresh one":
					_, err = e.request(t, logical.UpdateOperation, "refresh/a", nil)
				case "refresh due":
					_, err = e.request(t, logical.UpdateOperation, "refresh", nil)
				case "verify write": // stores the token it obtains
					_, err = e.request(t, logical.UpdateOperation, "creds/a", map[string]any{"description": "verified", "verify": true})
				}
				hung <- err
			}()
			h.waitArrival(t)

			done := make(chan error, 1)
			go func() {
				if _, err := e.request(t, logical.ReadOperation, "token/"+other, nil); err != nil {
					done <- err
					return
				}
				if _, err := e.request(t, logical.UpdateOperation, "creds/"+other, map[string]any{"api_key": "other-key-2"}); err != nil {
					done <- err
					return
				}
				resp, err := e.request(t, logical.ReadOperation, "token/"+other, nil)
				if err == nil && resp.Data["access_token"] != "other-key-2" {
					err = fmt.Errorf("token/%s answered %v", other, resp.Data["access_token"])
				}
				done <- err
			}()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(testWait):
				h.release()
				<-hung
				t.Fatalf("reads and writes of %q (same lock shard as %q) did not complete while a's token endpoint hung", other, "a")
			}
			h.release()
			require.NoError(t, <-hung)
			require.Contains(t, e.tokenOf(t, "a"), "tok-")
		})
	}
}

// Item 8: the load that concurrent readers share must not run on the
// first reader's context.
func TestSharedRefreshSurvivesTheFirstCallerCancelling(t *testing.T) {
	e, h := newHangingEnv(t)
	h.hold(0)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan error, 1)
	firstReq := &logical.Request{Operation: logical.ReadOperation, Path: "token/a", Storage: e.storage}
	var firstResp *logical.Response
	go func() {
		resp, err := e.b.HandleRequest(ctx, firstReq)
		firstResp = resp
		first <- err
	}()
	h.waitArrival(t)

	const waiters = 5
	var wg sync.WaitGroup
	tokens := make([]any, waiters)
	errs := make([]error, waiters)
	for i := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.request(t, logical.ReadOperation, "token/a", nil)
			errs[i] = err
			if err == nil {
				tokens[i] = resp.Data["access_token"]
			}
		}()
	}
	time.Sleep(50 * time.Millisecond) // let the waiters join the flight (not needed for correctness)
	cancel()
	select {
	case err := <-first:
		e.checkAnswer(t, firstReq, firstResp, err)
	case <-time.After(testWait):
		t.Fatal("the cancelled caller did not return")
	}
	h.release()
	wg.Wait()
	for i := range waiters {
		require.NoError(t, errs[i], "waiter %d", i)
		require.Equal(t, "tok-1", tokens[i], "waiter %d", i)
	}
	require.EqualValues(t, 1, h.requests.Load(), "one upstream request for every reader")
}

// readOnlyPut is the error an external plugin's storage client returns on
// a standby: the gRPC client rebuilds it with errors.New, so it is not
// logical.ErrReadOnly itself.
func readOnlyPut(string) error { return errors.New("cannot write to readonly storage") }

// Item 9: on read-only storage writes and token reads that need a refresh
// answer logical.ErrReadOnly, so Vault forwards them to the active node.
func TestReadOnlyStorageIsForwarded(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	v := &vaultBackend{e.b}
	createClientCredentials(t, e, srv, "svc")
	e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	before := srv.TokenRequests()

	handle := func(op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
		req := &logical.Request{Operation: op, Path: path, Data: data, Storage: e.storage}
		resp, err := v.HandleRequest(context.Background(), req)
		e.checkAnswer(t, req, resp, err)
		return resp, err
	}

	e.storage.failPutsWith(readOnlyPut)
	_, err := handle(logical.CreateOperation, "creds/new", map[string]any{"type": "api_key", "api_key": "k"})
	require.ErrorIs(t, err, logical.ErrReadOnly, "creds/ write")
	_, err = handle(logical.UpdateOperation, "creds/svc", map[string]any{"description": "d"})
	require.ErrorIs(t, err, logical.ErrReadOnly, "creds/ update")

	// A valid token is served locally; one that needs a refresh is not
	// refreshed here.
	resp, err := handle(logical.ReadOperation, "token/svc", nil)
	require.NoError(t, err)
	require.NotEmpty(t, resp.Data["access_token"])
	e.clock.Advance(11 * time.Minute)
	e.b.purgeCache()
	_, err = handle(logical.ReadOperation, "token/svc", nil)
	require.ErrorIs(t, err, logical.ErrReadOnly, "token read of an expired token")
	_, err = handle(logical.UpdateOperation, "refresh/svc", nil)
	require.ErrorIs(t, err, logical.ErrReadOnly, "refresh/<name>")
	require.Equal(t, before, srv.TokenRequests(), "no upstream request on a read-only node")

	// A performance standby (Vault's SystemView says so) does the same.
	e.storage.failPutsWith(nil)
	e.sys.ReplicationStateVal = consts.ReplicationPerformanceStandby
	_, err = handle(logical.ReadOperation, "token/svc", nil)
	require.ErrorIs(t, err, logical.ErrReadOnly, "token read on a performance standby")
	require.Equal(t, before, srv.TokenRequests(), "no upstream request on a performance standby")

	// The active node refreshes.
	e.sys.ReplicationStateVal = 0
	resp, err = handle(logical.ReadOperation, "token/svc", nil)
	require.NoError(t, err)
	require.NotEmpty(t, resp.Data["access_token"])
	require.Equal(t, before+1, srv.TokenRequests())
}

// Item 7: a refresh token the provider issued is never lost because
// storage failed to take it.
func TestIssuedRefreshTokenSurvivesAFailedPut(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	id, secret, refresh := srv.SignedInGrant(t)
	e.mustRequest(t, logical.CreateOperation, "creds/user", map[string]any{
		"type": "oauth2", "grant_type": "refresh_token", "client_id": id, "client_secret": secret,
		"refresh_token": refresh, "token_url": srv.TokenURL(), "auth_style": "header",
	})
	e.mustRequest(t, logical.ReadOperation, "token/user", nil)
	_, sv, err := loadCredentialWithCurrent(t.Context(), e.storage, "user")
	require.NoError(t, err)
	consumed := sv.Token.RefreshToken

	// The refresh succeeds upstream (consuming the stored refresh token);
	// storing its answer fails.
	e.clock.Advance(11 * time.Minute)
	e.storage.failPutsWith(func(key string) error {
		if strings.HasPrefix(key, secretPrefix) {
			return errInjected
		}
		return nil
	})
	resp, err := e.request(t, logical.ReadOperation, "token/user", nil)
	require.NoError(t, err, "the issued token is served while it is held")
	held := resp.Data["access_token"]
	require.EqualValues(t, 2, srv.TokenRequestsFor("refresh_token"))

	// Storage recovers: the next read stores the held token, without
	// another upstream request.
	e.storage.failPutsWith(nil)
	resp = e.mustRequest(t, logical.ReadOperation, "token/user", nil)
	require.Equal(t, held, resp.Data["access_token"])
	require.EqualValues(t, 2, srv.TokenRequestsFor("refresh_token"))
	_, sv, err = loadCredentialWithCurrent(t.Context(), e.storage, "user")
	require.NoError(t, err)
	require.NotEqual(t, consumed, sv.Token.RefreshToken, "the newly issued refresh token is stored")
	require.Equal(t, held, sv.Token.AccessToken)

	// The grant still works.
	e.mustRequest(t, logical.UpdateOperation, "refresh/user", nil)
	require.EqualValues(t, 3, srv.TokenRequestsFor("refresh_token"))
}

// Item 7, background path: a held token is written by the periodic run.
func TestHeldTokenIsStoredByThePeriodicRun(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	id, secret, refresh := srv.SignedInGrant(t)
	e.mustRequest(t, logical.CreateOperation, "creds/user", map[string]any{
		"type": "oauth2", "grant_type": "refresh_token", "client_id": id, "client_secret": secret,
		"refresh_token": refresh, "token_url": srv.TokenURL(), "auth_style": "header",
	})
	e.storage.failPutsWith(func(key string) error {
		if strings.HasPrefix(key, secretPrefix) {
			return errInjected
		}
		return nil
	})
	resp, err := e.request(t, logical.ReadOperation, "token/user", nil)
	require.NoError(t, err)
	e.storage.failPutsWith(nil)
	e.runPeriodic(t)
	_, sv, err := loadCredentialWithCurrent(t.Context(), e.storage, "user")
	require.NoError(t, err)
	require.NotNil(t, sv.Token, "the periodic run stored the held token")
	require.Equal(t, resp.Data["access_token"], sv.Token.AccessToken)
	require.NotEqual(t, refresh, sv.Token.RefreshToken)
	require.EqualValues(t, 1, srv.TokenRequestsFor("refresh_token"))
}

// Item 6: rotating a credential whose provider does not rotate refresh
// tokens keeps the grant: the new version uses the same refresh token, so
// the retired version's revocation must not kill it.
func TestRotationKeepsAGrantTheNewVersionStillUses(t *testing.T) {
	for _, strategy := range []string{"immediate", "blue_green"} {
		t.Run(strategy, func(t *testing.T) {
			e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(time.Hour), oauthserver.WithoutRefreshTokenRotation())
			id, secret, refresh := srv.SignedInGrant(t)
			e.mustRequest(t, logical.CreateOperation, "creds/g", map[string]any{
				"type": "oauth2", "grant_type": "refresh_token", "client_id": id, "client_secret": secret,
				"refresh_token": refresh, "token_url": srv.TokenURL(), "revocation_url": srv.RevocationURL(), "auth_style": "header",
			})
			e.mustRequest(t, logical.UpdateOperation, "creds/g/rotation", map[string]any{"strategy": strategy, "grace_period": "10m"})
			old := e.tokenOf(t, "g")
			e.mustRequest(t, logical.UpdateOperation, "rotate/g", nil)
			require.NotEqual(t, old, e.tokenOf(t, "g"))
			if strategy == "blue_green" {
				e.clock.Advance(11 * time.Minute)
				e.runPeriodic(t)
			}
			resp, err := e.request(t, logical.UpdateOperation, "refresh/g", nil)
			require.NoError(t, err, "refresh after the rotation")
			require.NotEmpty(t, resp.Data["access_token"])
			require.Zero(t, srv.RevocationRequests(), "nothing of a grant a live version uses is revoked")
		})
	}
}

// Item 16: reads of names that do not exist leave no cache state behind.
// The generations are a fixed array of nameGenSlots counters (bounded by
// its type); what a read of a missing name must not do is move one of
// them, add a cache entry, or disturb another name's cached token.
func TestMissingNameReadsLeaveBoundedCacheGenerations(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	e.mustRequest(t, logical.ReadOperation, "token/k", nil) // cached
	generations := func() []uint64 {
		out := make([]uint64, 0, nameGenSlots)
		for i := range e.b.nameGens {
			out = append(out, e.b.nameGens[i].Load())
		}
		return out
	}
	before := generations()
	for i := range 10000 {
		_, err := e.request(t, logical.ReadOperation, fmt.Sprintf("token/missing-%d", i), nil)
		requireKind(t, err, KindNotFound)
	}
	require.Equal(t, before, generations(), "reads of missing names move no cache generation")
	require.Equal(t, 1, e.b.cache.Len(), "and add no cache entry")
	hits := e.b.stats.cacheHits.Load()
	e.mustRequest(t, logical.ReadOperation, "token/k", nil)
	require.Equal(t, hits+1, e.b.stats.cacheHits.Load(), "the cached token of k is still served from the cache")
}

// Item 7, rotation path: an oauth2 rotation refreshes with the current
// version's refresh token; when the new version cannot be staged, the
// token it obtained (with the refresh token that replaced the consumed one)
// is kept for the current version instead of being lost.
func TestFailedRotationKeepsTheIssuedRefreshToken(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(time.Hour))
	id, secret, refresh := srv.SignedInGrant(t)
	e.mustRequest(t, logical.CreateOperation, "creds/user", map[string]any{
		"type": "oauth2", "grant_type": "refresh_token", "client_id": id, "client_secret": secret,
		"refresh_token": refresh, "token_url": srv.TokenURL(), "auth_style": "header",
	})
	e.mustRequest(t, logical.ReadOperation, "token/user", nil)
	e.storage.failPutsWith(func(key string) error {
		if strings.HasPrefix(key, secretPrefix) {
			return errInjected
		}
		return nil
	})
	_, err := e.request(t, logical.UpdateOperation, "rotate/user", nil)
	requireKind(t, err, KindStorage)
	e.storage.failPutsWith(nil)

	e.mustRequest(t, logical.ReadOperation, "token/user", nil)
	resp, err := e.request(t, logical.UpdateOperation, "refresh/user", nil)
	require.NoError(t, err, "the grant survives a rotation that could not be stored")
	require.Equal(t, 1, resp.Data["version"])
}

func TestIsReadOnly(t *testing.T) {
	grpc := errors.New("cannot write to readonly storage") // as the gRPC storage client builds it
	require.True(t, isReadOnly(logical.ErrReadOnly))
	require.True(t, isReadOnly(grpc))
	require.True(t, isReadOnly(storageError("writing credential", grpc)))
	require.True(t, isReadOnly(fmt.Errorf("outer: %w", storageError("x", grpc))))
	require.True(t, isReadOnly(errors.Join(errInjected, grpc)))
	require.False(t, isReadOnly(nil))
	require.False(t, isReadOnly(errInjected))
	require.False(t, isReadOnly(storageError("x", errInjected)))
	// Text the engine writes into its own messages (a webhook answer's
	// field name, say) is not a storage error.
	require.False(t, isReadOnly(newError(KindRotationFailed, "answer has field %q", "cannot write to readonly storage")))
}
