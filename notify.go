package nebula

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
)

// Notifications. With config notify_url and notify_secret set, the engine
// POSTs a JSON event to notify_url when something about a credential needs
// a person:
//
//	{"event": "needs_reconnect", "credential": "<name>", "type": "oauth2",
//	 "time": "<RFC 3339>", "error_code": "invalid_grant"}
//
// signed like rotation webhooks: X-Nebula-Timestamp (unix seconds) and
// X-Nebula-Signature: "sha256=" + hex(HMAC-SHA256(notify_secret,
// timestamp + "." + body)). The body never holds a secret or an upstream
// answer. Events are delivered off the request path, from a bounded
// in-memory queue, by one goroutine with retries and backoff; a full queue
// drops the event (counted), so a dead receiver never blocks anything.
// On a node that may write, each event is also stored in an outbox
// (notify/outbox/) before it is queued and deleted once delivered or given
// up; the next start of the plugin (a reload, an upgrade, a restart after
// a crash, or the new active node after a failover) sends what is still
// stored, in order. Delivery is at least once: an event under way when the
// plugin stops may arrive twice.

// Notification events.
const (
	eventNeedsReconnect = "needs_reconnect"
	eventRefreshFailed  = "refresh_failed"
	eventRecovered      = "recovered"
	eventRotationFailed = "rotation_failed"
	eventRotationDue    = "rotation_due"
)

// Notification limits.
const (
	notifyQueueSize = 1000
	notifyAttempts  = 4
	notifyBackoff   = time.Second
	// notifySecretKey holds the notify_secret, seal-wrapped (its prefix
	// is in SealWrapStorage); config itself is not seal-wrapped.
	notifySecretKey = notifyPrefix + "secret"
	notifyPrefix    = "notify/"
	// notifyOutboxPrefix holds one entry per event not yet delivered or
	// given up, keyed so that their order is the order they were queued.
	notifyOutboxPrefix = notifyPrefix + "outbox/"
	// notifyStorageTimeout bounds storing, deleting and loading them.
	notifyStorageTimeout = 5 * time.Second
)

// notifyEvent is the body of a notification.
type notifyEvent struct {
	Event      string `json:"event"`
	Credential string `json:"credential"`
	Type       string `json:"type"`
	Time       string `json:"time"`
	ErrorCode  string `json:"error_code,omitempty"`
}

// notifier queues and delivers notifications; its counters feed metrics.
type notifier struct {
	queue chan queuedEvent

	// run tells this backend's outbox entries from those of earlier runs,
	// which a start resumes; seq orders entries stored in the same
	// instant.
	run string
	seq atomic.Uint64

	sent, failed, dropped atomic.Int64
	// deadGrants counts credentials marked needs_reconnect.
	deadGrants atomic.Int64

	// attempts and backoff of one delivery (tests shorten backoff).
	attempts int
	backoff  time.Duration

	mu      sync.Mutex
	cancel  context.CancelFunc // guarded by mu; nil when no deliverer runs
	done    chan struct{}      // guarded by mu
	storage logical.Storage    // guarded by mu; the running deliverer's
	// unfinished is the event the deliverer was sending when it was
	// stopped; written by the deliverer, read after it has exited.
	unfinished *queuedEvent

	secretMu     sync.Mutex
	secret       string // guarded by secretMu
	secretLoaded bool   // guarded by secretMu
}

func (n *notifier) init() {
	n.queue = make(chan queuedEvent, notifyQueueSize)
	n.attempts, n.backoff = notifyAttempts, notifyBackoff
	n.run = rand.Text()
}

// enqueue adds an event without ever blocking: a full queue drops it.
func (n *notifier) enqueue(ev queuedEvent) bool {
	select {
	case n.queue <- ev:
		return true
	default:
		n.dropped.Add(1)
		return false
	}
}

// full reports whether the queue has no room (a hint: it may change).
func (n *notifier) full() bool { return len(n.queue) == cap(n.queue) }

func (n *notifier) forgetSecret() {
	n.secretMu.Lock()
	n.secret, n.secretLoaded = "", false
	n.secretMu.Unlock()
}

// notify queues an event about c when notifications are configured. It
// never blocks and never fails the caller.
func (b *backend) notify(ctx context.Context, s logical.Storage, event string, c *credential, errorCode string) {
	cfg, err := b.getConfig(ctx, s)
	if err != nil || cfg.NotifyURL == "" {
		return
	}
	ev := queuedEvent{notifyEvent: notifyEvent{Event: event, Credential: c.Name, Type: c.Type, Time: b.now().UTC().Format(time.RFC3339), ErrorCode: upstream.SafeCode(errorCode)}}
	n := &b.notifier
	if !n.full() { // a full queue drops the event: no storage write for it
		ev.key = b.storeNotification(ctx, s, ev.notifyEvent)
	}
	if n.enqueue(ev) {
		return
	}
	b.forgetNotification(s, ev.key)
	b.logger.Warn("notification queue is full; event dropped", "event", event, "credential", c.Name)
}

// startNotifier starts the deliverer (InitializeFunc); it runs until
// stopNotifier. On a node that may write it first queues the events
// earlier runs left in the outbox.
func (b *backend) startNotifier(s logical.Storage) {
	n := &b.notifier
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cancel != nil || s == nil {
		return
	}
	b.resumeNotifications(s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	n.cancel, n.done, n.storage, n.unfinished = cancel, done, s, nil
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-n.queue:
				if !b.deliver(ctx, s, ev.notifyEvent) {
					n.unfinished = &ev
					return
				}
				b.forgetNotification(s, ev.key)
			}
		}
	}()
}

// stopNotifier stops the deliverer (Clean). The events it had not
// delivered (the one under way and the queued ones) stay in the outbox for
// the next start; those that are not stored (queued when storage could not
// be written) are stored now when this node may write, else they are lost
// and counted as dropped.
func (b *backend) stopNotifier() {
	n := &b.notifier
	n.mu.Lock()
	cancel, done, s := n.cancel, n.done, n.storage
	n.cancel, n.done, n.storage = nil, nil, nil
	n.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	var unstored []queuedEvent
	if ev := n.unfinished; ev != nil && ev.key == "" {
		unstored = append(unstored, *ev)
	}
	n.unfinished = nil
	for drained := false; !drained; {
		select {
		case ev := <-n.queue:
			if ev.key == "" {
				unstored = append(unstored, ev)
			}
		default:
			drained = true
		}
	}
	lost := 0
	for _, ev := range unstored {
		if b.storeNotification(context.Background(), s, ev.notifyEvent) == "" {
			lost++
		}
	}
	if lost > 0 {
		n.dropped.Add(int64(lost))
		b.logger.Warn("undelivered notifications are lost", "events", lost)
	}
}

// deliver POSTs one event, retrying failures (no answer, 5xx, 429) with
// backoff; a failed delivery is counted and logged without the body. It
// answers false when the deliverer was stopped before the event was
// delivered or given up (the caller saves it).
func (b *backend) deliver(ctx context.Context, s logical.Storage, ev notifyEvent) bool {
	n := &b.notifier
	cfg, err := b.getConfig(ctx, s)
	if err != nil || cfg.NotifyURL == "" {
		return ctx.Err() == nil // turned off meanwhile
	}
	secret, err := b.notifySecret(ctx, s)
	if err != nil || secret == "" {
		n.failed.Add(1)
		b.logger.Warn("notification not sent: no notify_secret could be read", "event", ev.Event, "credential", ev.Credential)
		return true
	}
	body, err := json.Marshal(ev)
	if err != nil {
		n.failed.Add(1)
		return true
	}
	wait := n.backoff
	var last error
	for attempt := 1; attempt <= max(n.attempts, 1); attempt++ {
		retry, err := b.postNotification(ctx, cfg, secret, body)
		if err == nil {
			n.sent.Add(1)
			return true
		}
		last = err
		if !retry || attempt == n.attempts {
			break
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait *= 2
	}
	if ctx.Err() != nil {
		return false // stopped during the last attempt
	}
	n.failed.Add(1)
	b.logger.Warn("notification could not be delivered", "event", ev.Event, "credential", ev.Credential, "error", last)
	return true
}

// postNotification makes one delivery attempt; retry says whether a later
// attempt may succeed.
func (b *backend) postNotification(ctx context.Context, cfg *Config, secret string, body []byte) (retry bool, err error) {
	if err := upstream.CheckURL(cfg.HostAllowed, cfg.NotifyURL); err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.webhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.NotifyURL, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("invalid notify_url")
	}
	now := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Nebula-Timestamp", strconv.FormatInt(now, 10))
	req.Header.Set("X-Nebula-Signature", signWebhook(secret, now, body))
	resp, err := b.upstream(cfg).HTTPClient().Do(req)
	if err != nil {
		return true, fmt.Errorf("notify_url unreachable")
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return true, fmt.Errorf("notify_url answered %d", resp.StatusCode)
	}
	return false, fmt.Errorf("notify_url answered %d", resp.StatusCode)
}

// notifySecretEntry is the stored notify_secret.
type notifySecretEntry struct {
	Secret string `json:"secret"`
}

// notifySecret returns the notify_secret, from memory once read.
func (b *backend) notifySecret(ctx context.Context, s logical.Storage) (string, error) {
	n := &b.notifier
	n.secretMu.Lock()
	defer n.secretMu.Unlock()
	if n.secretLoaded {
		return n.secret, nil
	}
	entry, err := s.Get(ctx, notifySecretKey)
	if err != nil {
		return "", storageError("reading the notify secret", err)
	}
	var ns notifySecretEntry
	if entry != nil {
		if err := entry.DecodeJSON(&ns); err != nil {
			return "", storageError("decoding the notify secret", err)
		}
	}
	n.secret, n.secretLoaded = ns.Secret, true
	return ns.Secret, nil
}

// notifyConfigInput applies a config write's notify_url and notify_secret
// to next (current is the stored config): notify_url must be allowed by
// the host policy (https, or a host in insecure_http_hosts), needs a
// notify_secret of at least minSigningSecret characters (stored
// seal-wrapped, apart from config), and a changed notify_url needs the
// secret in the same write, so signed events never go to a new address
// under the old key. An empty notify_url turns notifications off.
func (b *backend) notifyConfigInput(ctx context.Context, s logical.Storage, current, next *Config, d *framework.FieldData) error {
	rawURL, urlSet := d.GetOk("notify_url")
	rawSecret, secretSet := d.GetOk("notify_secret")
	if !urlSet && !secretSet {
		return nil
	}
	if urlSet {
		next.NotifyURL = rawURL.(string)
	}
	secret := ""
	if secretSet {
		secret = rawSecret.(string)
		if n := utf8.RuneCountInString(secret); n < minSigningSecret {
			return newError(KindInvalidInput, "field \"notify_secret\" is %d characters long; it must be at least %d", n, minSigningSecret)
		}
	}
	if next.NotifyURL != "" {
		if err := upstream.CheckURL(next.HostAllowed, next.NotifyURL); err != nil {
			return newError(KindInvalidInput, "field \"notify_url\": %v", err)
		}
		if next.NotifyURL != current.NotifyURL && !secretSet {
			return newError(KindInvalidInput, "field \"notify_secret\" is required when notify_url changes")
		}
	}
	if !secretSet {
		return nil
	}
	entry, err := jsonEntry(notifySecretKey, notifySecretEntry{Secret: secret}, true)
	if err != nil {
		return fmt.Errorf("encoding the notify secret: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return storageError("storing the notify secret", err)
	}
	b.notifier.forgetSecret()
	next.NotifySecretSet = true
	return nil
}

// addNotifyMetrics adds the notification and dead-grant counters to a
// metrics read.
func (b *backend) addNotifyMetrics(data map[string]any) {
	n := &b.notifier
	data["notifications_sent"] = n.sent.Load()
	data["notifications_failed"] = n.failed.Load()
	data["notifications_dropped"] = n.dropped.Load()
	data["notifications_pending"] = len(n.queue)
	data["needs_reconnect_marked"] = n.deadGrants.Load()
}

// warningStart is when the warning period of the next rotation begins, if
// no rotation_due notification was sent for that rotation yet; zero when
// there is nothing to send (no rotation, no warning period, or sent).
func (c *credential) warningStart() time.Time {
	next := c.nextRotation()
	if next.IsZero() || c.Rotation.WarningPeriod <= 0 || c.RotationState.WarnedFor.Equal(next) {
		return time.Time{}
	}
	return next.Add(-c.Rotation.WarningPeriod)
}

// noteRotationDue sends rotation_due once per rotation, when the scheduler
// finds c inside the warning period (nextWork wakes it at warningStart).
// The caller holds c's lock and stores c (reschedule).
func (b *backend) noteRotationDue(ctx context.Context, s logical.Storage, c *credential, now time.Time) {
	start := c.warningStart()
	if start.IsZero() || now.Before(start) || !now.Before(c.nextRotation()) {
		return // not yet, or overdue: rotation_failed tells about that
	}
	c.RotationState.WarnedFor = c.nextRotation()
	b.notify(ctx, s, eventRotationDue, c, "")
}
