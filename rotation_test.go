package nebula

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// tokenOf reads a credential's current token value.
func (e *testEnv) tokenOf(tb testing.TB, name string) string {
	tb.Helper()
	return e.mustRequest(tb, logical.ReadOperation, "token/"+name, nil).Data["access_token"].(string)
}

// versionsOf lists the stored secret versions of a credential.
func (e *testEnv) versionsOf(tb testing.TB, name string) []string {
	tb.Helper()
	keys, err := e.storage.List(context.Background(), secretPrefix+name+"/")
	require.NoError(tb, err)
	return keys
}

func TestRotateWithSuppliedValues(t *testing.T) {
	for _, tc := range []struct {
		typ, field string
		input      map[string]any
	}{
		{"api_key", "api_key", validCreds["api_key"]},
		{"basic_auth", "password", validCreds["basic_auth"]},
		{"bearer", "token", validCreds["bearer"]},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			e := newTestBackend(t)
			created := e.mustRequest(t, logical.CreateOperation, "creds/c", tc.input)
			resp := e.mustRequest(t, logical.UpdateOperation, "rotate/c", map[string]any{tc.field: "rotated-value"})
			require.Equal(t, created.Data["id"], resp.Data["previous_id"])
			require.NotEqual(t, created.Data["id"], resp.Data["id"])
			require.Equal(t, 2, resp.Data["version"])
			requireNoSecrets(t, resp.Data)
			require.Equal(t, "rotated-value", e.tokenOf(t, "c"))
			require.Equal(t, []string{resp.Data["id"].(string)}, e.versionsOf(t, "c"), "immediate destroys the previous version")

			_, err := e.request(t, logical.ReadOperation, "token/c", map[string]any{"version": "previous"})
			requireKind(t, err, KindNotFound)
		})
	}
}

func TestRotateNeedsValuesOrWebhook(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	_, err := e.request(t, logical.UpdateOperation, "rotate/k", nil)
	requireKind(t, err, KindInvalidInput, "api_key", "webhook")
	_, err = e.request(t, logical.UpdateOperation, "rotate/k", map[string]any{"password": "x"})
	requireKind(t, err, KindInvalidInput, "password")
	_, err = e.request(t, logical.UpdateOperation, "rotate/missing", map[string]any{"api_key": "x"})
	requireKind(t, err, KindNotFound)
	require.Empty(t, e.walEntries(t), "failed rotations leave no WAL entry")
	require.Equal(t, secretKeyValue, e.tokenOf(t, "k"))
}

func TestGeneratedType(t *testing.T) {
	e := newTestBackend(t)
	created := e.mustRequest(t, logical.CreateOperation, "creds/g", map[string]any{"type": "generated", "length": 40, "charset": "hex"})
	require.NotContains(t, created.Data, "value")
	first := e.tokenOf(t, "g")
	require.Regexp(t, `^[0-9a-f]{40}$`, first)

	e.mustRequest(t, logical.UpdateOperation, "rotate/g", nil)
	second := e.tokenOf(t, "g")
	require.Regexp(t, `^[0-9a-f]{40}$`, second)
	require.NotEqual(t, first, second)

	_, err := e.request(t, logical.CreateOperation, "creds/short", map[string]any{"type": "generated", "length": 4})
	requireKind(t, err, KindInvalidInput, "length")
}

func TestBlueGreenKeepsPreviousUntilGraceEnds(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	policy := e.mustRequest(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"strategy": "blue_green", "grace_period": "30m"})
	require.EqualValues(t, 1800, policy.Data["grace_period"])

	e.mustRequest(t, logical.UpdateOperation, "rotate/k", map[string]any{"api_key": "green"})
	require.Equal(t, "green", e.tokenOf(t, "k"))
	prev := e.mustRequest(t, logical.ReadOperation, "token/k", map[string]any{"version": "previous"})
	require.Equal(t, secretKeyValue, prev.Data["access_token"])
	require.Equal(t, 1, prev.Data["version"])
	require.Len(t, e.versionsOf(t, "k"), 2)

	e.clock.Advance(29 * time.Minute)
	e.runPeriodic(t)
	e.mustRequest(t, logical.ReadOperation, "token/k", map[string]any{"version": "previous"})

	e.clock.Advance(2 * time.Minute)
	_, err := e.request(t, logical.ReadOperation, "token/k", map[string]any{"version": "previous"})
	requireKind(t, err, KindNotFound, "grace")
	e.runPeriodic(t)
	require.Len(t, e.versionsOf(t, "k"), 1, "the scheduler destroys the previous version after its grace")
	require.Nil(t, e.mustRequest(t, logical.ReadOperation, "creds/k/rotation", nil).Data["previous_version"])

	// A rotation during a grace period destroys the older previous version.
	e.mustRequest(t, logical.UpdateOperation, "rotate/k", map[string]any{"api_key": "blue"})
	e.mustRequest(t, logical.UpdateOperation, "rotate/k", map[string]any{"api_key": "green-2"})
	require.Len(t, e.versionsOf(t, "k"), 2)
	prev = e.mustRequest(t, logical.ReadOperation, "token/k", map[string]any{"version": "previous"})
	require.Equal(t, "blue", prev.Data["access_token"])
}

func TestSecretChangeOnUpdateFollowsTheStrategy(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	e.mustRequest(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"strategy": "blue_green"})
	e.mustRequest(t, logical.UpdateOperation, "creds/k", map[string]any{"api_key": "written-again"})
	prev := e.mustRequest(t, logical.ReadOperation, "token/k", map[string]any{"version": "previous"})
	require.Equal(t, secretKeyValue, prev.Data["access_token"])
}

func (e *testEnv) runPeriodic(tb testing.TB) {
	tb.Helper()
	require.NoError(tb, e.b.periodic(context.Background(), &logical.Request{Storage: e.storage}))
}

func (e *testEnv) walEntries(tb testing.TB) []string {
	tb.Helper()
	keys, err := framework.ListWAL(context.Background(), e.storage)
	require.NoError(tb, err)
	return keys
}

func TestIntervalPolicyWarningAndRotateAt(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/g", map[string]any{"type": "generated"})
	first := e.tokenOf(t, "g")
	created := e.clock.Now()
	policy := e.mustRequest(t, logical.UpdateOperation, "creds/g/rotation", map[string]any{"interval": "1h", "warning_period": "10m"})
	require.Equal(t, created.Add(time.Hour).Format(time.RFC3339), policy.Data["next_rotation_at"])
	require.Equal(t, false, policy.Data["warning"])

	e.clock.Advance(49 * time.Minute)
	require.Equal(t, false, e.mustRequest(t, logical.ReadOperation, "creds/g/rotation", nil).Data["warning"])
	e.clock.Advance(2 * time.Minute)
	require.Equal(t, true, e.mustRequest(t, logical.ReadOperation, "creds/g/rotation", nil).Data["warning"])
	e.runPeriodic(t)
	require.Equal(t, first, e.tokenOf(t, "g"), "not due yet")

	e.clock.Advance(10 * time.Minute)
	e.runPeriodic(t)
	second := e.tokenOf(t, "g")
	require.NotEqual(t, first, second, "rotated on schedule")
	read := e.mustRequest(t, logical.ReadOperation, "creds/g/rotation", nil)
	require.Equal(t, e.clock.Now().UTC().Format(time.RFC3339), read.Data["last_rotated_at"])
	require.Equal(t, e.clock.Now().Add(time.Hour).UTC().Format(time.RFC3339), read.Data["next_rotation_at"])
	require.Equal(t, false, read.Data["warning"])
	require.EqualValues(t, 1, e.b.stats.rotations.Load())

	// A one-off rotate_at earlier than the interval.
	at := e.clock.Now().Add(20 * time.Minute)
	e.mustRequest(t, logical.UpdateOperation, "creds/g/rotation", map[string]any{"rotate_at": at.Format(time.RFC3339)})
	require.Equal(t, at.UTC().Format(time.RFC3339), e.mustRequest(t, logical.ReadOperation, "creds/g/rotation", nil).Data["next_rotation_at"])
	e.clock.Advance(21 * time.Minute)
	e.runPeriodic(t)
	require.NotEqual(t, second, e.tokenOf(t, "g"))
	read = e.mustRequest(t, logical.ReadOperation, "creds/g/rotation", nil)
	require.Nil(t, read.Data["rotate_at"], "a one-off time is used once")
	require.Equal(t, e.clock.Now().Add(time.Hour).UTC().Format(time.RFC3339), read.Data["next_rotation_at"])
}

func TestRotationPolicyValidation(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	for _, tc := range []struct {
		data    map[string]any
		mention string
	}{
		{map[string]any{"interval": "10s"}, "interval"},
		{map[string]any{"interval": "1h", "warning_period": "2h"}, "warning_period"},
		{map[string]any{"strategy": "canary"}, "strategy"},
		{map[string]any{"grace_period": "1000h"}, "grace_period"},
		{map[string]any{"webhook_url": "http://hooks.example.com/x", "webhook_secret": "0123456789abcdef"}, "webhook_url"},
		{map[string]any{"webhook_url": "https://hooks.example.com/x"}, "webhook_secret"},
	} {
		_, err := e.request(t, logical.UpdateOperation, "creds/k/rotation", tc.data)
		requireKind(t, err, KindInvalidInput, tc.mention)
	}
	_, err := e.request(t, logical.UpdateOperation, "creds/nope/rotation", map[string]any{"interval": "1h"})
	requireKind(t, err, KindNotFound)
}

// webhookServer is an https rotation webhook on loopback that checks the
// engine's signature and answers as its mode says.
type webhookServer struct {
	*httptest.Server
	secret string
	calls  atomic.Int64
	mu     sync.Mutex
	mode   string // guarded by mu: ok, fail, slow, garbage, missing, extra
	value  string // guarded by mu
	block  chan struct{}
}

func newWebhook(tb testing.TB, e *testEnv) *webhookServer {
	tb.Helper()
	w := &webhookServer{secret: "webhook-signing-key-123", mode: "ok", value: "from-webhook"}
	w.Server = httptest.NewTLSServer(http.HandlerFunc(w.serve))
	tb.Cleanup(w.Close)
	e.b.upstreamRoots = w.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	e.b.webhookTimeout = 2 * time.Second
	return w
}

func (w *webhookServer) set(mode, value string) {
	w.mu.Lock()
	w.mode, w.value = mode, value
	w.mu.Unlock()
}

func (w *webhookServer) serve(rw http.ResponseWriter, r *http.Request) {
	w.calls.Add(1)
	body, _ := io.ReadAll(r.Body)
	ts, _ := strconv.ParseInt(r.Header.Get("X-Nebula-Timestamp"), 10, 64)
	mac := hmac.New(sha256.New, []byte(w.secret))
	fmt.Fprintf(mac, "%d.", ts)
	mac.Write(body)
	if !hmac.Equal([]byte(r.Header.Get("X-Nebula-Signature")), []byte("sha256="+hex.EncodeToString(mac.Sum(nil)))) {
		http.Error(rw, "bad signature", http.StatusUnauthorized)
		return
	}
	var req map[string]any
	if json.Unmarshal(body, &req) != nil || req["credential"] == nil {
		http.Error(rw, "bad request", http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	mode, value, block := w.mode, w.value, w.block
	w.mu.Unlock()
	if block != nil {
		<-block
	}
	switch mode {
	case "fail":
		http.Error(rw, `{"error":"internal","leak":"`+value+`"}`, http.StatusInternalServerError)
	case "slow":
		time.Sleep(3 * time.Second) // past the test's webhook timeout
	case "garbage":
		fmt.Fprint(rw, "<html>"+value+"</html>")
	case "missing":
		fmt.Fprint(rw, `{"other":"x"}`)
	case "extra":
		fmt.Fprintf(rw, `{"api_key":%q,"param_name":"X"}`, value)
	default:
		fmt.Fprintf(rw, `{"api_key":%q}`, value)
	}
}

func setupWebhookCredential(tb testing.TB, e *testEnv, w *webhookServer, name string, extra map[string]any) {
	tb.Helper()
	// The webhook is https on loopback: listed, the engine may dial it.
	e.mustRequest(tb, logical.UpdateOperation, "config", map[string]any{"insecure_http_hosts": "", "allowed_hosts": "127.0.0.1"})
	e.mustRequest(tb, logical.CreateOperation, "creds/"+name, validCreds["api_key"])
	policy := map[string]any{"webhook_url": w.URL + "/rotate", "webhook_secret": w.secret}
	for k, v := range extra {
		policy[k] = v
	}
	e.mustRequest(tb, logical.UpdateOperation, "creds/"+name+"/rotation", policy)
}

func TestWebhookRotation(t *testing.T) {
	e := newTestBackend(t)
	w := newWebhook(t, e)
	setupWebhookCredential(t, e, w, "k", nil)
	read := e.mustRequest(t, logical.ReadOperation, "creds/k/rotation", nil)
	require.NotContains(t, fmt.Sprint(read.Data), w.secret)

	e.mustRequest(t, logical.UpdateOperation, "rotate/k", nil)
	require.Equal(t, "from-webhook", e.tokenOf(t, "k"))

	for _, mode := range []struct{ mode, mention string }{
		{"fail", "answered 500"},
		{"slow", "timed out"},
		{"garbage", "not a JSON object"},
		{"missing", "other"},
		{"extra", "param_name"},
	} {
		t.Run(mode.mode, func(t *testing.T) {
			w.set(mode.mode, "leaked-secret-value")
			_, err := e.request(t, logical.UpdateOperation, "rotate/k", nil)
			requireKind(t, err, KindRotationFailed, "webhook", mode.mention)
			require.NotContains(t, err.Error(), "leaked-secret-value")
			require.Equal(t, "from-webhook", e.tokenOf(t, "k"), "the current secret is untouched")
			require.Len(t, e.versionsOf(t, "k"), 2, "current version and the webhook secret only")
			require.Empty(t, e.walEntries(t))
		})
	}
}

func TestScheduledRotationFailuresBackOff(t *testing.T) {
	e := newTestBackend(t)
	w := newWebhook(t, e)
	setupWebhookCredential(t, e, w, "k", map[string]any{"interval": "1h"})
	w.set("fail", "x")

	e.clock.Advance(time.Hour)
	require.Error(t, e.b.periodicRotation(context.Background(), e.storage))
	require.EqualValues(t, 1, w.calls.Load())
	read := e.mustRequest(t, logical.ReadOperation, "creds/k/rotation", nil)
	require.Equal(t, 1, read.Data["failures"])
	require.Contains(t, read.Data["last_error"], "answered 500")
	require.Equal(t, e.clock.Now().Add(time.Minute).UTC().Format(time.RFC3339), read.Data["next_attempt_at"])

	e.clock.Advance(30 * time.Second)
	e.runPeriodic(t)
	require.EqualValues(t, 1, w.calls.Load(), "no retry before the backoff ends")

	e.clock.Advance(31 * time.Second)
	_ = e.b.periodicRotation(context.Background(), e.storage)
	require.EqualValues(t, 2, w.calls.Load())
	require.Equal(t, 2, e.mustRequest(t, logical.ReadOperation, "creds/k/rotation", nil).Data["failures"])

	w.set("ok", "recovered")
	e.clock.Advance(3 * time.Minute)
	e.runPeriodic(t)
	require.Equal(t, "recovered", e.tokenOf(t, "k"))
	read = e.mustRequest(t, logical.ReadOperation, "creds/k/rotation", nil)
	require.Equal(t, 0, read.Data["failures"])
	require.Equal(t, "", read.Data["last_error"])
	require.EqualValues(t, 2, e.b.stats.rotationFailures.Load())
}

func TestConcurrentRotationIsRefused(t *testing.T) {
	e := newTestBackend(t)
	w := newWebhook(t, e)
	e.b.webhookTimeout = 10 * time.Second
	setupWebhookCredential(t, e, w, "k", nil)
	w.mu.Lock()
	w.block = make(chan struct{})
	w.mu.Unlock()

	done := make(chan error, 1)
	go func() {
		_, err := e.request(t, logical.UpdateOperation, "rotate/k", nil)
		done <- err
	}()
	require.Eventually(t, func() bool { return w.calls.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
	_, err := e.request(t, logical.UpdateOperation, "rotate/k", map[string]any{"api_key": "other"})
	requireKind(t, err, KindRotationInProgress)
	close(w.block)
	require.NoError(t, <-done)
	require.Equal(t, "from-webhook", e.tokenOf(t, "k"))
}

func TestOAuth2Rotation(t *testing.T) {
	for _, strategy := range []string{"immediate", "blue_green"} {
		t.Run(strategy, func(t *testing.T) {
			e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(time.Hour))
			id, secret, refresh := srv.SignedInGrant(t)
			e.mustRequest(t, logical.CreateOperation, "creds/o", map[string]any{
				"type": "oauth2", "grant_type": "refresh_token", "client_id": id, "client_secret": secret,
				"refresh_token": refresh, "token_url": srv.TokenURL(), "revocation_url": srv.RevocationURL(), "auth_style": "header",
			})
			e.mustRequest(t, logical.UpdateOperation, "creds/o/rotation", map[string]any{"strategy": strategy, "grace_period": "10m"})
			old := e.tokenOf(t, "o")

			e.mustRequest(t, logical.UpdateOperation, "rotate/o", nil)
			fresh := e.tokenOf(t, "o")
			require.NotEqual(t, old, fresh)
			if strategy == "immediate" {
				require.EqualValues(t, 2, srv.RevocationRequests(), "old refresh and access tokens revoked")
				return
			}
			require.Zero(t, srv.RevocationRequests(), "blue/green keeps the old tokens during grace")
			prev := e.mustRequest(t, logical.ReadOperation, "token/o", map[string]any{"version": "previous"})
			require.Equal(t, old, prev.Data["access_token"])
			e.clock.Advance(11 * time.Minute)
			e.runPeriodic(t)
			require.EqualValues(t, 2, srv.RevocationRequests(), "revoked when the grace period ends")
		})
	}
}

// TestRotationCrashAfterEachStep interrupts a rotation after each step, as
// a crash would, then runs Vault's WAL rollback: the credential serves a
// working token throughout, and ends consistent, with the rotation either
// finished or rolled back.
func TestRotationCrashAfterEachStep(t *testing.T) {
	for _, tc := range []struct {
		step     string
		finished bool
	}{
		{"wal", false},
		{"obtained", false},
		{"staged", true},
		{"committed", true},
		{"cleaned", true},
	} {
		t.Run(tc.step, func(t *testing.T) {
			e := newTestBackend(t)
			e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
			e.b.rotationHook = func(step string) error {
				if step == tc.step {
					return fmt.Errorf("crash after %s", step)
				}
				return nil
			}
			_, err := e.request(t, logical.UpdateOperation, "rotate/k", map[string]any{"api_key": "new-key"})
			require.ErrorContains(t, err, "crash after "+tc.step)
			require.Len(t, e.walEntries(t), 1, "the WAL entry survives the crash")
			token := e.tokenOf(t, "k")
			require.Contains(t, []string{secretKeyValue, "new-key"}, token, "a working token is served mid-rotation")

			// A restarted engine: no memory of the rotation.
			e.b.rotationHook = nil
			e.b.purgeCache()
			resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
				Operation: logical.RollbackOperation, Storage: e.storage, Data: map[string]any{"immediate": true},
			})
			require.NoError(t, err)
			require.False(t, resp != nil && resp.IsError(), "rollback: %v", resp)
			require.Empty(t, e.walEntries(t))

			read := e.mustRequest(t, logical.ReadOperation, "creds/k", nil)
			want, version := secretKeyValue, 1
			if tc.finished {
				want, version = "new-key", 2
			}
			require.Equal(t, version, read.Data["version"])
			require.Equal(t, want, e.tokenOf(t, "k"))
			require.Equal(t, []string{read.Data["id"].(string)}, e.versionsOf(t, "k"), "no orphan versions")

			// And the credential rotates normally afterwards.
			e.mustRequest(t, logical.UpdateOperation, "rotate/k", map[string]any{"api_key": "after"})
			require.Equal(t, "after", e.tokenOf(t, "k"))
		})
	}
}

// TestRotationStaysScheduledAcrossEarlyPops: the scheduler pops a whole
// minute at a time, so it can look at a credential seconds before it is
// due; the credential must stay scheduled and rotate on a later run.
func TestRotationStaysScheduledAcrossEarlyPops(t *testing.T) {
	e := newTestBackend(t)
	e.clock.Advance(500 * time.Millisecond)
	e.mustRequest(t, logical.CreateOperation, "creds/g", map[string]any{"type": "generated"})
	e.mustRequest(t, logical.UpdateOperation, "creds/g/rotation", map[string]any{"interval": "1m"})
	first := e.tokenOf(t, "g")
	e.clock.Advance(60*time.Second - 100*time.Millisecond) // same minute, just before due
	e.runPeriodic(t)
	require.Equal(t, first, e.tokenOf(t, "g"))
	seen := map[string]bool{first: true}
	for range 5 {
		e.clock.Advance(60 * time.Second)
		e.runPeriodic(t)
		seen[e.tokenOf(t, "g")] = true
	}
	require.Len(t, seen, 6, "a new secret every minute")
}

// rollback runs Vault's rollback operation (periodic work, then the WAL
// entries regardless of age) and returns its error, if any.
func (e *testEnv) rollback(tb testing.TB) error {
	tb.Helper()
	resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RollbackOperation, Storage: e.storage, Data: map[string]any{"immediate": true},
	})
	if err == nil && resp != nil && resp.IsError() {
		err = resp.Error()
	}
	return err
}

// TestRollbackLeavesAnInFlightRotationAlone (issue 12 item 12): Vault's WAL
// rollback of a rotation still running in this process (slower than
// WALRollbackMinAge) must not finish it underneath the rotation, which
// would then delete the version that just became current.
func TestRollbackLeavesAnInFlightRotationAlone(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	paused, resume := make(chan struct{}), make(chan struct{})
	e.b.rotationHook = func(step string) error {
		if step == "staged" {
			close(paused)
			<-resume
		}
		return nil
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.request(t, logical.UpdateOperation, "rotate/k", map[string]any{"api_key": "new-key"})
		done <- err
	}()
	select {
	case <-paused:
	case <-time.After(10 * time.Second):
		t.Fatal("the rotation did not reach its staged step")
	}
	require.Len(t, e.walEntries(t), 1)
	err := e.rollback(t)
	require.ErrorContains(t, err, "rotation_in_progress", "the rollback is refused, so Vault retries it later")
	require.Len(t, e.walEntries(t), 1, "the WAL entry stays for a later rollback")
	close(resume)
	require.NoError(t, <-done)

	read := e.mustRequest(t, logical.ReadOperation, "creds/k", nil)
	require.Equal(t, 2, read.Data["version"])
	require.Equal(t, "new-key", e.tokenOf(t, "k"))
	require.Equal(t, []string{read.Data["id"].(string)}, e.versionsOf(t, "k"))
	require.Empty(t, e.walEntries(t), "the rotation finished its WAL entry")
	require.NoError(t, e.rollback(t))
	require.Equal(t, "new-key", e.tokenOf(t, "k"))
}

// TestRollbackKeepsServedVersions (issue 12 item 12): a late rollback of a
// rotation whose staged version is still served (current, or previous in
// its grace period) deletes nothing that is served.
func TestRollbackKeepsServedVersions(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	e.mustRequest(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"strategy": "blue_green", "grace_period": "30m"})
	// A rotation interrupted after its commit leaves its WAL entry behind.
	e.b.rotationHook = func(step string) error {
		if step == "committed" {
			return fmt.Errorf("crash after %s", step)
		}
		return nil
	}
	_, err := e.request(t, logical.UpdateOperation, "rotate/k", map[string]any{"api_key": "green"})
	require.ErrorContains(t, err, "crash after committed")
	e.b.rotationHook = nil
	// Its version is current; a direct delete of it is refused.
	current := e.mustRequest(t, logical.ReadOperation, "creds/k", nil).Data["id"].(string)
	lock := e.b.lock("k")
	lock.Lock()
	e.b.deleteVersion(context.Background(), e.storage, "k", current)
	lock.Unlock()
	require.Equal(t, "green", e.tokenOf(t, "k"), "the current version is not deleted")

	// The next rotation makes it the previous version, served for its grace.
	e.mustRequest(t, logical.UpdateOperation, "rotate/k", map[string]any{"api_key": "blue"})
	require.NoError(t, e.rollback(t))
	require.Empty(t, e.walEntries(t))
	require.Equal(t, "blue", e.tokenOf(t, "k"))
	prev := e.mustRequest(t, logical.ReadOperation, "token/k", map[string]any{"version": "previous"})
	require.Equal(t, "green", prev.Data["access_token"], "the rollback kept the served previous version")
	require.Len(t, e.versionsOf(t, "k"), 2)
}
