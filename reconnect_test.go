package nebula

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
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
	id, secret, refresh := srv.SignedInGrant(t)
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
	_, _, fresh := srv.SignedInGrant(t)
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
	webID, webSecret := srv.WebClient()
	reconnect := map[string]any{
		"client_id": webID, "client_secret": webSecret, "auth_url": srv.AuthURL(), "token_url": srv.TokenURL(),
		"auth_style": "header", "scopes": "openid,offline_access", "redirect_uri": testRedirectURI,
	}
	// While it works, neither a flow for its name nor a reconnect starts.
	_, err = e.request(t, logical.UpdateOperation, "flows/start", map[string]any{
		"name": "user", "client_id": "x", "client_secret": "y", "auth_url": srv.AuthURL(), "token_url": srv.TokenURL(), "redirect_uri": testRedirectURI,
	})
	requireKind(t, err, KindDuplicate)
	_, err = e.request(t, logical.UpdateOperation, "creds/user/reconnect", reconnect)
	requireKind(t, err, KindInvalidInput, "does not need reconnecting")

	require.Equal(t, 1, srv.RevokeGrants(webID))
	e.clock.Advance(10 * time.Minute)
	_, err = e.request(t, logical.UpdateOperation, "refresh/user", nil)
	requireKind(t, err, KindRefreshFailed, "invalid_grant")
	require.Equal(t, "needs_reconnect", loadCredForTest(t, e, "user").status(e.clock.Now()))

	// flows/start still only creates credentials: it points at reconnect.
	_, err = e.request(t, logical.UpdateOperation, "flows/start", map[string]any{
		"name": "user", "client_id": webID, "client_secret": webSecret, "auth_url": srv.AuthURL(), "token_url": srv.TokenURL(), "redirect_uri": testRedirectURI,
	})
	requireKind(t, err, KindDuplicate, "creds/user/reconnect")

	// The user signs in again through creds/user/reconnect.
	started := e.mustRequest(t, logical.UpdateOperation, "creds/user/reconnect", reconnect).Data
	require.Equal(t, true, started["reconnect"], "the flow says it reconnects")
	back := srv.Login(t, started["auth_url"].(string))
	u, err := url.Parse(back)
	require.NoError(t, err)
	done, err := callback(t, e, u.Query())
	require.NoError(t, err)
	require.Equal(t, "completed", done.Data["status"], "flow %s", started["flow_id"])
	read := e.mustRequest(t, logical.ReadOperation, "creds/user", nil).Data
	require.Equal(t, "active", read["status"])
	require.EqualValues(t, 2, read["version"])
	require.Equal(t, []string{"team:b"}, read["tags"], "the credential keeps what it had")
	require.Equal(t, "signed in by a user", read["description"])
	events, _ := e.auditEvents(t, map[string]any{"credential": "user", "action": "update"})
	require.NotEmpty(t, events)
	require.EqualValues(t, 2, events[0]["version"], "the reconnect is recorded as the update to version 2")
	require.Equal(t, true, events[0]["success"])
	calls := srv.TokenRequestsFor("refresh_token")
	tok := e.mustRequest(t, logical.UpdateOperation, "refresh/user", nil).Data
	require.NotEmpty(t, tok["access_token"])
	require.Equal(t, calls+1, srv.TokenRequestsFor("refresh_token"))

	rcv.wait(t, 2)
	got := rcv.received()
	require.Equal(t, eventNeedsReconnect, got[0].Event)
	require.Equal(t, eventRecovered, got[1].Event)
}

// TestFlowStartCannotTakeOverACredential: flows/start only creates
// credentials. A caller allowed flows/start, but not
// creds/<name>/reconnect, cannot replace the grant of a credential that
// needs reconnecting with its own client and account (before, flows/start
// for that name did), nor can a flow started for a free name take over a
// credential of that name created, and broken, while it ran.
func TestFlowStartCannotTakeOverACredential(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	webID, webSecret := srv.WebClient()
	start := func(name string) (*logical.Response, error) {
		return e.request(t, logical.UpdateOperation, "flows/start", map[string]any{
			"name": name, "client_id": webID, "client_secret": webSecret, "auth_url": srv.AuthURL(), "token_url": srv.TokenURL(),
			"auth_style": "header", "scopes": "openid,offline_access", "redirect_uri": testRedirectURI,
		})
	}
	// A flow started for a free name, left pending.
	pending, err := start("victim")
	require.NoError(t, err)
	// Meanwhile the owner creates victim, and its grant dies.
	_, query := signIn(t, e, srv, "owner-flow")
	_, err = callback(t, e, query)
	require.NoError(t, err)
	require.Equal(t, 1, srv.RevokeGrants(webID))
	_, err = e.request(t, logical.UpdateOperation, "refresh/owner-flow", nil)
	requireKind(t, err, KindRefreshFailed, "invalid_grant")
	before := loadCredForTest(t, e, "owner-flow")
	require.Equal(t, "needs_reconnect", before.status(e.clock.Now()))

	_, err = start("owner-flow")
	requireKind(t, err, KindDuplicate, "creds/owner-flow/reconnect")

	// The pending flow for "victim" completes after a credential of that
	// name appeared (created here by a write) and broke: it must not
	// replace it.
	e.mustRequest(t, logical.CreateOperation, "creds/victim", map[string]any{
		"type": "oauth2", "grant_type": "refresh_token", "client_id": webID, "client_secret": webSecret,
		"token_url": srv.TokenURL(), "auth_style": "header", "refresh_token": "revoked-refresh-token",
	})
	_, err = e.request(t, logical.UpdateOperation, "refresh/victim", nil)
	requireKind(t, err, KindRefreshFailed)
	victim := loadCredForTest(t, e, "victim")
	require.Equal(t, "needs_reconnect", victim.status(e.clock.Now()))
	back := srv.Login(t, pending.Data["auth_url"].(string))
	u, err := url.Parse(back)
	require.NoError(t, err)
	_, err = callback(t, e, u.Query())
	require.Error(t, err)
	require.Equal(t, "failed", flowStatus(t, e, pending.Data["flow_id"].(string))["status"])
	after := loadCredForTest(t, e, "victim")
	require.Equal(t, victim.Version, after.Version, "the credential was not replaced")
	require.Equal(t, "needs_reconnect", after.status(e.clock.Now()))
	require.Equal(t, before.Version, loadCredForTest(t, e, "owner-flow").Version)
}

// TestReconnectChecksItsCredential: creds/<name>/reconnect needs an
// existing oauth2 credential whose grant is dead, and the flow's own
// input; a flow whose credential is deleted before it completes fails.
func TestReconnectChecksItsCredential(t *testing.T) {
	e, srv := newOAuthEnv(t)
	webID, webSecret := srv.WebClient()
	input := map[string]any{
		"client_id": webID, "client_secret": webSecret, "auth_url": srv.AuthURL(), "token_url": srv.TokenURL(),
		"auth_style": "header", "scopes": "openid,offline_access", "redirect_uri": testRedirectURI,
	}
	_, err := e.request(t, logical.UpdateOperation, "creds/absent/reconnect", input)
	requireKind(t, err, KindNotFound)
	e.mustRequest(t, logical.CreateOperation, "creds/key", validCreds["api_key"])
	_, err = e.request(t, logical.UpdateOperation, "creds/key/reconnect", input)
	requireKind(t, err, KindInvalidInput, "only oauth2")
	_, err = e.request(t, logical.UpdateOperation, "creds/bad$name/reconnect", input)
	requireKind(t, err, KindInvalidInput)

	e.mustRequest(t, logical.CreateOperation, "creds/dead", map[string]any{
		"type": "oauth2", "grant_type": "refresh_token", "client_id": webID, "client_secret": webSecret,
		"token_url": srv.TokenURL(), "auth_style": "header", "refresh_token": "revoked-refresh-token",
	})
	_, err = e.request(t, logical.UpdateOperation, "refresh/dead", nil)
	requireKind(t, err, KindRefreshFailed)
	_, err = e.request(t, logical.UpdateOperation, "creds/dead/reconnect", map[string]any{"client_id": webID, "redirect_uri": testRedirectURI})
	requireKind(t, err, KindInvalidInput, "token_url")
	started := e.mustRequest(t, logical.UpdateOperation, "creds/dead/reconnect", input).Data
	e.mustRequest(t, logical.DeleteOperation, "creds/dead", nil)
	back := srv.Login(t, started["auth_url"].(string))
	u, err := url.Parse(back)
	require.NoError(t, err)
	_, err = callback(t, e, u.Query())
	require.Error(t, err)
	status := flowStatus(t, e, started["flow_id"].(string))
	require.Equal(t, "failed", status["status"])
	require.Contains(t, status["error"], "deleted while the flow ran")
	_, err = e.request(t, logical.ReadOperation, "creds/dead", nil)
	requireKind(t, err, KindNotFound) // the flow did not bring it back
	// The audit trail records the failed reconnect as an update, not as a
	// failed create.
	events, _ := e.auditEvents(t, map[string]any{"credential": "dead", "action": "update"})
	require.Len(t, events, 1)
	require.Equal(t, false, events[0]["success"])
	require.Contains(t, events[0]["error"], "deleted while the flow ran")
}
