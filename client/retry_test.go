package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/nebula-credential/nebula-credential/client"
)

// testBackoff keeps the tests' waits short.
const testBackoff = time.Millisecond

// failThenOK answers the first failures requests with fail, the next ones
// with ok.
func failThenOK(failures int, fail, ok loopAnswer) func(int, loopRequest) loopAnswer {
	return func(n int, _ loopRequest) loopAnswer {
		if n <= failures {
			return fail
		}
		return ok
	}
}

var credentialOK = vaultData(map[string]any{"id": "3f2c", "name": "x", "type": "api_key", "version": 1})

// TestRetry: with WithRetry, a read answered 503 then 200 succeeds on the
// second attempt; the retryable kinds (unavailable, storage_error, rate
// limits) are retried, refresh_failed, rotation_failed and 4xx kinds are
// not, and attempts are bounded.
func TestRetry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		fail     loopAnswer
		attempts int // requests the server sees
		kind     client.Kind
	}{
		{"unavailable", vaultError(503, "unavailable: device authorization endpoint: answered 503"), 2, 0},
		{"sealed", vaultError(503, "Vault is sealed"), 2, 0},
		{"storage_error", vaultError(500, "storage_error: reading credential: storage unavailable"), 2, 0},
		{"rate limit", vaultError(429, "request path \"nebula/creds/x\": rate limit quota exceeded"), 2, 0},
		{"refresh_failed", vaultError(502, "refresh_failed: token endpoint answered invalid_grant"), 1, client.RefreshFailed},
		{"rotation_failed", vaultError(502, "rotation_failed: the rotation webhook answered 500"), 1, client.RotationFailed},
		{"not_found", vaultError(404, "not_found: credential \"x\" does not exist"), 1, client.NotFound},
		{"invalid_input", vaultError(400, "invalid_input: name is invalid"), 1, client.InvalidInput},
		{"permission denied", vaultError(403, "permission denied"), 1, client.AccessDenied},
		{"rotation_in_progress", vaultError(409, "rotation_in_progress: credential \"x\" is being rotated"), 1, client.RotationInProgress},
		{"proxy page", loopAnswer{502, "<html>Bad Gateway</html>"}, 1, client.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lv := newLoopVault(t, failThenOK(1, tt.fail, credentialOK))
			cred, err := lv.client(t, client.WithRetry(5, testBackoff)).Get(testContext(t), "x")
			if got := len(lv.Requests()); got != tt.attempts {
				t.Errorf("the server saw %d requests, want %d", got, tt.attempts)
			}
			if tt.attempts > 1 {
				if err != nil || cred.ID != "3f2c" {
					t.Errorf("Get after one %s = %+v, %v; want the credential", tt.name, cred, err)
				}
				return
			}
			if client.ErrorKind(err) != tt.kind {
				t.Errorf("Get = %v; want %v", err, tt.kind)
			}
		})
	}

	t.Run("bounded", func(t *testing.T) {
		t.Parallel()
		lv := newLoopVault(t, failThenOK(100, vaultError(503, "Vault is sealed"), credentialOK))
		_, err := lv.client(t, client.WithRetry(3, testBackoff)).Get(testContext(t), "x")
		requireKindCode(t, err, client.Unavailable, client.ErrUnavailable, "")
		if got := len(lv.Requests()); got != 3 {
			t.Errorf("3 attempts made %d requests", got)
		}
	})
	t.Run("off by default", func(t *testing.T) {
		t.Parallel()
		lv := newLoopVault(t, failThenOK(1, vaultError(503, "Vault is sealed"), credentialOK))
		_, err := lv.client(t).Get(testContext(t), "x")
		requireKindCode(t, err, client.Unavailable, client.ErrUnavailable, "")
		if got := len(lv.Requests()); got != 1 {
			t.Errorf("a client without WithRetry made %d requests", got)
		}
	})
}

// TestRetryWrites: writes that act each time they run (rotate, refresh,
// completing a flow, creates without an idempotency key) are retried only
// on answers that show the engine did not see them (Vault's own 503, 429);
// creates with an idempotency key and other replayable writes (rotation
// policies, starting a flow) on every retryable failure.
func TestRetryWrites(t *testing.T) {
	t.Parallel()
	engine503 := vaultError(503, "unavailable: the authorization server did not accept the code")
	storage := vaultError(500, "storage_error: writing credential: cannot write")
	sealed := vaultError(503, "Vault is sealed")
	quota := vaultError(429, "rate limit quota exceeded")
	rotated := vaultData(map[string]any{"id": "b", "previous_id": "a", "version": 2})
	token := vaultData(map[string]any{"access_token": "retry-SECRET", "token_type": "Bearer", "version": 1})
	create := func(key string) func(context.Context, *client.Client) error {
		return func(ctx context.Context, c *client.Client) error {
			_, err := c.Create(ctx, "x", client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret("retry-SECRET")}, IdempotencyKey: key})
			return err
		}
	}
	rotate := func(ctx context.Context, c *client.Client) error { _, err := c.Rotate(ctx, "x", nil); return err }
	refresh := func(ctx context.Context, c *client.Client) error { _, err := c.Refresh(ctx, "x"); return err }
	batch := func(key string) func(context.Context, *client.Client) error {
		return func(ctx context.Context, c *client.Client) error {
			items := plainBatchItems("retry", 3)
			for i := range items {
				if key != "" {
					items[i].IdempotencyKey = key + "/" + items[i].Name
				}
			}
			_, err := c.BatchCreate(ctx, items)
			return err
		}
	}
	setPolicy := func(ctx context.Context, c *client.Client) error {
		_, err := c.SetRotationPolicy(ctx, "x", client.RotationPolicy{Interval: time.Hour})
		return err
	}
	startFlow := func(ctx context.Context, c *client.Client) error {
		_, err := c.StartFlow(ctx, client.FlowInput{Name: "x", Provider: "github", ClientID: "app"})
		return err
	}
	completeFlow := func(ctx context.Context, c *client.Client) error {
		_, err := c.CompleteFlow(ctx, "f1", "code", "state")
		return err
	}
	tests := []struct {
		name     string
		call     func(context.Context, *client.Client) error
		fail, ok loopAnswer
		attempts int
	}{
		{"create without key, storage_error", create(""), storage, credentialOK, 1},
		{"create without key, engine unavailable", create(""), engine503, credentialOK, 1},
		{"create without key, sealed", create(""), sealed, credentialOK, 2},
		{"create without key, rate limit", create(""), quota, credentialOK, 2},
		{"create with key, storage_error", create("import-7"), storage, credentialOK, 2},
		{"create with key, engine unavailable", create("import-7"), engine503, credentialOK, 2},
		{"rotate, storage_error", rotate, storage, rotated, 1},
		{"rotate, sealed", rotate, sealed, rotated, 2},
		{"refresh, refresh_failed", refresh, vaultError(502, "refresh_failed: token endpoint answered 500"), token, 1},
		{"refresh, storage_error", refresh, storage, token, 1},
		{"batch without keys, storage_error", batch(""), storage, loopAnswer{}, 1},
		{"batch with keys, storage_error", batch("import-8"), storage, loopAnswer{}, 2},
		{"rotation policy, storage_error", setPolicy, storage, vaultData(map[string]any{"interval": 3600}), 2},
		{"start flow, engine unavailable", startFlow, engine503, vaultData(map[string]any{"flow_id": "f1", "status": "pending"}), 2},
		{"complete flow, engine unavailable", completeFlow, engine503, vaultData(map[string]any{"flow_id": "f1", "status": "completed"}), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lv := newLoopVault(t, func(n int, r loopRequest) loopAnswer {
				switch {
				case n == 1:
					return tt.fail
				case tt.ok.Status == 0:
					return batchAnswer(n, r)
				}
				return tt.ok
			})
			err := tt.call(testContext(t), lv.client(t, client.WithRetry(4, testBackoff)))
			if got := len(lv.Requests()); got != tt.attempts {
				t.Errorf("the server saw %d requests, want %d (error: %v)", got, tt.attempts, err)
			}
			if (err == nil) != (tt.attempts > 1) {
				t.Errorf("error = %v", err)
			}
		})
	}
}

// TestRetryTransport: connection failures are retried, for writes too
// (the request never left); a connection closed after the request was
// sent is retried for reads only.
func TestRetryTransport(t *testing.T) {
	t.Parallel()
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		addr := closedURL(t, "")[len("http://"):]
		var dials atomic.Int64
		dialer := &net.Dialer{Timeout: 5 * time.Second}
		hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			dials.Add(1)
			return dialer.DialContext(ctx, network, a)
		}}}
		vc, err := api.NewClient(&api.Config{Address: "http://" + addr, HttpClient: hc, MaxRetries: 0})
		if err != nil {
			t.Fatal(err)
		}
		c := client.New(vc, client.WithRetry(3, testBackoff))
		if _, err := c.Get(testContext(t), "x"); err == nil {
			t.Fatal("Get of a closed port succeeded")
		}
		if _, err := c.Rotate(testContext(t), "x", nil); err == nil {
			t.Fatal("Rotate on a closed port succeeded")
		}
		if got := dials.Load(); got != 6 {
			t.Errorf("Get and Rotate with 3 attempts each dialled %d times, want 6", got)
		}
	})
	t.Run("connection closed", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		var accepted atomic.Int64
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				buf := make([]byte, 4096)
				_, _ = conn.Read(buf) // the request has been sent
				conn.Close()
			}
		}()
		vc, err := api.NewClient(&api.Config{Address: "http://" + l.Addr().String(), HttpClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, MaxRetries: 0})
		if err != nil {
			t.Fatal(err)
		}
		c := client.New(vc, client.WithRetry(3, testBackoff))
		if _, err := c.Get(testContext(t), "x"); err == nil {
			t.Fatal("Get from a server that closes connections succeeded")
		}
		if got := accepted.Load(); got != 3 {
			t.Errorf("Get with 3 attempts made %d connections, want 3", got)
		}
		if _, err := c.Rotate(testContext(t), "x", nil); err == nil {
			t.Fatal("Rotate on a server that closes connections succeeded")
		}
		if got := accepted.Load(); got != 4 {
			t.Errorf("Rotate made %d connections, want 1 (it may have reached the engine)", got-3)
		}
	})
}

// TestRetryContext: the end of the context stops the wait between
// attempts (an hour here); the error wraps both the last failure and the
// context's.
func TestRetryContext(t *testing.T) {
	t.Parallel()
	// Long enough for the first attempt to be answered on a busy machine.
	ctx, cancel := context.WithTimeout(testContext(t), 10*time.Second)
	defer cancel()
	lv := newLoopVault(t, failThenOK(100, vaultError(503, "Vault is sealed"), credentialOK))
	_, err := lv.client(t, client.WithRetry(100, time.Hour)).Get(ctx, "x")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("Get with an ending context = %v; want unavailable and context.DeadlineExceeded", err)
	}
	if got := len(lv.Requests()); got != 1 {
		t.Errorf("the server saw %d requests, want 1", got)
	}
}

// TestErrorRetryable: Retryable is true for unavailable, storage_error and
// rate limits only.
func TestErrorRetryable(t *testing.T) {
	t.Parallel()
	for k := client.Unknown; k <= client.Storage; k++ {
		e := &client.Error{Kind: k, Status: k.Status(), Code: k.String()}
		want := k == client.Unavailable || k == client.Storage
		if e.Retryable() != want {
			t.Errorf("%v: Retryable = %v, want %v", k, e.Retryable(), want)
		}
	}
	if e := (&client.Error{Kind: client.Unknown, Status: http.StatusTooManyRequests}); !e.Retryable() {
		t.Error("a 429 is not retryable")
	}
	if e := (&client.Error{Kind: client.Unknown, Status: http.StatusBadGateway}); e.Retryable() {
		t.Error("an uncoded 502 is retryable")
	}
}
