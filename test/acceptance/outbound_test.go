package acceptance

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nebula-credential/nebula-credential/mirror/mirrortest"
	"github.com/nebula-credential/nebula-credential/test/harness"
)

// countingTLSListener is an https server on 127.0.0.1 that counts the TCP
// connections it accepts, before any TLS handshake. The engine does not
// trust its certificate: a counted connection is enough to see a dial.
type countingTLSListener struct {
	*httptest.Server
	accepted atomic.Int64
}

func newCountingTLSListener(tb testing.TB) *countingTLSListener {
	tb.Helper()
	l := &countingTLSListener{Server: httptest.NewUnstartedServer(http.NotFoundHandler())}
	l.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			l.accepted.Add(1)
		}
	}
	l.StartTLS()
	tb.Cleanup(l.Close)
	return l
}

func (l *countingTLSListener) port() string {
	_, port, _ := net.SplitHostPort(l.Listener.Addr().String())
	return port
}

// TestOutboundPolicyRefusesUnlistedLoopback: on a mount with the default
// config, the engine opens no connection to an https port on loopback, by
// address or by a name resolving to it, for token requests and rotation
// webhooks; listed in allowed_hosts, the same port is dialled.
func TestOutboundPolicyRefusesUnlistedLoopback(t *testing.T) {
	v := harness.SharedDev(t)
	mount := ownMount(t, v, "nebula-outbound")
	d := apiDriver{c: v.Client()}
	l := newCountingTLSListener(t)

	for _, tokenURL := range []string{l.URL + "/token", "https://localhost:" + l.port() + "/token"} {
		name := newName("outbound-token")
		mustWrite(t, d, mount+"/creds/"+name, map[string]any{
			"type": "oauth2", "client_id": "c", "client_secret": "outbound-SECRET", "token_url": tokenURL})
		_, err := d.Read(t, mount+"/token/"+name)
		requireError(t, err, http.StatusBadGateway, "refresh_failed")
		requireErrorMentions(t, err, "loopback", "allowed_hosts")
		requireNoSecrets(t, "refresh error", fmt.Sprint(err), []string{"outbound-SECRET"})
	}

	hook := newName("outbound-hook")
	mustWrite(t, d, mount+"/creds/"+hook, map[string]any{"type": "api_key", "api_key": "v1"})
	mustWrite(t, d, mount+"/creds/"+hook+"/rotation", map[string]any{
		"webhook_url": l.URL + "/rotate", "webhook_secret": "outbound-webhook-secret-1"})
	_, err := d.Write(t, mount+"/rotate/"+hook, nil)
	requireError(t, err, http.StatusBadGateway, "rotation_failed")
	requireErrorMentions(t, err, "loopback")

	if n := l.accepted.Load(); n != 0 {
		t.Fatalf("the engine opened %d connections to an unlisted loopback https port; want none", n)
	}

	// Listed, the port is dialled (the handshake then fails: the engine
	// does not trust the test certificate), so the listener does see dials.
	mustWrite(t, d, mount+"/config", map[string]any{"allowed_hosts": "127.0.0.1"})
	name := newName("outbound-listed")
	mustWrite(t, d, mount+"/creds/"+name, map[string]any{
		"type": "oauth2", "client_id": "c", "client_secret": "s", "token_url": l.URL + "/token"})
	_, err = d.Read(t, mount+"/token/"+name)
	requireError(t, err, http.StatusBadGateway, "refresh_failed")
	if l.accepted.Load() == 0 {
		t.Fatal("listed in allowed_hosts, the port was not dialled")
	}
}

// TestOutboundPolicyMirrorsSendNothing: with allowed_hosts=only.example.com
// and no insecure_http_hosts, a mirror/aws endpoint on loopback is refused
// when written, and a target written while it was allowed sends nothing
// once the policy no longer allows it; the AWS fake sees no connection.
func TestOutboundPolicyMirrorsSendNothing(t *testing.T) {
	v := harness.SharedDev(t)
	mount := ownMount(t, v, "nebula-outbound-mirror")
	d := apiDriver{c: v.Client()}
	aws := mirrortest.NewAWS(t)
	target := map[string]any{"region": aws.Region(), "endpoint": aws.URL(), "access_key": aws.AccessKey(), "secret_key": aws.SecretKey()}

	mustWrite(t, d, mount+"/config", map[string]any{"allowed_hosts": "only.example.com"})
	_, err := d.Write(t, mount+"/mirror/aws", target)
	requireError(t, err, http.StatusBadRequest, "invalid_input")
	requireErrorMentions(t, err, "endpoint", "insecure_http_hosts")

	// Written while allowed, then the policy changes.
	mustWrite(t, d, mount+"/config", map[string]any{"insecure_http_hosts": "127.0.0.1"})
	mustWrite(t, d, mount+"/mirror/aws", target)
	mustWrite(t, d, mount+"/config", map[string]any{"insecure_http_hosts": ""})
	name := newName("outbound-mirror")
	mustWrite(t, d, mount+"/creds/"+name, map[string]any{
		"type": "api_key", "api_key": "mirror-SECRET-1", "mirror": "aws"})
	status := mustRead(t, d, mount+"/mirror/status")
	raw := status.Raw
	if !strings.Contains(raw, `"error"`) || !strings.Contains(raw, "host policy") {
		t.Errorf("mirror/status = %s; want an error from the host policy", raw)
	}
	requireNoSecrets(t, "mirror status", raw, []string{"mirror-SECRET-1", aws.SecretKey()})
	if n := aws.Connections(); n != 0 {
		t.Fatalf("the AWS endpoint received %d connections; want none", n)
	}

	// Allowed again, the next write reaches the fake: it was reachable.
	mustWrite(t, d, mount+"/config", map[string]any{"insecure_http_hosts": "127.0.0.1"})
	mustWrite(t, d, mount+"/creds/"+name, map[string]any{"api_key": "mirror-SECRET-2"})
	if aws.Connections() == 0 {
		t.Fatal("with the endpoint allowed the AWS fake received nothing")
	}
}

// TestMirroringNeedsTheSecret: through a real Vault, a caller whose policy
// lets it update a credential but who does not send the secret cannot
// start copying it to a mirror target (where other people's policies decide
// who reads it); with the secret in the same write it can. The AWS fake
// receives nothing until then.
func TestMirroringNeedsTheSecret(t *testing.T) {
	v := harness.SharedDev(t)
	mount := ownMount(t, v, "nebula-mirror-secret")
	root := apiDriver{c: v.Client()}
	aws := mirrortest.NewAWS(t)
	mustWrite(t, root, mount+"/config", map[string]any{"insecure_http_hosts": "127.0.0.1"})
	mustWrite(t, root, mount+"/mirror/aws", map[string]any{
		"region": aws.Region(), "endpoint": aws.URL(), "access_key": aws.AccessKey(), "secret_key": aws.SecretKey()})
	name := newName("mirror-secret")
	mustWrite(t, root, mount+"/creds/"+name, map[string]any{"type": "api_key", "api_key": "mirror-SECRET-3"})

	editor := apiDriver{c: v.ClientWithToken(tokenWithPolicy(t, v, newName("creds-editor"), fmt.Sprintf(`
path "%s/creds/%s" {
  capabilities = ["read", "update"]
}
`, mount, name)))}
	_, err := editor.Write(t, mount+"/creds/"+name, map[string]any{"mirror": "aws"})
	requireError(t, err, http.StatusBadRequest, "invalid_input")
	requireErrorMentions(t, err, "aws", "api_key")
	if n := aws.Connections(); n != 0 {
		t.Fatalf("the AWS fake received %d connections after the refused write; want none", n)
	}
	mustWrite(t, editor, mount+"/creds/"+name, map[string]any{"mirror": "aws", "api_key": "mirror-SECRET-3"})
	if aws.Connections() == 0 {
		t.Fatal("with the secret supplied the AWS fake received nothing")
	}
}
