package upstream

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// answerServer answers every request with one status and body (JSON), and
// counts the requests.
type answerServer struct {
	*httptest.Server
	requests atomic.Int64
}

func newAnswerServer(tb testing.TB, status int, body string) *answerServer {
	tb.Helper()
	a := &answerServer{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	tb.Cleanup(a.Close)
	return a
}

// endpointCalls are the engine's calls to OAuth2 endpoints, each against
// url, returning its error.
var endpointCalls = map[string]func(ctx context.Context, c *Client, url string) error{
	"token": func(ctx context.Context, c *Client, url string) error {
		_, err := c.Token(ctx, Request{Grant: "client_credentials", ClientID: "c", ClientSecret: "s", TokenURL: url, AuthStyle: "header"})
		return err
	},
	"exchange": func(ctx context.Context, c *Client, url string) error {
		_, err := c.Exchange(ctx, ExchangeRequest{Request: Request{ClientID: "c", ClientSecret: "s", TokenURL: url, AuthStyle: "header"}, Code: "code"})
		return err
	},
	"device authorization": func(ctx context.Context, c *Client, url string) error {
		_, err := c.DeviceAuth(ctx, DeviceAuthRequest{Request: Request{ClientID: "c"}, DeviceURL: url})
		return err
	},
	"device poll": func(ctx context.Context, c *Client, url string) error {
		_, err := c.PollDevice(ctx, Request{ClientID: "c", ClientSecret: "s", TokenURL: url, AuthStyle: "header"}, "dev")
		return err
	},
	"revocation": func(ctx context.Context, c *Client, url string) error {
		return c.Revoke(ctx, Request{ClientID: "c", ClientSecret: "s"}, url, "tok", "access_token")
	},
}

// TestOneTransientRule: every endpoint call classifies the same answers
// the same way (the package doc's rule), and Token retries exactly the
// transient ones.
func TestOneTransientRule(t *testing.T) {
	for _, tc := range []struct {
		name      string
		status    int
		body      string
		transient bool
	}{
		{"500", 500, `{"error":"server_error"}`, true},
		{"503 without a body", 503, ``, true},
		{"429 claiming invalid_grant", 429, `{"error":"invalid_grant"}`, true},
		{"400 temporarily_unavailable", 400, `{"error":"temporarily_unavailable"}`, true},
		{"400 invalid_grant", 400, `{"error":"invalid_grant"}`, false},
		{"401 invalid_client", 401, `{"error":"invalid_client"}`, false},
		{"200 with an error code", 200, `{"error":"invalid_grant"}`, false},
		{"200 that is not an OAuth2 answer", 200, `<html>hello</html>`, false},
	} {
		for call, do := range endpointCalls {
			if call == "revocation" && tc.status == 200 {
				continue // a 200 is a successful revocation
			}
			t.Run(tc.name+"/"+call, func(t *testing.T) {
				srv := newAnswerServer(t, tc.status, tc.body)
				c := New(loopbackPolicy, nil, nil)
				c.Attempts, c.Backoff = 2, time.Millisecond
				err := do(t.Context(), c, srv.URL)
				var ue *Error
				require.ErrorAs(t, err, &ue)
				require.Equal(t, tc.transient, !ue.Permanent, "transient: %v", ue)
				require.NotContains(t, ue.Error(), "hello", "no body in errors")
				want := int64(1)
				if call == "token" && tc.transient {
					want = 2 // Token retries transient failures; the others are made once
				}
				require.Equal(t, want, srv.requests.Load())
			})
		}
	}
	for call, do := range endpointCalls {
		t.Run("no answer/"+call, func(t *testing.T) {
			srv := newAnswerServer(t, 200, "")
			srv.Close()
			c := New(loopbackPolicy, nil, nil)
			c.Attempts, c.Backoff = 1, time.Millisecond
			var ue *Error
			require.ErrorAs(t, do(t.Context(), c, srv.URL), &ue)
			require.False(t, ue.Permanent, "%v", ue)
			require.Contains(t, ue.Error(), "unreachable")
		})
	}
}

// TestEndpointNamedInErrors: an error says which endpoint answered.
func TestEndpointNamedInErrors(t *testing.T) {
	want := map[string]string{
		"token": "token endpoint answered 400 invalid_grant", "exchange": "token endpoint answered 400 invalid_grant",
		"device poll": "token endpoint answered 400 invalid_grant", "device authorization": "device authorization endpoint answered 400 invalid_grant",
		"revocation": "revocation endpoint answered 400 invalid_grant",
	}
	for call, do := range endpointCalls {
		srv := newAnswerServer(t, 400, `{"error":"invalid_grant","error_description":"secret detail"}`)
		err := do(t.Context(), New(loopbackPolicy, nil, nil), srv.URL)
		require.EqualError(t, err, want[call], call)
	}
}

// TestDevicePollStates: authorization_pending and slow_down are states,
// not errors; expired_token and access_denied are permanent errors with
// their code.
func TestDevicePollStates(t *testing.T) {
	for _, state := range []string{DevicePending, DeviceSlowDown} {
		srv := newAnswerServer(t, 400, `{"error":"`+state+`"}`)
		poll, err := New(loopbackPolicy, nil, nil).PollDevice(t.Context(), Request{ClientID: "c", TokenURL: srv.URL}, "dev")
		require.NoError(t, err)
		require.Equal(t, state, poll.State)
		require.Nil(t, poll.Token)
	}
	for _, code := range []string{"expired_token", "access_denied"} {
		srv := newAnswerServer(t, 400, `{"error":"`+code+`"}`)
		_, err := New(loopbackPolicy, nil, nil).PollDevice(t.Context(), Request{ClientID: "c", TokenURL: srv.URL}, "dev")
		var ue *Error
		require.ErrorAs(t, err, &ue)
		require.Equal(t, code, ue.Code)
		require.True(t, ue.Permanent)
	}
}

// TestDeviceSecondsAreCapped: expires_in and interval too large for a
// time.Duration are capped at MaxExpiresIn, in the device authorization
// answer and in the poll's token answer.
func TestDeviceSecondsAreCapped(t *testing.T) {
	const huge = "9300000000" // seconds whose nanoseconds overflow an int64
	srv := newAnswerServer(t, 200, `{"device_code":"d","user_code":"u","verification_uri":"https://idp.example/device","expires_in":`+huge+`,"interval":`+huge+`}`)
	da, err := New(loopbackPolicy, nil, nil).DeviceAuth(t.Context(), DeviceAuthRequest{Request: Request{ClientID: "c"}, DeviceURL: srv.URL})
	require.NoError(t, err)
	require.EqualValues(t, MaxExpiresIn, da.Interval)
	require.True(t, da.Expiry.After(time.Now().Add(60*365*24*time.Hour)), "expiry %s", da.Expiry)

	srv = newAnswerServer(t, 200, `{"access_token":"at","token_type":"bearer","expires_in":`+huge+`}`)
	poll, err := New(loopbackPolicy, nil, nil).PollDevice(t.Context(), Request{ClientID: "c", TokenURL: srv.URL}, "dev")
	require.NoError(t, err)
	require.EqualValues(t, MaxExpiresIn, TokenExpiresIn(poll.Token))
}

// TestDeviceAnswerIsChecked: a device authorization answer must hold
// device_code, user_code and an http(s) verification_uri.
func TestDeviceAnswerIsChecked(t *testing.T) {
	for body, reason := range map[string]string{
		`{"user_code":"u","verification_uri":"https://idp.example/device"}`:                                   "without device_code",
		`{"device_code":"d","user_code":"u","verification_uri":"javascript:alert(1)"}`:                        "not an http(s) URL",
		`{"device_code":"` + strings.Repeat("d", 3000) + `","user_code":"u","verification_uri":"https://x/"}`: "too long",
	} {
		srv := newAnswerServer(t, 200, body)
		_, err := New(loopbackPolicy, nil, nil).DeviceAuth(t.Context(), DeviceAuthRequest{Request: Request{ClientID: "c"}, DeviceURL: srv.URL})
		var ue *Error
		require.ErrorAs(t, err, &ue)
		require.True(t, ue.Permanent)
		require.Contains(t, ue.Error(), reason)
	}
}
