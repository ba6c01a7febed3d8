package nebula

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

func TestDeadGrantOrTransientFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"invalid_grant", &upstream.Error{Status: 400, Code: "invalid_grant", Permanent: true}, "invalid_grant"},
		{"invalid_client", &upstream.Error{Status: 401, Code: "invalid_client", Permanent: true}, "invalid_client"},
		{"unauthorized_client", &upstream.Error{Status: 400, Code: "unauthorized_client", Permanent: true}, "unauthorized_client"},
		{"wrapped", &CredentialError{Kind: KindRefreshFailed, Msg: "x", Err: &upstream.Error{Status: 400, Code: "invalid_grant"}}, "invalid_grant"},
		{"500", &upstream.Error{Status: 500, Code: "server_error"}, ""},
		{"500 claiming invalid_grant", &upstream.Error{Status: 500, Code: "invalid_grant"}, ""},
		{"503", &upstream.Error{Status: 503, Code: "temporarily_unavailable"}, ""},
		{"429", &upstream.Error{Status: 429, Code: "invalid_grant"}, ""},
		{"network", &upstream.Error{Reason: "token endpoint unreachable: Post http://x"}, ""},
		{"timeout", &upstream.Error{Reason: "token endpoint timed out"}, ""},
		{"other 400", &upstream.Error{Status: 400, Code: "invalid_scope"}, ""},
		{"not upstream", errors.New("storage"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, deadGrantCode(tc.err))
		})
	}
}

func TestRevokedGrantNeedsReconnect(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	rcv := withNotifications(t, e)
	id, secret, refresh := obtainRefreshToken(t, srv)
	e.mustRequest(t, logical.CreateOperation, "creds/user", map[string]any{
		"type": "oauth2", "grant_type": "refresh_token", "client_id": id, "client_secret": secret,
		"refresh_token": refresh, "token_url": srv.TokenURL(), "auth_style": "header",
	})
	e.mustRequest(t, logical.ReadOperation, "token/user", nil)

	// The user revokes the application's access at the provider.
	require.Equal(t, 1, srv.RevokeGrants(id))
	e.clock.Advance(10 * time.Minute)
	_, err := e.request(t, logical.UpdateOperation, "refresh/user", nil)
	requireKind(t, err, KindRefreshFailed, "invalid_grant")
	calls := srv.TokenRequests()
	read := e.mustRequest(t, logical.ReadOperation, "creds/user", nil)
	require.Equal(t, "needs_reconnect", read.Data["status"])
	require.Equal(t, "invalid_grant", read.Data["reconnect"].(map[string]any)["error_code"])

	// No more upstream calls: background runs, reads, refresh/.
	_, err = e.b.refreshDue(t.Context(), e.storage)
	require.NoError(t, err)
	require.NoError(t, e.b.periodic(t.Context(), &logical.Request{Storage: e.storage}))
	_, err = e.request(t, logical.ReadOperation, "token/user", nil)
	requireKind(t, err, KindNoToken, "needs reconnecting", "invalid_grant", "creds/user")
	_, err = e.request(t, logical.UpdateOperation, "refresh/user", nil)
	requireKind(t, err, KindNoToken)
	require.Equal(t, calls, srv.TokenRequests(), "a dead grant is not sent upstream again")

	health := e.mustRequest(t, logical.ReadOperation, "health", nil)
	require.Equal(t, healthDegraded, health.Data["status"])
	require.Contains(t, health.Data["issues"], map[string]any{"kind": "needs_reconnect", "credential": "user",
		"message": reconnectIssues(loadCredForTest(t, e, "user"))[0].Message})
	metrics := e.mustRequest(t, logical.ReadOperation, "metrics", nil)
	require.EqualValues(t, 1, metrics.Data["needs_reconnect_marked"])

	// The same refresh token again is no new secret material.
	e.mustRequest(t, logical.UpdateOperation, "creds/user", map[string]any{"refresh_token": refresh})
	require.Equal(t, "needs_reconnect", e.mustRequest(t, logical.ReadOperation, "creds/user", nil).Data["status"])

	// The user connects again; the new refresh token reactivates it.
	_, _, fresh := obtainRefreshToken(t, srv)
	e.mustRequest(t, logical.UpdateOperation, "creds/user", map[string]any{"refresh_token": fresh})
	read = e.mustRequest(t, logical.ReadOperation, "creds/user", nil)
	require.Equal(t, "active", read.Data["status"])
	require.Nil(t, read.Data["reconnect"])
	require.Empty(t, read.Data["last_error"])
	tok := e.mustRequest(t, logical.ReadOperation, "token/user", nil)
	require.NotEmpty(t, tok.Data["access_token"])
	require.Greater(t, srv.TokenRequests(), calls)

	rcv.wait(t, 2)
	got := rcv.received()
	require.Len(t, got, 2, "needs_reconnect and recovered, nothing for the failure itself")
	require.Equal(t, eventNeedsReconnect, got[0].Event)
	require.Equal(t, "invalid_grant", got[0].ErrorCode)
	require.Equal(t, eventRecovered, got[1].Event)
	for _, ev := range got {
		require.True(t, ev.verified)
		require.Equal(t, "user", ev.Credential)
	}
}

func loadCredForTest(tb testing.TB, e *testEnv, name string) *credential {
	tb.Helper()
	c, err := loadCredential(tb.Context(), e.storage, name)
	require.NoError(tb, err)
	require.NotNil(tb, c)
	return c
}

func TestTransientFailuresNeverMarkDead(t *testing.T) {
	var status atomic.Int64
	var requests atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if s := int(status.Load()); s != http.StatusOK {
			w.WriteHeader(s)
			_, _ = w.Write([]byte(`{"error":"invalid_grant"}`)) // only 4xx answers other than 429 count
			return
		}
		_, _ = w.Write([]byte(`{"access_token":"at","token_type":"bearer","expires_in":600}`))
	}))
	t.Cleanup(ts.Close)
	e := newTestBackend(t)
	e.b.upstreamBackoff = time.Millisecond
	rcv := withNotifications(t, e)
	status.Store(http.StatusOK)
	e.mustRequest(t, logical.CreateOperation, "creds/svc", map[string]any{
		"type": "oauth2", "client_id": "c", "client_secret": "s", "token_url": ts.URL + "/token",
	})
	e.mustRequest(t, logical.ReadOperation, "token/svc", nil)

	for _, code := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		status.Store(int64(code))
		before := requests.Load()
		_, err := e.request(t, logical.UpdateOperation, "refresh/svc", nil)
		requireKind(t, err, KindRefreshFailed)
		require.Greater(t, requests.Load(), before, "%d: the request was made", code)
		require.Equal(t, "error", e.mustRequest(t, logical.ReadOperation, "creds/svc", nil).Data["status"], "%d is transient", code)
	}
	// No answer at all.
	e.mustRequest(t, logical.UpdateOperation, "creds/svc", map[string]any{"token_url": "http://127.0.0.1:1/token", "client_secret": "s2"})
	_, err := e.request(t, logical.UpdateOperation, "refresh/svc", nil)
	requireKind(t, err, KindRefreshFailed, "unreachable")
	require.NotEqual(t, "needs_reconnect", e.mustRequest(t, logical.ReadOperation, "creds/svc", nil).Data["status"])

	// refresh_failed is sent for the first failure of the series only.
	rcv.wait(t, 1)
	e.mustRequest(t, logical.UpdateOperation, "creds/svc", map[string]any{"token_url": ts.URL + "/token", "client_secret": "s"})
	status.Store(http.StatusOK)
	e.mustRequest(t, logical.UpdateOperation, "refresh/svc", nil)
	rcv.wait(t, 1)
	got := rcv.received()
	require.Len(t, got, 2)
	require.Equal(t, eventRefreshFailed, got[0].Event)
	require.Equal(t, eventRecovered, got[1].Event)
	require.Zero(t, e.b.notifier.deadGrants.Load())
}

func TestFlowReconnectsACredentialThatNeedsIt(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	rcv := withNotifications(t, e)
	_, query := signIn(t, e, srv, "user")
	_, err := callback(t, e, query)
	require.NoError(t, err)
	e.mustRequest(t, logical.UpdateOperation, "creds/user", map[string]any{"tags": "team:b"})
	// While it works, a flow for its name is refused.
	_, err = e.request(t, logical.UpdateOperation, "flows/start", map[string]any{
		"name": "user", "client_id": "x", "client_secret": "y", "auth_url": srv.AuthURL(), "token_url": srv.TokenURL(), "redirect_uri": testRedirectURI,
	})
	requireKind(t, err, KindDuplicate)

	id, _ := srv.WebClient()
	require.Equal(t, 1, srv.RevokeGrants(id))
	e.clock.Advance(10 * time.Minute)
	_, err = e.request(t, logical.UpdateOperation, "refresh/user", nil)
	requireKind(t, err, KindRefreshFailed, "invalid_grant")
	require.Equal(t, "needs_reconnect", loadCredForTest(t, e, "user").status(e.clock.Now()))

	// The user signs in again through a flow for the same name.
	flowID, query := signIn(t, e, srv, "user")
	done, err := callback(t, e, query)
	require.NoError(t, err)
	require.Equal(t, "completed", done.Data["status"], "flow %s", flowID)
	read := e.mustRequest(t, logical.ReadOperation, "creds/user", nil).Data
	require.Equal(t, "active", read["status"])
	require.EqualValues(t, 2, read["version"])
	require.Equal(t, []string{"team:b"}, read["tags"], "the credential keeps what it had")
	calls := srv.TokenRequestsFor("refresh_token")
	tok := e.mustRequest(t, logical.UpdateOperation, "refresh/user", nil).Data
	require.NotEmpty(t, tok["access_token"])
	require.Equal(t, calls+1, srv.TokenRequestsFor("refresh_token"))

	rcv.wait(t, 2)
	got := rcv.received()
	require.Equal(t, eventNeedsReconnect, got[0].Event)
	require.Equal(t, eventRecovered, got[1].Event)
}
