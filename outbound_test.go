package nebula

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/mirror/mirrortest"
)

// countingServer is an https server on 127.0.0.1 that counts the TCP
// connections it accepts, before any TLS handshake.
type countingServer struct {
	*httptest.Server
	accepted atomic.Int64
}

// newCountingTLSServer starts a counting server for h and makes the engine
// trust its certificate, so a connection the engine opens succeeds.
func newCountingTLSServer(tb testing.TB, e *testEnv, h http.Handler) *countingServer {
	tb.Helper()
	s := &countingServer{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.accepted.Add(1)
		}
	}
	s.StartTLS()
	tb.Cleanup(s.Close)
	e.b.upstreamRoots = s.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	return s
}

// port is the server's port on 127.0.0.1.
func (s *countingServer) port() string {
	_, port, _ := net.SplitHostPort(s.Listener.Addr().String())
	return port
}

func tokenHandler(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"access_token":"loopback-token","token_type":"bearer","expires_in":3600}`)
}

func TestUnlistedLoopbackTokenURLIsNotDialled(t *testing.T) {
	e := newTestBackend(t)
	e.b.upstreamBackoff = 0
	srv := newCountingTLSServer(t, e, http.HandlerFunc(tokenHandler))
	for name, tokenURL := range map[string]string{
		"ip":   srv.URL + "/token",
		"name": "https://localhost:" + srv.port() + "/token", // resolves to loopback
	} {
		e.mustRequest(t, logical.CreateOperation, "creds/"+name, map[string]any{
			"type": "oauth2", "client_id": "c", "client_secret": "s", "token_url": tokenURL})
		_, err := e.request(t, logical.ReadOperation, "token/"+name, nil)
		requireKind(t, err, KindRefreshFailed, "loopback", "allowed_hosts")
		require.NotContains(t, err.Error(), "client_secret=")
	}
	require.Zero(t, srv.accepted.Load(), "the engine opened no connection to an unlisted loopback host")

	// Listed, the same host is called.
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"allowed_hosts": "127.0.0.1"})
	resp := e.mustRequest(t, logical.ReadOperation, "token/ip", nil)
	require.Equal(t, "loopback-token", resp.Data["access_token"])
	require.Positive(t, srv.accepted.Load())
}

func TestWebhookToUnlistedLoopbackIsRefused(t *testing.T) {
	e := newTestBackend(t)
	w := newWebhook(t, e)
	setupWebhookCredential(t, e, w, "k", nil)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"allowed_hosts": ""})

	_, err := e.request(t, logical.UpdateOperation, "rotate/k", nil)
	requireKind(t, err, KindRotationFailed, "webhook", "loopback")
	require.Zero(t, w.calls.Load(), "the webhook was not called")
}

// mirrorFakes configures both mirror targets against loopback fakes with
// the engine's own target factory (the real SDK clients, the engine's
// transport), the fakes listed in config so the writes are accepted.
func mirrorFakes(tb testing.TB, e *testEnv) (*mirrortest.AWS, *mirrortest.Azure) {
	tb.Helper()
	aws, azure := mirrortest.NewAWS(tb), mirrortest.NewAzure(tb)
	e.mustRequest(tb, logical.UpdateOperation, "config", map[string]any{
		"insecure_http_hosts": "127.0.0.1", "allowed_hosts": "127.0.0.1"})
	e.mustRequest(tb, logical.UpdateOperation, "mirror/aws", map[string]any{
		"region": aws.Region(), "endpoint": aws.URL(), "access_key": aws.AccessKey(), "secret_key": aws.SecretKey()})
	e.mustRequest(tb, logical.UpdateOperation, "mirror/azure", map[string]any{"vault_url": azure.URL()})
	return aws, azure
}

func TestMirrorEndpointsFollowTheHostPolicy(t *testing.T) {
	t.Run("refused when written", func(t *testing.T) {
		e := newTestBackend(t)
		aws := mirrortest.NewAWS(t)
		e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"allowed_hosts": "only.example.com"})
		_, err := e.request(t, logical.UpdateOperation, "mirror/aws", map[string]any{
			"region": aws.Region(), "endpoint": aws.URL(), "access_key": aws.AccessKey(), "secret_key": aws.SecretKey()})
		requireKind(t, err, KindInvalidInput, "endpoint", "insecure_http_hosts")
		_, err = e.request(t, logical.UpdateOperation, "mirror/azure", map[string]any{"vault_url": "https://127.0.0.1:1"})
		requireKind(t, err, KindInvalidInput, "vault_url", "allowed_hosts")
		require.Zero(t, aws.Connections())
	})

	t.Run("nothing sent after the policy changes", func(t *testing.T) {
		e := newTestBackend(t)
		aws, azure := mirrorFakes(t, e)
		e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{
			"allowed_hosts": "only.example.com", "insecure_http_hosts": ""})
		e.mustRequest(t, logical.CreateOperation, "creds/m", map[string]any{
			"type": "api_key", "api_key": "mirror-SECRET-1", "mirror": "aws,azure"})
		require.Zero(t, aws.Connections(), "no connection to the AWS endpoint")
		require.Zero(t, azure.Connections(), "no connection to the Key Vault")
		requireMirrorErrors(t, e, "host policy")
	})

	t.Run("https to unlisted loopback is not dialled", func(t *testing.T) {
		e := newTestBackend(t)
		_, azure := mirrorFakes(t, e)
		e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"allowed_hosts": "", "insecure_http_hosts": ""})
		e.mustRequest(t, logical.CreateOperation, "creds/m", map[string]any{
			"type": "api_key", "api_key": "mirror-SECRET-1", "mirror": "azure"})
		require.Zero(t, azure.Connections(), "no connection to the Key Vault on loopback")
		requireMirrorErrors(t, e, "loopback")
	})
}

// requireMirrorErrors asserts that every mirror state is an error that
// mentions mention and holds no secret.
func requireMirrorErrors(tb testing.TB, e *testEnv, mention string) {
	tb.Helper()
	status := e.mustRequest(tb, logical.ReadOperation, "mirror/status", nil).Data["status"].([]map[string]any)
	require.NotEmpty(tb, status)
	for _, st := range status {
		require.Equal(tb, "error", st["sync_status"], "%v", st)
		msg := st["last_error"].(string)
		require.Contains(tb, msg, mention)
		require.False(tb, strings.Contains(msg, "SECRET"), "no content in errors: %s", msg)
	}
}
