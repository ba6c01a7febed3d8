package acceptance

import (
	"context"
	"net/http"
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
	rcv := startEventReceiver(t, secret)
	rcv.hold(true)
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
	case <-rcv.arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the needs_reconnect notification was not sent within 30 s")
	}

	rcv.hold(false)
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if _, err := v.Client().Sys().ReloadPluginWithContext(ctx, &api.ReloadPluginInput{Mounts: []string{mount}}); err != nil {
		t.Fatalf("reloading the plugin of %s/: %v", mount, err)
	}
	rcv.wait(t, 1)
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
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.bad) > 0 {
		t.Errorf("notifications whose signature did not verify: %q", rcv.bad)
	}
	for _, ev := range rcv.events {
		if ev["event"] != "needs_reconnect" || ev["credential"] != name {
			t.Errorf("event %v; want needs_reconnect of %s", ev, name)
		}
	}
}
