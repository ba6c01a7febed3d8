package upstream

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// allowLoopback is a host policy for loopback test servers.
func allowLoopback(scheme, hostport string) bool {
	return scheme == "http" && strings.HasPrefix(hostport, "127.0.0.1:")
}

// testPolicy is a Policy from a HostAllowed function and the hosts it lists.
type testPolicy struct {
	allowed HostPolicy
	listed  []string // host names or addresses, without port
	private bool
}

func (p testPolicy) HostAllowed(scheme, hostport string) bool { return p.allowed(scheme, hostport) }

func (p testPolicy) HostListed(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	return slices.Contains(p.listed, host)
}

func (p testPolicy) PrivateNetworksAllowed() bool { return p.private }

// loopbackPolicy allows and lists 127.0.0.1 for plain http.
var loopbackPolicy = testPolicy{allowed: allowLoopback, listed: []string{"127.0.0.1"}}

func TestCheckURL(t *testing.T) {
	require.NoError(t, CheckURL(allowLoopback, "http://127.0.0.1:9/token"))
	require.ErrorContains(t, CheckURL(allowLoopback, "http://example.com/token"), "insecure_http_hosts")
	require.Error(t, CheckURL(allowLoopback, "/relative"))
}

func TestPolicyRefusesBeforeConnecting(t *testing.T) {
	c := New(testPolicy{allowed: func(string, string) bool { return false }}, nil, nil)
	_, err := c.Token(context.Background(), Request{Grant: "client_credentials", ClientID: "c", ClientSecret: "s", TokenURL: "http://127.0.0.1:9/token"})
	var ue *Error
	require.ErrorAs(t, err, &ue)
	require.True(t, ue.Permanent)
	require.Contains(t, ue.Error(), "not allowed")
}

func TestErrorsCarryNoBody(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_client","error_description":"secret s3cr3t-echo is wrong"}`)
	}))
	t.Cleanup(srv.Close)
	c := New(loopbackPolicy, nil, nil)
	c.Backoff = time.Millisecond
	_, err := c.Token(context.Background(), Request{Grant: "client_credentials", ClientID: "c", ClientSecret: "s3cr3t-echo", TokenURL: srv.URL, AuthStyle: "header"})
	require.EqualError(t, err, "token endpoint answered 401 invalid_client")
	require.EqualValues(t, 1, calls.Load(), "4xx answers are not retried")
}

func TestTransientFailuresAreRetried(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"at","token_type":"bearer","expires_in":60}`)
	}))
	t.Cleanup(srv.Close)
	c := New(loopbackPolicy, nil, nil)
	c.Backoff = time.Millisecond
	tok, err := c.Token(context.Background(), Request{Grant: "client_credentials", ClientID: "c", ClientSecret: "s", TokenURL: srv.URL, AuthStyle: "body"})
	require.NoError(t, err)
	require.Equal(t, "at", tok.AccessToken)
	require.EqualValues(t, 3, calls.Load())
}

func TestRedirectsToOtherHostsAreRefused(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the redirect must not be followed")
	}))
	t.Cleanup(target.Close)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, strings.Replace(target.URL, "127.0.0.1", "localhost", 1), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	c := New(testPolicy{allowed: func(scheme, host string) bool { return scheme == "http" }, listed: []string{"127.0.0.1", "localhost"}}, nil, nil)
	c.Attempts = 1
	_, err := c.Token(context.Background(), Request{Grant: "client_credentials", ClientID: "c", ClientSecret: "s", TokenURL: redirector.URL})
	require.Error(t, err)
}

func TestRevokeSendsRFC7009Form(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.NoError(t, r.ParseForm())
		user, pass, ok := r.BasicAuth()
		got = fmt.Sprintf("%s %s %v %s:%s", r.PostForm.Get("token"), r.PostForm.Get("token_type_hint"), ok, user, pass)
	}))
	t.Cleanup(srv.Close)
	c := New(loopbackPolicy, nil, nil)
	require.NoError(t, c.Revoke(context.Background(), Request{ClientID: "cid", ClientSecret: "sec"}, srv.URL, "rt-1", "refresh_token"))
	require.Equal(t, "rt-1 refresh_token true cid:sec", got)
}

func TestSafeCode(t *testing.T) {
	require.Equal(t, "invalid_grant", SafeCode("invalid_grant"))
	require.Empty(t, SafeCode(`bad"code`))
	require.Empty(t, SafeCode(strings.Repeat("x", 65)))
	require.Empty(t, SafeCode("line\nbreak"))
}
