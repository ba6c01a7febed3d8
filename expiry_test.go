package nebula

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

// hugeExpiresIn is an expires_in (seconds) whose nanoseconds overflow an
// int64 (time.Duration): about 295 years.
const hugeExpiresIn = "9300000000"

// deviceServer is a device authorization server whose answers carry the
// given expires_in (device authorization answer) and token expires_in (token
// answers), and which approves every device code at once.
type deviceServer struct {
	*httptest.Server
	refreshes atomic.Int64
	codes     atomic.Int64
	hang      atomic.Value // device code (string) whose polls hang until the caller gives up
}

func newDeviceServer(tb testing.TB, deviceExpiresIn, tokenExpiresIn string) *deviceServer {
	tb.Helper()
	d := &deviceServer{}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/device":
			fmt.Fprintf(w, `{"device_code":"dev-code-%d","user_code":"USER-CODE","verification_uri":"https://idp.example.com/device","expires_in":%s,"interval":%s}`,
				d.codes.Add(1), deviceExpiresIn, hugeExpiresIn)
		case "/token":
			_ = r.ParseForm()
			if hang, _ := d.hang.Load().(string); hang != "" && r.PostForm.Get("device_code") == hang {
				<-r.Context().Done()
				return
			}
			if r.PostForm.Get("grant_type") == "refresh_token" {
				d.refreshes.Add(1)
			}
			fmt.Fprintf(w, `{"access_token":"at-%d","token_type":"bearer","refresh_token":"rt","expires_in":%s}`, d.refreshes.Load(), tokenExpiresIn)
		default:
			http.NotFound(w, r)
		}
	}))
	tb.Cleanup(d.Close)
	return d
}

func (d *deviceServer) start(tb testing.TB, e *testEnv, name string) map[string]any {
	tb.Helper()
	e.mustRequest(tb, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1"})
	return e.mustRequest(tb, logical.UpdateOperation, "flows/start", map[string]any{
		"name": name, "grant_type": "device_code", "client_id": "device-client",
		"device_url": d.URL + "/device", "token_url": d.URL + "/token",
	}).Data
}

// TestDeviceExpiresInOverflowIsCapped (issue 12 item 20): an expires_in
// too large for a time.Duration is capped as golang.org/x/oauth2 caps the
// token endpoint's (math.MaxInt32 seconds), in the device authorization
// answer (the flow stays open until flow_ttl) and in the token answer (the
// token is not treated as expired and refreshed on every read).
func TestDeviceExpiresInOverflowIsCapped(t *testing.T) {
	t.Run("device authorization answer", func(t *testing.T) {
		e := newTestBackend(t)
		d := newDeviceServer(t, hugeExpiresIn, "3600")
		started := d.start(t, e, "device")
		require.Equal(t, e.clock.Now().Add(DefaultConfig().FlowTTL).UTC().Format(time.RFC3339), started["expires_at"], "the flow ends at flow_ttl")
		require.EqualValues(t, defaultDeviceInterval, started["interval"], "an interval too long is replaced by the default")
		id := started["flow_id"].(string)
		require.Equal(t, "pending", flowStatus(t, e, id)["status"])
		e.clock.Advance(defaultDeviceInterval * time.Second)
		require.Equal(t, "completed", flowStatus(t, e, id)["status"])
	})
	t.Run("token answer", func(t *testing.T) {
		e := newTestBackend(t)
		d := newDeviceServer(t, "600", hugeExpiresIn)
		id := d.start(t, e, "device")["flow_id"].(string)
		e.clock.Advance(defaultDeviceInterval * time.Second)
		require.Equal(t, "completed", flowStatus(t, e, id)["status"])

		tok := e.mustRequest(t, logical.ReadOperation, "token/device", nil).Data
		expires, err := time.Parse(time.RFC3339, tok["expires_at"].(string))
		require.NoError(t, err)
		require.True(t, expires.After(e.clock.Now().Add(60*365*24*time.Hour)), "expires_at %s is about 68 years away", expires)
		e.mustRequest(t, logical.ReadOperation, "token/device", nil)
		require.Zero(t, d.refreshes.Load(), "the token is not refreshed on reads")
	})
}

// TestFormEncodedExpiresInOverflowIsCapped (issue 12 item 20): a token
// endpoint answering form-encoded (as GitHub does without an Accept
// header) with an expires_in too large for a time.Duration gets the capped
// lifetime, not an expiry in the past.
func TestFormEncodedExpiresInOverflowIsCapped(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
		fmt.Fprint(w, "access_token=form-token&token_type=bearer&expires_in="+hugeExpiresIn)
	}))
	t.Cleanup(srv.Close)
	e := newTestBackend(t)
	e.clock.now = time.Now()
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "127.0.0.1"})
	e.mustRequest(t, logical.CreateOperation, "creds/f", map[string]any{
		"type": "oauth2", "client_id": "c", "client_secret": "s", "token_url": srv.URL + "/token", "auth_style": "header"})
	tok := e.mustRequest(t, logical.ReadOperation, "token/f", nil).Data
	require.Equal(t, "form-token", tok["access_token"])
	expires, err := time.Parse(time.RFC3339, tok["expires_at"].(string))
	require.NoError(t, err)
	require.True(t, expires.After(e.clock.Now().Add(60*365*24*time.Hour)), "expires_at %s is about 68 years away", expires)
	e.mustRequest(t, logical.ReadOperation, "token/f", nil)
	require.EqualValues(t, 1, requests.Load(), "the token is not fetched again on reads")
}
