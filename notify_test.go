package nebula

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

const testNotifySecret = "notify-secret-0123456789"

// receivedEvent is one notification as a receiver verified it.
type receivedEvent struct {
	notifyEvent
	verified bool
}

// notifyReceiver is a loopback notification receiver that checks each
// signature as a receiver would: HMAC-SHA256(secret, timestamp "." body).
type notifyReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	events []receivedEvent
	got    chan struct{}
	status int // answer; 0 means 200
}

func startNotifyReceiver(tb testing.TB, secret string) *notifyReceiver {
	tb.Helper()
	n := &notifyReceiver{got: make(chan struct{}, 100)}
	n.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts := r.Header.Get("X-Nebula-Timestamp")
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + "."))
		mac.Write(body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		_, tsErr := strconv.ParseInt(ts, 10, 64)
		var ev notifyEvent
		_ = json.Unmarshal(body, &ev)
		n.mu.Lock()
		status := n.status
		if status == 0 {
			n.events = append(n.events, receivedEvent{ev, tsErr == nil && hmac.Equal([]byte(want), []byte(r.Header.Get("X-Nebula-Signature")))})
		}
		n.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
		}
		n.got <- struct{}{}
	}))
	tb.Cleanup(n.Close)
	return n
}

// wait waits for count more deliveries (bounded by testWait).
func (n *notifyReceiver) wait(tb testing.TB, count int) {
	tb.Helper()
	deadline := time.After(testWait)
	for range count {
		select {
		case <-n.got:
		case <-deadline:
			tb.Fatalf("the receiver did not get %d notifications in %s", count, testWait)
		}
	}
}

// answer makes the receiver answer status from now on (0: 200, and
// record the events).
func (n *notifyReceiver) answer(status int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.status = status
}

func (n *notifyReceiver) received() []receivedEvent {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]receivedEvent(nil), n.events...)
}

// withNotifications points e's notifications at a new receiver and starts
// the deliverer.
func withNotifications(tb testing.TB, e *testEnv) *notifyReceiver {
	tb.Helper()
	rcv := startNotifyReceiver(tb, testNotifySecret)
	e.mustRequest(tb, logical.UpdateOperation, "config", map[string]any{
		"insecure_http_hosts": "127.0.0.1", "notify_url": rcv.URL + "/events", "notify_secret": testNotifySecret,
	})
	e.b.notifier.backoff = time.Millisecond
	e.b.startNotifier(e.storage)
	tb.Cleanup(e.b.stopNotifier)
	return rcv
}

func TestNotificationsAreSignedLikeRotationWebhooks(t *testing.T) {
	e := newTestBackend(t)
	rcv := withNotifications(t, e)
	c := &credential{Name: "svc", Type: "oauth2"}
	e.b.notify(t.Context(), e.storage, eventNeedsReconnect, c, "invalid_grant")
	e.b.notify(t.Context(), e.storage, eventRecovered, c, "")
	rcv.wait(t, 2)
	got := rcv.received()
	require.Len(t, got, 2)
	for _, ev := range got {
		require.True(t, ev.verified, "the signature of %s verifies", ev.Event)
		require.Equal(t, "svc", ev.Credential)
		require.Equal(t, "oauth2", ev.Type)
		_, err := time.Parse(time.RFC3339, ev.Time)
		require.NoError(t, err)
	}
	require.Equal(t, eventNeedsReconnect, got[0].Event)
	require.Equal(t, "invalid_grant", got[0].ErrorCode)
	require.Equal(t, eventRecovered, got[1].Event)
	require.Empty(t, got[1].ErrorCode)

	// The same signature as rotation webhooks: signWebhook.
	body := []byte(`{"event":"x"}`)
	mac := hmac.New(sha256.New, []byte(testNotifySecret))
	mac.Write([]byte("1700000000." + string(body)))
	require.Equal(t, "sha256="+hex.EncodeToString(mac.Sum(nil)), signWebhook(testNotifySecret, 1700000000, body))

	waitFor(t, "two deliveries counted", func() bool { return e.b.notifier.sent.Load() == 2 })
	m := e.mustRequest(t, logical.ReadOperation, "metrics", nil)
	require.EqualValues(t, 2, m.Data["notifications_sent"])
}

// waitFor polls cond every few milliseconds until it holds, at most
// testWait.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(testWait)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNotificationQueueIsBoundedAndNeverBlocks(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{
		"notify_url": "https://receiver.example/events", "notify_secret": testNotifySecret,
	})
	// No deliverer runs: the queue fills, then drops.
	c := &credential{Name: "svc", Type: "oauth2"}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range notifyQueueSize + 25 {
			e.b.notify(t.Context(), e.storage, eventRefreshFailed, c, "")
		}
	}()
	select {
	case <-done:
	case <-time.After(testWait):
		t.Fatal("notify blocked on a full queue")
	}
	m := e.mustRequest(t, logical.ReadOperation, "metrics", nil)
	require.EqualValues(t, notifyQueueSize, m.Data["notifications_pending"])
	require.EqualValues(t, 25, m.Data["notifications_dropped"])
}

func TestFailedDeliveriesAreRetriedThenCounted(t *testing.T) {
	e := newTestBackend(t)
	rcv := withNotifications(t, e)
	rcv.answer(http.StatusServiceUnavailable)
	e.b.notify(t.Context(), e.storage, eventRotationFailed, &credential{Name: "svc", Type: "api_key"}, "")
	rcv.wait(t, notifyAttempts)
	waitFor(t, "the failed delivery counted", func() bool { return e.b.notifier.failed.Load() > 0 })
	require.EqualValues(t, 1, e.b.notifier.failed.Load())
	require.Zero(t, e.b.notifier.sent.Load())
}

func TestNotifyConfig(t *testing.T) {
	e := newTestBackend(t)
	_, err := e.request(t, logical.UpdateOperation, "config", map[string]any{"notify_url": "https://r.example/e", "notify_secret": "short"})
	requireKind(t, err, KindInvalidInput, "notify_secret", "at least 16")
	_, err = e.request(t, logical.UpdateOperation, "config", map[string]any{"notify_url": "https://r.example/e"})
	requireKind(t, err, KindInvalidInput, "notify_secret", "required")
	_, err = e.request(t, logical.UpdateOperation, "config", map[string]any{"notify_url": "http://r.example/e", "notify_secret": testNotifySecret})
	requireKind(t, err, KindInvalidInput, "notify_url", "insecure_http_hosts")

	resp := e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"notify_url": "https://r.example/e", "notify_secret": testNotifySecret})
	require.Equal(t, "https://r.example/e", resp.Data["notify_url"])
	require.Equal(t, true, resp.Data["notify_secret_set"])
	read := e.mustRequest(t, logical.ReadOperation, "config", nil)
	raw, _ := json.Marshal(read.Data)
	require.NotContains(t, string(raw), testNotifySecret, "write-only")
	for key, value := range e.storage.snapshot(t) {
		if !e.b.isSealWrapped(key) {
			require.NotContains(t, value, testNotifySecret, "stored unwrapped under %s", key)
		}
	}
	entry, err := e.storage.Get(t.Context(), notifySecretKey)
	require.NoError(t, err)
	require.NotNil(t, entry)
	require.True(t, e.b.isSealWrapped(notifySecretKey))

	// A new URL without the secret would send signed events elsewhere.
	_, err = e.request(t, logical.UpdateOperation, "config", map[string]any{"notify_url": "https://other.example/e"})
	requireKind(t, err, KindInvalidInput, "notify_secret")
	// Other config writes keep notifications as they are.
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"cache_ttl": "10m"})
	read = e.mustRequest(t, logical.ReadOperation, "config", nil)
	require.Equal(t, "https://r.example/e", read.Data["notify_url"])
	// Empty turns them off.
	resp = e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"notify_url": ""})
	require.Equal(t, "", resp.Data["notify_url"])
}

func TestRotationDueIsSentOnceWhenTheWarningPeriodStarts(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{
		"notify_url": "https://receiver.example/events", "notify_secret": testNotifySecret,
	})
	// No deliverer: the queue shows what was sent, deterministically.
	queued := func() []notifyEvent {
		var out []notifyEvent
		for len(e.b.notifier.queue) > 0 {
			ev := <-e.b.notifier.queue
			out = append(out, ev.notifyEvent)
		}
		return out
	}
	e.mustRequest(t, logical.CreateOperation, "creds/g", map[string]any{"type": "generated"})
	e.mustRequest(t, logical.UpdateOperation, "creds/g/rotation", map[string]any{"interval": "1h", "warning_period": "10m"})
	e.clock.Advance(49 * time.Minute)
	e.runPeriodic(t)
	require.Empty(t, queued(), "not in the warning period yet")
	e.clock.Advance(2 * time.Minute)
	e.runPeriodic(t)
	got := queued()
	require.Len(t, got, 1)
	require.Equal(t, notifyEvent{Event: eventRotationDue, Credential: "g", Type: "generated", Time: e.clock.Now().UTC().Format(time.RFC3339)}, got[0])
	e.clock.Advance(time.Minute)
	e.runPeriodic(t)
	require.Empty(t, queued(), "once per rotation")
	e.clock.Advance(8 * time.Minute)
	e.runPeriodic(t) // rotates
	require.Empty(t, queued())
	e.clock.Advance(51 * time.Minute)
	e.runPeriodic(t)
	got = queued()
	require.Len(t, got, 1, "the next rotation's warning period")
	require.Equal(t, eventRotationDue, got[0].Event)
}

// queueUndelivered points e's notifications at a receiver that is down and
// queues events about credential svc; it returns once the first is waiting
// for its next attempt (an hour away) and the others are queued. The
// receiver answers 503 until told otherwise.
func queueUndelivered(tb testing.TB, e *testEnv, events ...string) *notifyReceiver {
	tb.Helper()
	rcv := withNotifications(tb, e)
	rcv.answer(http.StatusServiceUnavailable)
	e.b.notifier.backoff = time.Hour
	c := &credential{Name: "svc", Type: "oauth2"}
	for _, ev := range events {
		e.b.notify(context.Background(), e.storage, ev, c, "")
	}
	rcv.wait(tb, 1)
	waitFor(tb, "the first event under way", func() bool { return len(e.b.notifier.queue) == len(events)-1 })
	return rcv
}

// outbox lists the notification outbox of e's storage.
func outbox(tb testing.TB, e *testEnv) []string {
	tb.Helper()
	keys, err := e.storage.List(context.Background(), notifyOutboxPrefix)
	require.NoError(tb, err)
	return keys
}

// another makes a second backend on e's storage, as the plugin's next
// start does.
func another(tb testing.TB, e *testEnv) *backend {
	tb.Helper()
	conf := logical.TestBackendConfig()
	conf.System = logical.TestSystemView()
	conf.StorageView = e.storage
	started, err := Factory(context.Background(), conf)
	require.NoError(tb, err)
	return started.(*vaultBackend).backend
}

// startAgain starts another backend's notifier, with a short backoff.
func startAgain(tb testing.TB, e *testEnv) *backend {
	tb.Helper()
	next := another(tb, e)
	next.notifier.backoff = time.Millisecond
	next.startNotifier(e.storage)
	tb.Cleanup(next.stopNotifier)
	return next
}

// requireResent checks that the receiver got events from the svc
// credential, in order and signed, that next counted them as sent and that
// the outbox is empty afterwards.
func requireResent(tb testing.TB, e *testEnv, rcv *notifyReceiver, next *backend, events []string) {
	tb.Helper()
	rcv.wait(tb, len(events))
	got := rcv.received()
	require.Len(tb, got, len(events))
	for i, ev := range got {
		require.Equal(tb, events[i], ev.Event, "in the order they were queued")
		require.Equal(tb, "svc", ev.Credential)
		require.True(tb, ev.verified, "signed")
	}
	waitFor(tb, "the deliveries counted", func() bool { return next.notifier.sent.Load() == int64(len(events)) })
	waitFor(tb, "the outbox emptied", func() bool { return len(outbox(tb, e)) == 0 })
}

// TestUndeliveredNotificationsSurviveARestart: when the plugin stops
// (Clean: a reload or upgrade), the event under way and the queued ones
// stay in the outbox, and the next start on the same storage sends them,
// in order and signed; none is counted as failed or dropped.
func TestUndeliveredNotificationsSurviveARestart(t *testing.T) {
	e := newTestBackend(t)
	events := []string{eventNeedsReconnect, eventRefreshFailed, eventRotationFailed}
	rcv := queueUndelivered(t, e, events...)

	e.b.stopNotifier() // what Clean does
	require.Zero(t, len(e.b.notifier.queue))
	require.Len(t, outbox(t, e), len(events), "the undelivered events are stored")
	require.Zero(t, e.b.notifier.failed.Load())
	require.Zero(t, e.b.notifier.dropped.Load())
	require.Empty(t, rcv.received())

	rcv.answer(0) // the receiver is up when the plugin starts again
	requireResent(t, e, rcv, startAgain(t, e), events)
}

// TestUndeliveredNotificationsSurviveACrash: the plugin process dies
// without Clean (a crash, an OOM kill, a node that lost leadership and
// never ran Clean): the events are stored as they are queued, so the next
// start sends them all. Before the outbox, a clean stop saved them and a
// crash lost them.
func TestUndeliveredNotificationsSurviveACrash(t *testing.T) {
	e := newTestBackend(t)
	events := []string{eventNeedsReconnect, eventRefreshFailed, eventRecovered}
	rcv := queueUndelivered(t, e, events...)
	require.Len(t, outbox(t, e), len(events), "stored while queued")

	// No stopNotifier: the first backend is simply never heard of again
	// (its deliverer waits an hour before its next attempt).
	rcv.answer(0)
	next := startAgain(t, e)
	requireResent(t, e, rcv, next, events)
	require.Zero(t, next.notifier.dropped.Load())
}

// TestResumedNotificationsAreBounded: a start queues at most the queue's
// size from the outbox, the newest; the older ones are deleted and counted
// as dropped.
func TestResumedNotificationsAreBounded(t *testing.T) {
	e := newTestBackend(t)
	withNotifications(t, e)
	for i := range notifyQueueSize + 5 {
		key := outboxKey(int64(i), "EARLIER", uint64(i))
		entry, err := jsonEntry(key, notifyEvent{Event: eventRefreshFailed, Credential: fmt.Sprintf("c%d", i), Type: "oauth2"}, true)
		require.NoError(t, err)
		require.NoError(t, e.storage.Put(t.Context(), entry))
	}
	next := another(t, e)
	next.resumeNotifications(e.storage) // queues without a deliverer
	require.Equal(t, notifyQueueSize, len(next.notifier.queue))
	require.EqualValues(t, 5, next.notifier.dropped.Load())
	first := <-next.notifier.queue
	require.Equal(t, "c5", first.Credential, "the oldest five are dropped")
	require.Len(t, outbox(t, e), notifyQueueSize)
}

// TestNotificationsOnAStandbyAreNotStored: a node that cannot write only
// queues its events; when it stops they are lost, counted as dropped and
// logged, and nothing is stored.
func TestNotificationsOnAStandbyAreNotStored(t *testing.T) {
	e := newTestBackend(t)
	e.sys.ReplicationStateVal = consts.ReplicationPerformanceStandby
	queueUndelivered(t, e, eventNeedsReconnect, eventRecovered)
	require.Empty(t, outbox(t, e))
	e.b.stopNotifier()
	require.EqualValues(t, 2, e.b.notifier.dropped.Load())
	require.Empty(t, outbox(t, e))
}

// TestNotificationsQueuedUnstoredAreStoredAtStop: events queued while the
// node could not write are stored when it stops cleanly and may write
// again, and the next start sends them.
func TestNotificationsQueuedUnstoredAreStoredAtStop(t *testing.T) {
	e := newTestBackend(t)
	e.sys.ReplicationStateVal = consts.ReplicationPerformanceStandby
	rcv := queueUndelivered(t, e, eventNeedsReconnect, eventRecovered, eventRotationFailed)
	require.Empty(t, outbox(t, e))
	e.sys.ReplicationStateVal = 0 // it may write again when it stops
	e.b.stopNotifier()
	require.Zero(t, e.b.notifier.dropped.Load())
	require.Len(t, outbox(t, e), 3)
	rcv.answer(0)
	requireResent(t, e, rcv, startAgain(t, e), []string{eventNeedsReconnect, eventRecovered, eventRotationFailed})
}

// TestAStartDoesNotQueueItsOwnEventsTwice: the outbox a start resumes is
// what earlier runs left; events this backend stored and queued itself
// (before its deliverer started) are not queued a second time.
func TestAStartDoesNotQueueItsOwnEventsTwice(t *testing.T) {
	e := newTestBackend(t)
	withNotifications(t, e)
	e.b.stopNotifier()
	c := &credential{Name: "svc", Type: "oauth2"}
	e.b.notify(t.Context(), e.storage, eventNeedsReconnect, c, "invalid_grant")
	e.b.notify(t.Context(), e.storage, eventRecovered, c, "")
	require.Len(t, outbox(t, e), 2)
	require.Equal(t, 2, len(e.b.notifier.queue))
	e.b.resumeNotifications(e.storage)
	require.Equal(t, 2, len(e.b.notifier.queue))
	// Another backend on the same storage does resume them.
	next := another(t, e)
	next.resumeNotifications(e.storage)
	require.Equal(t, 2, len(next.notifier.queue))
}

// TestUndecodableOutboxEntriesAreDropped: an outbox entry that is not an
// event is deleted and counted at the start, not read again at every one;
// the events around it are queued.
func TestUndecodableOutboxEntriesAreDropped(t *testing.T) {
	e := newTestBackend(t)
	for i, value := range []string{
		`{"event":"refresh_failed","credential":"a","type":"oauth2"}`,
		`not json`,
		`{"event":"recovered","credential":"b","type":"oauth2"}`,
	} {
		key := outboxKey(int64(i+1), "EARLIER", uint64(i+1))
		require.NoError(t, e.storage.Put(t.Context(), &logical.StorageEntry{Key: key, Value: []byte(value)}))
	}
	next := another(t, e)
	next.resumeNotifications(e.storage)
	require.Equal(t, 2, len(next.notifier.queue))
	require.EqualValues(t, 1, next.notifier.dropped.Load())
	require.Len(t, outbox(t, e), 2, "the undecodable entry is deleted")
	first, second := <-next.notifier.queue, <-next.notifier.queue
	require.Equal(t, []string{"a", "b"}, []string{first.Credential, second.Credential})
}
