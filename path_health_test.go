package nebula

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

func healthOf(tb testing.TB, e *testEnv) (string, []string) {
	tb.Helper()
	resp := e.mustRequest(tb, logical.ReadOperation, "health", nil)
	var kinds []string
	for _, is := range resp.Data["issues"].([]map[string]any) {
		kinds = append(kinds, is["kind"].(string))
	}
	return resp.Data["status"].(string), kinds
}

func TestHealthStates(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	status, issues := healthOf(t, e)
	require.Equal(t, "healthy", status)
	require.Empty(t, issues)

	// A credential whose refresh fails.
	createClientCredentials(t, e, srv, "svc")
	srv.SetFailing(true)
	_, err := e.request(t, logical.ReadOperation, "token/svc", nil)
	requireKind(t, err, KindRefreshFailed)
	status, issues = healthOf(t, e)
	require.Equal(t, "degraded", status)
	require.Equal(t, []string{"refresh_failed"}, issues)
	srv.SetFailing(false)
	e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	status, _ = healthOf(t, e)
	require.Equal(t, "healthy", status, "a successful refresh clears the issue")

	// Rotation due (inside the warning period), then overdue.
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	e.mustRequest(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"interval": "1h", "warning_period": "10m"})
	e.clock.Advance(55 * time.Minute)
	_, issues = healthOf(t, e)
	require.Equal(t, []string{"rotation_due"}, issues)
	e.clock.Advance(10 * time.Minute)
	_, issues = healthOf(t, e)
	require.Equal(t, []string{"rotation_overdue"}, issues)

	// Storage failing: unhealthy.
	e.storage.failList.Store(true)
	status, issues = healthOf(t, e)
	require.Equal(t, "unhealthy", status)
	require.Contains(t, issues, "storage_error")
}

func TestMetricsMove(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	metrics := func() map[string]any {
		return e.mustRequest(t, logical.ReadOperation, "metrics", nil).Data
	}
	require.Equal(t, 0, metrics()["total_credentials"])

	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	createClientCredentials(t, e, srv, "svc")
	m := metrics()
	require.Equal(t, 2, m["total_credentials"])
	require.Equal(t, map[string]int{"api_key": 1, "oauth2": 1}, m["credentials_by_type"])

	e.mustRequest(t, logical.ReadOperation, "token/k", nil) // miss
	e.mustRequest(t, logical.ReadOperation, "token/k", nil) // hit
	m = metrics()
	require.EqualValues(t, 2, m["token_reads"])
	require.EqualValues(t, 1, m["cache_hits"])
	require.EqualValues(t, 1, m["cache_misses"])
	require.Equal(t, 0.5, m["cache_hit_rate"])

	e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	srv.SetFailing(true)
	_, err := e.request(t, logical.UpdateOperation, "refresh/svc", nil)
	require.Error(t, err)
	srv.SetFailing(false)
	m = metrics()
	require.EqualValues(t, 2, m["refresh_count"])
	require.EqualValues(t, 1, m["refresh_failures"])
	require.Greater(t, m["p99_refresh_ms"].(float64), 0.0)

	e.mustRequest(t, logical.UpdateOperation, "rotate/k", map[string]any{"api_key": "new"})
	_, err = e.request(t, logical.UpdateOperation, "rotate/k", nil) // no value, no webhook
	require.Error(t, err)
	require.EqualValues(t, 1, metrics()["rotations"])

	per := e.mustRequest(t, logical.ReadOperation, "metrics/k", nil).Data
	require.EqualValues(t, 2, per["usage_count"])
	require.NotNil(t, per["last_used"])
	per = e.mustRequest(t, logical.ReadOperation, "metrics/svc", nil).Data
	require.EqualValues(t, 2, per["refresh_count"])
	require.Contains(t, per["last_error"], "503")
	_, err = e.request(t, logical.ReadOperation, "metrics/missing", nil)
	requireKind(t, err, KindNotFound)
}
