package acceptance

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/nebula-credential/nebula-credential/test/harness"
	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// TestUndeliveredNotificationsSurviveAReload: a notification under way when
// the mount's plugin is reloaded is saved by the stopping backend and sent
// by the new one. The receiver holds the first delivery unanswered (the
// engine is still sending when the reload comes), then answers normally;
// it must receive the needs_reconnect event, correctly signed, after the
// reload (at least once: delivery is at-least-once).
func TestUndeliveredNotificationsSurviveAReload(t *testing.T) {
	v := harness.SharedDev(t)
	mount := ownMount(t, v, "nebula-notify-reload")
	srv := oauthserver.Start(t)
	const secret = "receiver-secret-0123456789"

	var (
		mu       sync.Mutex
		holding  = true
		events   []map[string]any
		bad      int
		arrived  = make(chan struct{}, 10)
		received = make(chan struct{}, 10)
	)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body first: only then does the server notice a sender
		// that gives up (r.Context is cancelled when the connection closes).
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		hold := holding
		mu.Unlock()
		select {
		case arrived <- struct{}{}:
		default:
		}
		if hold {
			// Unanswered until the sender gives up (the reload cancels it)
			// or the bound passes.
			select {
			case <-r.Context().Done():
			case <-time.After(90 * time.Second):
			}
			return
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(r.Header.Get("X-Nebula-Timestamp") + "."))
		mac.Write(body)
		var ev map[string]any
		err := json.Unmarshal(body, &ev)
		mu.Lock()
		if err != nil || !hmac.Equal([]byte("sha256="+hex.EncodeToString(mac.Sum(nil))), []byte(r.Header.Get("X-Nebula-Signature"))) {
			bad++
		} else {
			events = append(events, ev)
		}
		mu.Unlock()
		select {
		case received <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(rcv.Close)
	cliWrite(t, v, mount+"/config", "insecure_http_hosts=127.0.0.1", "notify_url="+rcv.URL+"/events", "notify_secret="+secret)

	// A refresh token the provider does not know: one refresh marks the
	// credential needs_reconnect, which queues the event.
	id, clientSecret := srv.WebClient()
	name := newName("notify-reload")
	cliWrite(t, v, mount+"/creds/"+name, "type=oauth2", "grant_type=refresh_token", "client_id="+id,
		"client_secret="+clientSecret, "refresh_token=not-a-refresh-token", "token_url="+srv.TokenURL(), "auth_style=header")
	_, err := v.CLI(t, "write", "-format=json", "-f", mount+"/refresh/"+name)
	requireError(t, cliError(err), http.StatusBadGateway, "refresh_failed")
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the needs_reconnect notification was not sent within 30 s")
	}

	mu.Lock()
	holding = false
	mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if _, err := v.Client().Sys().ReloadPluginWithContext(ctx, &api.ReloadPluginInput{Mounts: []string{mount}}); err != nil {
		t.Fatalf("reloading the plugin of %s/: %v", mount, err)
	}
	select {
	case <-received:
	case <-time.After(60 * time.Second):
		t.Fatal("the saved notification was not sent after the reload within 60 s")
	}
	// The new backend sent it, from what the stopping one saved (not the
	// stopped one on a retry): the reloaded mount's counters, which start
	// at zero, count the delivery.
	var sent string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if sent = field(cliRead(t, v, mount+"/metrics").Data, "notifications_sent"); sent == "1" {
			break
		}
	}
	if sent != "1" {
		t.Errorf("the reloaded mount's notifications_sent is %q; want 1 (the saved event)", sent)
	}
	mu.Lock()
	defer mu.Unlock()
	if bad > 0 {
		t.Errorf("%d notifications whose signature did not verify", bad)
	}
	for _, ev := range events {
		if ev["event"] != "needs_reconnect" || ev["credential"] != name {
			t.Errorf("event %v; want needs_reconnect of %s", ev, name)
		}
	}
}
