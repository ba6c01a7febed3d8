package client_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/client"
)

// TestRotation: rotation with supplied values, rotation policies (blue/green
// keeps the previous version readable), one-off schedules.
func TestRotation(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := testContext(t)
	name := newName("rotate")
	created, err := c.Create(ctx, name, client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret("rot-SECRET-1")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetPreviousToken(ctx, name); client.ErrorKind(err) != client.NotFound {
		t.Errorf("GetPreviousToken without a previous version = %v; want not_found", err)
	}

	res, err := c.Rotate(ctx, name, map[string]string{"api_key": "rot-SECRET-2"})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if res.Credential != name || res.Version != 2 || res.PreviousID != created.ID || res.ID == "" || res.ID == created.ID {
		t.Errorf("Rotate answered %+v; want version 2 after %s", res, created.ID)
	}
	if tok, err := c.GetToken(ctx, name, nil); err != nil || tok.Value() != "rot-SECRET-2" || tok.Version != 2 {
		t.Errorf("GetToken after Rotate = %v, %v", tok, err)
	}

	policy, err := c.SetRotationPolicy(ctx, name, client.RotationPolicy{
		Interval: 24 * time.Hour, WarningPeriod: time.Hour, Strategy: client.StrategyBlueGreen, GracePeriod: 2 * time.Hour,
	})
	if err != nil {
		t.Fatalf("SetRotationPolicy: %v", err)
	}
	if policy.Interval != 24*time.Hour || policy.WarningPeriod != time.Hour || policy.Strategy != client.StrategyBlueGreen ||
		policy.GracePeriod != 2*time.Hour || policy.NextRotationAt.IsZero() || policy.Warning || policy.LastRotatedAt.IsZero() {
		t.Errorf("SetRotationPolicy answered %+v", policy)
	}

	res, err = c.Rotate(ctx, name, map[string]string{"api_key": "rot-SECRET-3"})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	prev, err := c.GetPreviousToken(ctx, name)
	if err != nil {
		t.Fatalf("GetPreviousToken: %v", err)
	}
	if prev.Value() != "rot-SECRET-2" || prev.Version != 2 {
		t.Errorf("GetPreviousToken = %v (value ok: %v); want version 2", prev, prev.Value() == "rot-SECRET-2")
	}
	got, err := c.GetRotationPolicy(ctx, name)
	if err != nil {
		t.Fatalf("GetRotationPolicy: %v", err)
	}
	if got.Previous == nil || got.Previous.Version != 2 || got.Previous.ID == "" ||
		got.Previous.GraceUntil.Before(time.Now().Add(time.Hour)) || got.Strategy != client.StrategyBlueGreen {
		t.Errorf("GetRotationPolicy = %+v (previous %+v)", got, got.Previous)
	}
	cred, err := c.Get(ctx, name)
	if err != nil || cred.Version != 3 || cred.Rotation == nil || cred.Rotation.Interval != 24*time.Hour || cred.Rotation.Previous == nil {
		t.Errorf("Get = %+v, %v; want version 3 with the policy", cred, err)
	}

	at := time.Now().Add(3 * time.Hour).UTC().Truncate(time.Second)
	sched, err := c.ScheduleRotation(ctx, name, at)
	if err != nil {
		t.Fatalf("ScheduleRotation: %v", err)
	}
	if !sched.RotateAt.Equal(at) || sched.Interval != 24*time.Hour || sched.Strategy != client.StrategyBlueGreen {
		t.Errorf("ScheduleRotation answered %+v; want rotate_at %v and the policy kept", sched, at)
	}
	if _, err := c.ScheduleRotation(ctx, name, time.Time{}); client.ErrorKind(err) != client.InvalidInput {
		t.Errorf("ScheduleRotation at the zero time = %v; want invalid_input", err)
	}
	m, err := c.CredentialMetrics(ctx, name)
	if err != nil || m.NextRotationAt.IsZero() {
		t.Errorf("CredentialMetrics = %+v, %v; want the next rotation", m, err)
	}

	_, err = c.SetRotationPolicy(ctx, name, client.RotationPolicy{Strategy: "sideways"})
	requireKind(t, err, client.InvalidInput, client.ErrInvalidInput)

	if err := c.DeleteRotationPolicy(ctx, name); err != nil {
		t.Fatalf("DeleteRotationPolicy: %v", err)
	}
	got, err = c.GetRotationPolicy(ctx, name)
	if err != nil || got.Interval != 0 || !got.NextRotationAt.IsZero() || !got.RotateAt.IsZero() {
		t.Errorf("GetRotationPolicy after delete = %+v, %v; want no policy", got, err)
	}
}

// webhook is a rotation webhook on loopback: it answers new api keys, or
// fails, or holds requests until released.
type webhook struct {
	*httptest.Server
	fail     atomic.Bool
	hold     chan struct{} // when not nil, requests wait until it is closed
	release  func()        // closes hold (once)
	arrived  chan struct{} // receives one value per request
	requests atomic.Int64
}

func startWebhook(t *testing.T, hold bool) *webhook {
	t.Helper()
	w := &webhook{arrived: make(chan struct{}, 16)}
	w.release = func() {}
	if hold {
		w.hold = make(chan struct{})
		var once sync.Once
		w.release = func() { once.Do(func() { close(w.hold) }) }
	}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		n := w.requests.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.arrived <- struct{}{}
		if w.hold != nil {
			<-w.hold
		}
		if w.fail.Load() || r.Header.Get("X-Nebula-Signature") == "" {
			http.Error(rw, "no", http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(rw).Encode(map[string]string{"api_key": "from-webhook-SECRET-" + string(rune('0'+n))})
	}))
	t.Cleanup(w.Close)
	t.Cleanup(w.release) // before Close, which waits for held requests
	return w
}

// TestRotationWebhook: rotation through a webhook; a failing webhook
// answers rotation_failed; a rotation while another is under way answers
// rotation_in_progress.
func TestRotationWebhook(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := testContext(t)
	withWebhook := func(t *testing.T, hook *webhook) string {
		t.Helper()
		name := newName("webhook")
		if _, err := c.Create(ctx, name, client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret("hook-SECRET-0")}}); err != nil {
			t.Fatal(err)
		}
		p, err := c.SetRotationPolicy(ctx, name, client.RotationPolicy{WebhookURL: hook.URL + "/rotate", WebhookSecret: client.NewSecret("0123456789abcdef-SECRET")})
		if err != nil {
			t.Fatalf("SetRotationPolicy: %v", err)
		}
		if p.WebhookURL != hook.URL+"/rotate" {
			t.Errorf("policy webhook_url = %q", p.WebhookURL)
		}
		return name
	}

	t.Run("rotates", func(t *testing.T) {
		hook := startWebhook(t, false)
		name := withWebhook(t, hook)
		res, err := c.Rotate(ctx, name, nil)
		if err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		tok, err := c.GetToken(ctx, name, nil)
		if err != nil || tok.Value() != "from-webhook-SECRET-1" || res.Version != 2 {
			t.Errorf("after a webhook rotation: %+v, token %v, %v", res, tok, err)
		}
	})

	t.Run("rotation_failed", func(t *testing.T) {
		hook := startWebhook(t, false)
		hook.fail.Store(true)
		name := withWebhook(t, hook)
		_, err := c.Rotate(ctx, name, nil)
		requireKind(t, err, client.RotationFailed, client.ErrRotationFailed)
		if tok, err := c.GetToken(ctx, name, nil); err != nil || tok.Value() != "hook-SECRET-0" {
			t.Errorf("after a failed rotation the token is %v, %v; want the old one", tok, err)
		}
	})

	t.Run("rotation_in_progress", func(t *testing.T) {
		hook := startWebhook(t, true)
		name := withWebhook(t, hook)
		first := make(chan error, 1)
		go func() {
			_, err := c.Rotate(ctx, name, nil)
			first <- err
		}()
		select {
		case <-hook.arrived: // the first rotation waits in the webhook
		case err := <-first:
			t.Fatalf("the first rotation ended before reaching the webhook: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("the first rotation did not reach the webhook")
		}
		_, err := c.Rotate(ctx, name, map[string]string{"api_key": "second-SECRET"})
		hook.release()
		requireKind(t, err, client.RotationInProgress, client.ErrRotationInProgress)
		if err := <-first; err != nil {
			t.Errorf("the first rotation: %v", err)
		}
	})
}
