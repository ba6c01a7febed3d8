package nebula

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

// ctxStorage fails every operation whose context is done, as Vault's
// storage does for a plugin (the gRPC call is cancelled).
type ctxStorage struct{ logical.Storage }

func (s ctxStorage) List(ctx context.Context, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.Storage.List(ctx, prefix)
}

func (s ctxStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.Storage.Get(ctx, key)
}

func (s ctxStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Storage.Put(ctx, e)
}

func (s ctxStorage) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Storage.Delete(ctx, key)
}

// createScheduled creates a generated credential rotated every hour and
// returns its token.
func createScheduled(tb testing.TB, e *testEnv, name string) string {
	tb.Helper()
	e.mustRequest(tb, logical.CreateOperation, "creds/"+name, map[string]any{"type": "generated"})
	e.mustRequest(tb, logical.UpdateOperation, "creds/"+name+"/rotation", map[string]any{"interval": "1h"})
	return e.tokenOf(tb, name)
}

// TestScheduledRotationSurvivesCancelledRun (issue 12 item 10): names the
// scheduler popped but did not get to when the run's context ended are due
// again on the next run.
func TestScheduledRotationSurvivesCancelledRun(t *testing.T) {
	e := newTestBackend(t)
	first := map[string]string{"a": createScheduled(t, e, "a"), "b": createScheduled(t, e, "b")}
	e.clock.Advance(time.Hour + time.Minute)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var rotations atomic.Int64
	e.b.rotationHook = func(step string) error {
		if step == "cleaned" {
			rotations.Add(1)
			cancel() // the run's context ends after its first rotation
		}
		return nil
	}
	_ = e.b.periodicRotation(ctx, e.storage)
	require.EqualValues(t, 1, rotations.Load(), "the cancelled run rotates one credential")

	e.b.rotationHook = nil
	_ = e.b.periodicRotation(context.Background(), e.storage)
	for name, token := range first {
		require.NotEqual(t, token, e.tokenOf(t, name), "credential %s is rotated by the next run", name)
	}
}

// TestScheduledRotationSurvivesStorageReadFailure (issue 12 item 10): a
// popped name whose credential cannot be read is due again once storage
// recovers.
func TestScheduledRotationSurvivesStorageReadFailure(t *testing.T) {
	e := newTestBackend(t)
	first := createScheduled(t, e, "g")
	e.runPeriodic(t) // loads the schedule index; nothing due yet
	e.clock.Advance(time.Hour + time.Minute)

	e.storage.failGet.Store(true)
	require.Error(t, e.b.periodicRotation(context.Background(), e.storage))
	e.storage.failGet.Store(false)
	require.Equal(t, first, e.tokenOf(t, "g"), "not rotated while storage fails")

	require.NoError(t, e.b.periodicRotation(context.Background(), e.storage))
	require.NotEqual(t, first, e.tokenOf(t, "g"), "rotated by the run after storage recovered")
}

// TestHangingRefreshDoesNotStarveOtherTasks (issue 12 item 11): a
// refresh-ahead run whose upstream hangs uses up its own budget only; the
// rotation and audit retention tasks of the same periodic call still run.
func TestHangingRefreshDoesNotStarveOtherTasks(t *testing.T) {
	e := newTestBackend(t)
	e.b.taskBudget = 300 * time.Millisecond
	e.b.itemBudget = 300 * time.Millisecond
	e.b.upstreamBackoff = time.Millisecond
	srv := newTokenServer(t)
	srv.lifetime.Store(600)
	srv.hold(1) // answers the first token request, holds the others
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1", "audit_retention": "24h"})
	e.mustRequest(t, logical.CreateOperation, "creds/slow", map[string]any{
		"type": "oauth2", "client_id": "c", "client_secret": "s", "token_url": srv.URL + "/token", "auth_style": "header"})
	require.Equal(t, "tok-1", e.tokenOf(t, "slow"))
	rotated := createScheduled(t, e, "g")

	// An audit batch far past the retention period.
	oldBatch := fmt.Sprintf("%s%010d/old-batch", auditPrefix, e.clock.Now().Add(-72*time.Hour).Unix()/3600)
	require.NoError(t, e.storage.Put(context.Background(), &logical.StorageEntry{Key: oldBatch, Value: []byte("[]")}))

	e.clock.Advance(time.Hour + time.Minute) // the token is expiring and g is due
	// Vault bounds a periodic call (DefaultMaxRequestDuration); a shorter
	// deadline here keeps the test short.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.b.periodic(ctx, &logical.Request{Storage: ctxStorage{e.storage}}) }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the periodic call did not return")
	}
	require.GreaterOrEqual(t, srv.requests.Load(), int64(2), "refresh-ahead called the hanging upstream")
	require.NotEqual(t, rotated, e.tokenOf(t, "g"), "the rotation task ran")
	entry, err := e.storage.Get(context.Background(), oldBatch)
	require.NoError(t, err)
	require.Nil(t, entry, "the audit retention task ran")
}

// TestHangingRotationDoesNotBlockTheOthers (issue 12 item 11): within the
// rotation task, a credential whose webhook hangs uses up its own budget
// only; the next due credential is rotated in the same run.
func TestHangingRotationDoesNotBlockTheOthers(t *testing.T) {
	e := newTestBackend(t)
	e.b.itemBudget = 300 * time.Millisecond
	w := newWebhook(t, e)
	e.b.webhookTimeout = time.Minute
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"allowed_hosts": "127.0.0.1"})
	setupWebhookCredential(t, e, w, "slow", map[string]any{"interval": "1h"})
	w.mu.Lock()
	w.block = make(chan struct{})
	w.mu.Unlock()
	t.Cleanup(func() { close(w.block) }) // runs before the server closes
	e.clock.Advance(time.Minute)         // g is due a minute after slow
	first := createScheduled(t, e, "g")
	e.clock.Advance(time.Hour + time.Minute)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.b.periodicRotation(ctx, ctxStorage{e.storage}) }()
	select {
	case err := <-done:
		require.Error(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the rotation run did not return")
	}
	require.EqualValues(t, 1, w.calls.Load(), "the hanging webhook was called")
	require.NotEqual(t, first, e.tokenOf(t, "g"), "the credential after the hanging one was rotated")
	read := e.mustRequest(t, logical.ReadOperation, "creds/slow/rotation", nil)
	require.Equal(t, 1, read.Data["failures"], "the hanging rotation is recorded as failed (with backoff)")
}

// TestHangingFlowPollDoesNotBlockTheOthers (issue 12 item 11): within the
// flows task, a device flow whose token endpoint hangs uses up its own
// budget only; the next flow is polled (and completes) in the same run.
func TestHangingFlowPollDoesNotBlockTheOthers(t *testing.T) {
	e := newTestBackend(t)
	e.b.itemBudget = 300 * time.Millisecond
	d := newDeviceServer(t, "600", "3600")
	ids := []string{d.start(t, e, "one")["flow_id"].(string), d.start(t, e, "two")["flow_id"].(string)}
	listed, err := e.storage.List(context.Background(), flowPrefix)
	require.NoError(t, err)
	require.ElementsMatch(t, ids, listed)
	first, err := loadFlow(context.Background(), e.storage, listed[0]) // the run tends it first
	require.NoError(t, err)
	d.hang.Store(first.DeviceCode)
	e.clock.Advance(defaultDeviceInterval * time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.b.periodicFlows(ctx, ctxStorage{e.storage}) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the flows run did not return")
	}
	// Read from storage: a flows/ read would poll itself.
	for i, want := range []string{flowPending, flowCompleted} {
		f, err := loadFlow(context.Background(), e.storage, listed[i])
		require.NoError(t, err)
		require.Equal(t, want, f.Status, "flow %d (the first one's poll hangs)", i+1)
	}
}
