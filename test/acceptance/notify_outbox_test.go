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

// notifyReceiverSecret signs the notifications of the tests below.
const notifyReceiverSecret = "receiver-secret-0123456789"

// holdNotification points mount's notifications at a receiver that holds
// deliveries unanswered and makes one credential needs_reconnect (a
// refresh token the provider does not know), so the needs_reconnect event
// is under way when it returns. It answers the receiver and the name.
func holdNotification(t *testing.T, v *harness.Vault, mount string) (*eventReceiver, string) {
	t.Helper()
	srv := oauthserver.Start(t)
	rcv := startEventReceiver(t, notifyReceiverSecret)
	rcv.hold(true)
	cliWrite(t, v, mount+"/config", "insecure_http_hosts=127.0.0.1", "notify_url="+rcv.URL+"/events", "notify_secret="+notifyReceiverSecret)
	id, clientSecret := srv.WebClient()
	name := newName("notify-held")
	cliWrite(t, v, mount+"/creds/"+name, "type=oauth2", "grant_type=refresh_token", "client_id="+id,
		"client_secret="+clientSecret, "refresh_token=not-a-refresh-token", "token_url="+srv.TokenURL(), "auth_style=header")
	_, err := v.CLI(t, "write", "-format=json", "-f", mount+"/refresh/"+name)
	requireError(t, cliError(err), http.StatusBadGateway, "refresh_failed")
	select {
	case <-rcv.arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the needs_reconnect notification was not sent within 30 s")
	}
	return rcv, name
}

// requireSentAgain checks that the (re)started plugin of mount delivered
// the held event: the receiver got needs_reconnect of name, correctly
// signed, and the mount's counters, which start at zero with the new
// backend, count the delivery (so it was the new backend, from the
// outbox, not the stopped one on a retry).
func requireSentAgain(t *testing.T, v *harness.Vault, mount string, rcv *eventReceiver, name string) {
	t.Helper()
	rcv.wait(t, 1)
	var sent string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if sent = field(cliRead(t, v, mount+"/metrics").Data, "notifications_sent"); sent == "1" {
			break
		}
	}
	if sent != "1" {
		t.Errorf("the restarted mount's notifications_sent is %q; want 1 (the stored event)", sent)
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

// TestUndeliveredNotificationsSurviveAReload: a notification under way when
// the mount's plugin is reloaded stays in the outbox and is sent by the new
// backend (at least once: delivery is at-least-once).
func TestUndeliveredNotificationsSurviveAReload(t *testing.T) {
	v := harness.SharedDev(t)
	mount := ownMount(t, v, "nebula-notify-reload")
	rcv, name := holdNotification(t, v, mount)

	rcv.hold(false)
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if _, err := v.Client().Sys().ReloadPluginWithContext(ctx, &api.ReloadPluginInput{Mounts: []string{mount}}); err != nil {
		t.Fatalf("reloading the plugin of %s/: %v", mount, err)
	}
	requireSentAgain(t, v, mount, rcv, name)
}

// TestUndeliveredNotificationsSurviveAPluginCrash: the plugin process is
// killed (SIGKILL: no Clean, nothing saved at the stop) while a
// notification is under way; the server starts the plugin again on the
// next request, and the new backend sends the event from the outbox. Its
// own server, since the kill ends the plugin process of every mount. Before
// the outbox, a crash lost the event.
func TestUndeliveredNotificationsSurviveAPluginCrash(t *testing.T) {
	v := harness.StartDev(t)
	rcv, name := holdNotification(t, v, v.Mount)

	rcv.hold(false)
	if n := v.KillPlugin(t); n != 1 {
		t.Errorf("%d plugin processes killed; want 1 (the plugin is multiplexed)", n)
	}
	// The next request to the mount starts the plugin again.
	if got := cliRead(t, v, v.Mount+"/health"); field(got.Data, "status") == "" {
		t.Errorf("health after the crash: %s", got.Raw)
	}
	requireSentAgain(t, v, v.Mount, rcv, name)
}

// TestUndeliveredNotificationsSurviveAFailover: the active node of a
// three-node cluster crashes (SIGKILL to the server and its plugin: no
// Clean) while a notification is under way; the outbox entry was
// committed through raft before the event was queued, so the new active
// node's plugin sends it. Before the outbox, the event was lost.
func TestUndeliveredNotificationsSurviveAFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	c := harness.StartCluster(t, 3)
	first := c.Active()
	rcv, name := holdNotification(t, c.Node(first), harness.DefaultMount)

	rcv.hold(false)
	c.KillNode(t, first)
	next := c.WaitActive(t, 60*time.Second)
	if next == first {
		t.Fatalf("the killed node %d is still named active", first)
	}
	// A request starts the mount's plugin on the new active node if it
	// has not started yet.
	if got := cliRead(t, c.Node(next), harness.DefaultMount+"/health"); field(got.Data, "status") == "" {
		t.Errorf("health after the failover: %s", got.Raw)
	}
	requireSentAgain(t, c.Node(next), harness.DefaultMount, rcv, name)
}
