package nebula

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"
)

// The notification outbox: on a node that may write, every event is
// stored under notify/outbox/<time>-<run>-<seq> before it is queued and
// deleted once delivered or given up, so what a stop or a crash leaves
// undelivered is sent by the next start (see notify.go).

// queuedEvent is an event in the queue and the outbox key it is stored
// under ("" when it is not stored).
type queuedEvent struct {
	notifyEvent
	key string
}

// outboxKey is the storage key of an outbox entry: in lexical order, the
// order the events were stored in (time, then the run's sequence).
func outboxKey(unixNano int64, run string, seq uint64) string {
	return fmt.Sprintf("%s%020d-%s-%010d", notifyOutboxPrefix, unixNano, run, seq)
}

// storeNotification puts ev in the outbox and answers its key, or "" when
// this node cannot write or the write failed (logged; the event is then
// only queued).
func (b *backend) storeNotification(ctx context.Context, s logical.Storage, ev notifyEvent) string {
	if s == nil || !b.writable() {
		return ""
	}
	n := &b.notifier
	key := outboxKey(b.now().UnixNano(), n.run, n.seq.Add(1))
	entry, err := jsonEntry(key, ev, true)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyStorageTimeout)
		defer cancel()
		err = s.Put(ctx, entry)
	}
	if err != nil {
		b.logger.Warn("could not store a notification; it is only queued", "event", ev.Event, "credential", ev.Credential, "error", err)
		return ""
	}
	return key
}

// forgetNotification deletes a delivered or given-up event from the
// outbox. A failed delete (logged) means it is sent again by a later start.
func (b *backend) forgetNotification(s logical.Storage, key string) {
	if key == "" || s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), notifyStorageTimeout)
	defer cancel()
	if err := s.Delete(ctx, key); err != nil {
		b.logger.Warn("could not delete a sent notification; it may be sent again", "error", err)
	}
}

// resumeNotifications queues the events earlier runs left in the outbox,
// oldest first, on a node that may write (a standby leaves them to the
// active node). Beyond the queue's size the oldest are deleted and counted
// as dropped. Failures are logged; what was not queued stays stored.
func (b *backend) resumeNotifications(s logical.Storage) {
	if !b.writable() {
		return
	}
	n := &b.notifier
	ctx, cancel := context.WithTimeout(context.Background(), notifyStorageTimeout)
	defer cancel()
	keys, err := s.List(ctx, notifyOutboxPrefix)
	if err != nil {
		b.logger.Warn("could not list undelivered notifications", "error", err)
		return
	}
	own := "-" + n.run + "-"
	keys = slices.DeleteFunc(keys, func(k string) bool { return strings.Contains(k, own) })
	slices.Sort(keys)
	if over := len(keys) - (cap(n.queue) - len(n.queue)); over > 0 {
		for _, k := range keys[:over] {
			b.forgetNotification(s, notifyOutboxPrefix+k)
		}
		n.dropped.Add(int64(over))
		b.logger.Warn("too many undelivered notifications; the oldest are dropped", "events", over)
		keys = keys[over:]
	}
	resumed := 0
	for _, k := range keys {
		ev, err := loadNotification(ctx, s, notifyOutboxPrefix+k)
		var undecodable *undecodableError
		switch {
		case errors.As(err, &undecodable):
			b.logger.Warn("dropping an undecodable undelivered notification", "error", err)
			b.forgetNotification(s, notifyOutboxPrefix+k)
			n.dropped.Add(1)
			continue
		case err != nil:
			b.logger.Warn("could not read an undelivered notification", "error", err)
			continue
		case ev == nil:
			continue
		}
		select {
		case n.queue <- *ev:
			resumed++
		default: // filled meanwhile: it stays stored for a later start
		}
	}
	if resumed > 0 {
		b.logger.Info("resuming undelivered notifications", "events", resumed)
	}
}

// undecodableError is an outbox entry that is not an event: it is deleted
// rather than read again at every start.
type undecodableError struct{ err error }

func (e *undecodableError) Error() string { return "decoding: " + e.err.Error() }
func (e *undecodableError) Unwrap() error { return e.err }

// loadNotification reads one outbox entry; nil when it is gone.
func loadNotification(ctx context.Context, s logical.Storage, key string) (*queuedEvent, error) {
	entry, err := s.Get(ctx, key)
	if err != nil || entry == nil {
		return nil, err
	}
	ev := queuedEvent{key: key}
	if err := entry.DecodeJSON(&ev.notifyEvent); err != nil {
		return nil, &undecodableError{err}
	}
	return &ev, nil
}
