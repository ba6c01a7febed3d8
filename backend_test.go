package nebula

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

// testClock is a controllable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time // guarded by mu
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// testEnv is a backend on in-memory storage with a controllable clock.
type testEnv struct {
	b       *backend
	storage *faultStorage
	clock   *testClock
	sys     *logical.StaticSystemView
}

func newTestBackend(tb testing.TB) *testEnv {
	tb.Helper()
	conf := logical.TestBackendConfig()
	sys := logical.TestSystemView()
	conf.System = sys
	storage := &faultStorage{Storage: &logical.InmemStorage{}}
	conf.StorageView = storage
	b, err := Factory(context.Background(), conf)
	require.NoError(tb, err)
	clock := &testClock{now: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
	nb := b.(*vaultBackend).backend
	nb.now = clock.Now
	nb.writableTTL = 0 // tests change the replication state between requests
	return &testEnv{b: nb, storage: storage, clock: clock, sys: sys}
}

// request runs one request through the backend and returns its data, or the
// error (a *CredentialError for handler failures). A successful answer is
// checked against the operation's response schema (validateResponse).
func (e *testEnv) request(tb testing.TB, op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	tb.Helper()
	resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: op,
		Path:      path,
		Data:      data,
		Storage:   e.storage,
	})
	if err == nil && resp != nil && resp.IsError() {
		err = resp.Error()
	}
	if err == nil {
		e.validateResponse(tb, op, path, resp)
	}
	return resp, err
}

// handle is HandleRequest for requests request cannot build (own storage,
// identity fields or context): it returns what HandleRequest returns, after
// checking a successful answer against the route's declared response schema
// (checkAnswer). Call it from the test's goroutine.
func (e *testEnv) handle(tb testing.TB, ctx context.Context, req *logical.Request) (*logical.Response, error) {
	tb.Helper()
	resp, err := e.b.HandleRequest(ctx, req)
	e.checkAnswer(tb, req, resp, err)
	return resp, err
}

// checkAnswer validates resp, the answer to req, against the route's
// declared response schema unless the request failed (err or an error
// response).
func (e *testEnv) checkAnswer(tb testing.TB, req *logical.Request, resp *logical.Response, err error) {
	tb.Helper()
	if err == nil && (resp == nil || !resp.IsError()) {
		e.validateResponse(tb, req.Operation, req.Path, resp)
	}
}

// mustRequest is request that fails the test on error.
func (e *testEnv) mustRequest(tb testing.TB, op logical.Operation, path string, data map[string]any) *logical.Response {
	tb.Helper()
	resp, err := e.request(tb, op, path, data)
	require.NoError(tb, err, "%s %s", op, path)
	return resp
}

// requireKind asserts that err is a CredentialError of the kind, whose
// message starts with the kind's code and mentions every word in mention.
func requireKind(tb testing.TB, err error, kind Kind, mention ...string) {
	tb.Helper()
	require.Error(tb, err)
	var ce *CredentialError
	require.True(tb, errors.As(err, &ce), "want a CredentialError, got %T: %v", err, err)
	require.Equal(tb, kind.Code(), ce.Kind.Code(), "error: %v", err)
	require.True(tb, strings.HasPrefix(err.Error(), kind.Code()+": "), "message %q lacks prefix", err)
	for _, m := range mention {
		require.Contains(tb, err.Error(), m)
	}
}

// faultStorage wraps storage and fails operations on demand: after a
// number of successful puts, or every get/list/delete.
type faultStorage struct {
	logical.Storage
	// putsLeft is how many more puts succeed; negative means unlimited.
	putsLeft   atomic.Int64
	limitPuts  atomic.Bool
	failGet    atomic.Bool
	failList   atomic.Bool
	failDelete atomic.Bool
	puts       atomic.Int64 // successful puts, for tests that count writes
	gets       atomic.Int64 // gets, for tests that count reads
	// putErr, when set, decides the error of each put by key (nil: the put
	// goes ahead).
	putErr atomic.Pointer[func(key string) error]
}

// failPutsWith makes puts answer f(key); nil lifts it.
func (s *faultStorage) failPutsWith(f func(key string) error) {
	if f == nil {
		s.putErr.Store(nil)
		return
	}
	s.putErr.Store(&f)
}

var errInjected = errors.New("injected storage fault")

// failPutsAfter lets n more puts succeed and fails the rest; n < 0 lifts
// the limit.
func (s *faultStorage) failPutsAfter(n int) {
	s.limitPuts.Store(n >= 0)
	s.putsLeft.Store(int64(n))
}

func (s *faultStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if f := s.putErr.Load(); f != nil {
		if err := (*f)(e.Key); err != nil {
			return err
		}
	}
	if s.limitPuts.Load() && s.putsLeft.Add(-1) < 0 {
		return errInjected
	}
	if err := s.Storage.Put(ctx, e); err != nil {
		return err
	}
	s.puts.Add(1)
	return nil
}

func (s *faultStorage) Get(ctx context.Context, k string) (*logical.StorageEntry, error) {
	if s.failGet.Load() {
		return nil, errInjected
	}
	s.gets.Add(1)
	return s.Storage.Get(ctx, k)
}

func (s *faultStorage) List(ctx context.Context, p string) ([]string, error) {
	if s.failList.Load() {
		return nil, errInjected
	}
	return s.Storage.List(ctx, p)
}

func (s *faultStorage) Delete(ctx context.Context, k string) error {
	if s.failDelete.Load() {
		return errInjected
	}
	return s.Storage.Delete(ctx, k)
}

// snapshot returns every key and value in storage.
func (s *faultStorage) snapshot(tb testing.TB) map[string]string {
	tb.Helper()
	out := map[string]string{}
	keys, err := logical.CollectKeys(context.Background(), s.Storage)
	require.NoError(tb, err)
	for _, k := range keys {
		e, err := s.Storage.Get(context.Background(), k)
		require.NoError(tb, err)
		out[k] = string(e.Value)
	}
	return out
}

func TestPeriodicRunsOnlyWhereWritable(t *testing.T) {
	e := newTestBackend(t)
	var runs atomic.Int64
	e.b.tasks = []periodicTask{
		{name: "failing", run: func(context.Context, logical.Storage) error { return errInjected }},
		{name: "count", run: func(context.Context, logical.Storage) error { runs.Add(1); return nil }},
	}
	req := &logical.Request{Storage: e.storage}

	require.NoError(t, e.b.periodic(context.Background(), req))
	require.EqualValues(t, 1, runs.Load(), "a failing task must not stop the others")

	for _, state := range []consts.ReplicationState{consts.ReplicationPerformanceStandby, consts.ReplicationPerformanceSecondary, consts.ReplicationDRSecondary} {
		e.sys.ReplicationStateVal = state
		require.NoError(t, e.b.periodic(context.Background(), req))
	}
	require.EqualValues(t, 1, runs.Load(), "standbys and secondaries must not run background work")
}

func TestFieldTypeErrorsAreInvalidInputWithoutTheValue(t *testing.T) {
	e := newTestBackend(t)
	_, err := e.request(t, logical.UpdateOperation, "config", map[string]any{"cache_max_size": "s3cr3t-not-a-number"})
	requireKind(t, err, KindInvalidInput, "cache_max_size")
	require.NotContains(t, err.Error(), "s3cr3t")
}

// snapshotWithout is snapshot less the named keys.
func (s *faultStorage) snapshotWithout(tb testing.TB, keys ...string) map[string]string {
	tb.Helper()
	snap := s.snapshot(tb)
	for _, k := range keys {
		delete(snap, k)
	}
	return snap
}

// isSealWrapped reports whether Vault seal-wraps the storage key.
func (b *backend) isSealWrapped(key string) bool {
	for _, prefix := range b.PathsSpecial.SealWrapStorage {
		if strings.HasPrefix(key, prefix) {
			return true
		}
	}
	return false
}

const time2h = 2 * time.Hour

func TestVaultSeesCodedErrors(t *testing.T) {
	e := newTestBackend(t)
	v := &vaultBackend{e.b}
	resp, err := v.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.ReadOperation, Path: "creds/missing", Storage: e.storage,
	})
	require.NoError(t, err)
	require.Equal(t, 404, resp.Data[logical.HTTPStatusCode])
	require.JSONEq(t, `{"errors":["not_found: credential \"missing\" does not exist"]}`, string(resp.Data[logical.HTTPRawBody].([]byte)))

	_, _, err = v.HandleExistenceCheck(context.Background(), &logical.Request{
		Operation: logical.CreateOperation, Path: "creds/x", Storage: e.storage,
		Data: map[string]any{"api_key": map[string]any{"value": "s3cret-in-object"}},
	})
	require.Error(t, err)
	require.Contains(t, err.Error(), `invalid_input: field "api_key" has the wrong type`)
	require.NotContains(t, err.Error(), "s3cret")
}

// The node's role is asked of Vault at most once per writableTTL: token
// reads ask on every request, and for an external plugin each question is
// a gRPC round trip.
func TestWritableIsKeptForItsTTL(t *testing.T) {
	e := newTestBackend(t)
	e.b.writableTTL = time.Hour
	require.True(t, e.b.writable())
	e.sys.ReplicationStateVal = consts.ReplicationPerformanceStandby
	require.True(t, e.b.writable(), "the answer is kept for writableTTL")
	e.b.writableUntil.Store(0) // the TTL has passed
	require.False(t, e.b.writable(), "then Vault is asked again")
	e.sys.ReplicationStateVal = 0
	require.False(t, e.b.writable())
}
