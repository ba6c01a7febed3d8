package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"time"
)

// DefaultRetryBackoff is the first wait of WithRetry when it is given a
// backoff of zero or less.
const DefaultRetryBackoff = 250 * time.Millisecond

// maxRetryWait bounds one wait between attempts (unless the backoff given
// is longer).
const maxRetryWait = 30 * time.Second

// retryPolicy is what WithRetry sets.
type retryPolicy struct {
	attempts int           // requests per call, the first included
	backoff  time.Duration // the first wait
}

// replay says whether a request may be sent again after a failure that
// may have reached the engine.
type replay bool

const (
	// replayable requests leave the same state however often they run:
	// reads, lists, deletes, writes that set the values given, creates
	// with an idempotency key.
	replayable replay = true
	// once requests act each time they reach the engine (rotate, refresh,
	// completing a flow, creates without an idempotency key): retried only
	// when the failure shows that the engine did not see them.
	once replay = false
)

// replayIf answers replayable when ok.
func replayIf(ok bool) replay {
	if ok {
		return replayable
	}
	return once
}

// WithRetry makes the client send a request up to attempts times (the
// first included) while it fails in a way worth trying again, waiting
// backoff before the second attempt and twice as long before each next one
// (at most 30 seconds unless backoff is longer; each wait is cut by up to
// half at random so that many clients do not retry in step). A backoff of
// zero or less means DefaultRetryBackoff. Retries stop when ctx ends; the
// error then wraps both the last failure and ctx.Err().
//
// What is retried:
//   - Answers whose Error.Retryable is true: unavailable (503: Vault sealed
//     or without an active node, or a provider's transient failure during
//     a flow), storage_error (500) and rate limits (429, Vault's quotas).
//   - Transport failures: connection refused, reset or closed, and
//     timeouts.
//
// Never retried: refresh_failed and rotation_failed (502: a retry would
// call the credential's provider again), every other 4xx and 5xx, and
// problems the client finds before sending.
//
// Requests that act each time they run are retried only when the failure
// shows that the engine did not see them: the connection could not be
// made, Vault's rate limit (429) or Vault's own 503 (sealed, standby; no
// engine code). These are Rotate, Refresh, RefreshDue, CompleteFlow (a
// code works once), and Create, Update and BatchCreate unless every
// credential they write has an IdempotencyKey (the engine answers a
// repeated write with the same key and input with the first one's id and
// changes nothing; keys are unique in the mount, so use one per
// credential). Everything else is retried on every retryable failure:
// reads (GetToken included, with or without a caller context), deletes,
// BatchDelete, writes of configuration, providers, rotation policies and
// mirror targets, ExportAudit, and StartFlow (a repeated start makes
// another pending flow; one whose answer was lost expires unused). A
// repeated BatchDelete reports Deleted false for the credentials a lost
// attempt deleted.
//
// Set the Vault client's own retries to zero (vc.SetMaxRetries(0);
// NewFromEnv does) or both policies apply.
func WithRetry(attempts int, backoff time.Duration) Option {
	return func(c *Client) {
		if backoff <= 0 {
			backoff = DefaultRetryBackoff
		}
		c.retry = retryPolicy{attempts: attempts, backoff: backoff}
	}
}

// Retryable reports whether the failure is worth trying again as it is:
// unavailable (503), storage_error (500) and rate limits (429). It is false
// for refresh_failed and rotation_failed (a retry calls the provider
// again), for the other 4xx kinds and for problems the client found before
// sending. Per-item errors of batches and refresh runs answer it too.
func (e *Error) Retryable() bool {
	switch {
	case e.Kind == Unavailable, e.Kind == Storage:
		return true
	default:
		return e.Status == http.StatusTooManyRequests
	}
}

// withRetry runs call, again while it fails in a way the policy retries
// for a request r says it is.
func (c *Client) withRetry(ctx context.Context, r replay, call func() error) error {
	wait := c.retry.backoff
	for attempt := 1; ; attempt++ {
		err := call()
		if err == nil || attempt >= c.retry.attempts || ctx.Err() != nil || !shouldRetry(err, r) {
			return err
		}
		t := time.NewTimer(jitter(min(wait, max(maxRetryWait, c.retry.backoff))))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (retries stopped: %w)", err, ctx.Err())
		case <-t.C:
		}
		if wait < maxRetryWait {
			wait *= 2
		}
	}
}

// jitter answers a random duration between d/2 and d.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// shouldRetry reports whether a request r says it is may be sent again
// after err.
func shouldRetry(err error, r replay) bool {
	var e *Error
	if errors.As(err, &e) {
		switch {
		case e.Status == 0: // found by the client before sending
			return false
		case r == replayable:
			return e.Retryable()
		default:
			// Answers of Vault itself, before the request reached the
			// engine.
			return e.Status == http.StatusTooManyRequests || (e.Kind == Unavailable && e.Code == "")
		}
	}
	return notSent(err) || (r == replayable && transient(err))
}

// notSent reports whether err shows that the request did not leave the
// client: the connection could not be made.
func notSent(err error) bool {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns.IsTemporary || dns.IsTimeout
	}
	var op *net.OpError
	return errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &op) && op.Op == "dial")
}

// transient reports whether err is a transport failure after the request
// may have been sent: a reset or closed connection, a timeout.
func transient(err error) bool {
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
