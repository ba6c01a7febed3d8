package nebula

import (
	"bytes"
	"context"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// scrape reads metrics?format=prometheus and parses the body back.
func scrape(tb testing.TB, e *testEnv) (string, map[string]*dto.MetricFamily) {
	tb.Helper()
	resp := e.mustRequest(tb, logical.ReadOperation, "metrics", map[string]any{"format": "prometheus"})
	require.Equal(tb, 200, resp.Data[logical.HTTPStatusCode])
	require.Equal(tb, string(expfmt.NewFormat(expfmt.TypeTextPlain)), resp.Data[logical.HTTPContentType])
	body := resp.Data[logical.HTTPRawBody].([]byte)
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(tb, err, "the body is the text exposition format")
	return string(body), families
}

// sample is the value of the family's metric with exactly these labels.
func sample(tb testing.TB, families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	tb.Helper()
	mf, ok := families[name]
	require.True(tb, ok, "family %s is exposed", name)
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	var seen []string
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			if lp.GetValue() != "" {
				got[lp.GetName()] = lp.GetValue()
			}
		}
		seen = append(seen, toLabelSet(got).String())
		if !equalLabels(got, want) {
			continue
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	tb.Fatalf("%s has no sample %v; it has %v", name, want, seen)
	return 0
}

func toLabelSet(m map[string]string) model.LabelSet {
	ls := model.LabelSet{}
	for k, v := range m {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	return ls
}

func equalLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestMetricsPrometheusFamilies(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	const secretWrong = "wrong-s3cret-for-invalid-client"
	e.mustRequest(t, logical.CreateOperation, "creds/payments-api-key", validCreds["api_key"])
	e.mustRequest(t, logical.CreateOperation, "creds/ledger-basic", validCreds["basic_auth"])
	createClientCredentials(t, e, srv, "billing-oauth")
	id, clientSecret := srv.ClientCredentialsClient()
	e.mustRequest(t, logical.CreateOperation, "creds/rejected-oauth", map[string]any{
		"type": "oauth2", "client_id": id, "client_secret": secretWrong, "token_url": srv.TokenURL(), "auth_style": "header",
	})

	var served []string
	for range 3 {
		resp := e.mustRequest(t, logical.ReadOperation, "token/payments-api-key", nil)
		served = append(served, resp.Data["header_value"].(string))
	}
	resp := e.mustRequest(t, logical.ReadOperation, "token/billing-oauth", nil)
	served = append(served, resp.Data["access_token"].(string))
	_, err := e.request(t, logical.ReadOperation, "token/missing-cred", nil)
	requireKind(t, err, KindNotFound)
	_, err = e.request(t, logical.ReadOperation, "token/rejected-oauth", nil)
	requireKind(t, err, KindRefreshFailed)
	e.mustRequest(t, logical.UpdateOperation, "rotate/ledger-basic", map[string]any{"password": "rotated-pa55w0rd-new"})
	_, err = e.request(t, logical.UpdateOperation, "rotate/payments-api-key", nil) // no value, no webhook
	require.Error(t, err)

	// Stored state the scrape counts: a flow past its expiry, mirror states.
	ctx := context.Background()
	require.NoError(t, saveFlow(ctx, e.storage, &flow{ID: "f-1", Name: "later", Grant: "authorization_code", Status: flowPending,
		CreatedAt: e.clock.Now(), ExpiresAt: e.clock.Now().Add(-time.Minute)}, ""))
	for target, status := range map[string]string{"aws": syncSynced, "azure": syncError} {
		entry, err := logical.StorageEntryJSON(mirrorStateKey("payments-api-key", target), &mirrorState{SyncStatus: status})
		require.NoError(t, err)
		require.NoError(t, e.storage.Put(ctx, entry))
	}

	body, families := scrape(t, e)

	types := map[string]dto.MetricType{
		"nebula_token_reads_total":            dto.MetricType_COUNTER,
		"nebula_cache_hits_total":             dto.MetricType_COUNTER,
		"nebula_cache_misses_total":           dto.MetricType_COUNTER,
		"nebula_cache_size":                   dto.MetricType_GAUGE,
		"nebula_refreshes_total":              dto.MetricType_COUNTER,
		"nebula_refresh_duration_seconds":     dto.MetricType_HISTOGRAM,
		"nebula_rotations_total":              dto.MetricType_COUNTER,
		"nebula_credentials":                  dto.MetricType_GAUGE,
		"nebula_flows":                        dto.MetricType_GAUGE,
		"nebula_mirror_credentials":           dto.MetricType_GAUGE,
		"nebula_audit_events_buffered":        dto.MetricType_GAUGE,
		"nebula_audit_events_dropped_total":   dto.MetricType_COUNTER,
		"nebula_audit_write_failing":          dto.MetricType_GAUGE,
		"nebula_notifications_total":          dto.MetricType_COUNTER,
		"nebula_notifications_pending":        dto.MetricType_GAUGE,
		"nebula_needs_reconnect_marked_total": dto.MetricType_COUNTER,
	}
	for name, typ := range types {
		require.Contains(t, families, name)
		require.Equal(t, typ, families[name].GetType(), name)
		require.Contains(t, body, "# TYPE "+name+" ")
	}
	for name := range families {
		require.True(t, strings.HasPrefix(name, "nebula_"), name)
	}

	require.EqualValues(t, 4, sample(t, families, "nebula_token_reads_total", "result", "success"))
	require.EqualValues(t, 1, sample(t, families, "nebula_token_reads_total", "result", "not_found"))
	require.EqualValues(t, 1, sample(t, families, "nebula_token_reads_total", "result", "refresh_failed"))
	require.EqualValues(t, 2, sample(t, families, "nebula_cache_hits_total"))
	require.EqualValues(t, 4, sample(t, families, "nebula_cache_misses_total"))
	require.EqualValues(t, 2, sample(t, families, "nebula_cache_size"))
	require.EqualValues(t, 1, sample(t, families, "nebula_refreshes_total", "outcome", "success"))
	require.EqualValues(t, 1, sample(t, families, "nebula_refreshes_total", "outcome", "failure", "code", "refresh_failed", "upstream_error", "invalid_client"))
	require.EqualValues(t, 2, sample(t, families, "nebula_refresh_duration_seconds"))
	require.EqualValues(t, 1, sample(t, families, "nebula_rotations_total", "outcome", "success"))
	require.EqualValues(t, 0, sample(t, families, "nebula_rotations_total", "outcome", "failure"), "an invalid_input rotation is not a failed rotation")
	require.EqualValues(t, 1, sample(t, families, "nebula_credentials", "type", "api_key", "status", "active"))
	require.EqualValues(t, 1, sample(t, families, "nebula_credentials", "type", "basic_auth", "status", "active"))
	require.EqualValues(t, 1, sample(t, families, "nebula_credentials", "type", "oauth2", "status", "active"))
	require.EqualValues(t, 1, sample(t, families, "nebula_credentials", "type", "oauth2", "status", "needs_reconnect"), "invalid_client: a dead client (reconnect.go)")
	require.EqualValues(t, 1, sample(t, families, "nebula_flows", "status", "expired"))
	require.EqualValues(t, 1, sample(t, families, "nebula_mirror_credentials", "target", "aws", "status", "synced"))
	require.EqualValues(t, 1, sample(t, families, "nebula_mirror_credentials", "target", "azure", "status", "error"))
	require.EqualValues(t, 0, sample(t, families, "nebula_audit_events_dropped_total"))
	require.EqualValues(t, 0, sample(t, families, "nebula_audit_write_failing"))
	require.Greater(t, sample(t, families, "nebula_audit_events_buffered"), 0.0)
	require.EqualValues(t, 1, sample(t, families, "nebula_needs_reconnect_marked_total"), "rejected-oauth")
	require.EqualValues(t, 0, sample(t, families, "nebula_notifications_total", "outcome", "sent"), "no notify_url")

	// The histogram's buckets are cumulative and end at the count.
	h := families["nebula_refresh_duration_seconds"].GetMetric()[0].GetHistogram()
	require.Len(t, h.GetBucket(), len(refreshBucketBounds)+1, "the bounds and +Inf")
	prev := uint64(0)
	for _, bucket := range h.GetBucket() {
		require.GreaterOrEqual(t, bucket.GetCumulativeCount(), prev)
		prev = bucket.GetCumulativeCount()
	}
	require.LessOrEqual(t, prev, h.GetSampleCount())

	// No secret and no credential name in the body.
	for _, s := range append(served, secretKeyValue, secretPassword, "rotated-pa55w0rd-new", clientSecret, secretWrong,
		"payments-api-key", "ledger-basic", "billing-oauth", "rejected-oauth", "missing-cred") {
		require.NotContains(t, body, s)
	}
}

// TestMetricsPrometheusNotifications: the notification counters of the
// JSON metrics are families of the scrape, with the same values: sent and
// failed deliveries to a receiver, then a queue filled past its bound with
// no deliverer running (pending and dropped).
func TestMetricsPrometheusNotifications(t *testing.T) {
	same := func(t *testing.T, e *testEnv) map[string]*dto.MetricFamily {
		t.Helper()
		m := e.mustRequest(t, logical.ReadOperation, "metrics", nil).Data
		_, families := scrape(t, e)
		for outcome, key := range map[string]string{"sent": "notifications_sent", "failed": "notifications_failed", "dropped": "notifications_dropped"} {
			require.EqualValues(t, m[key], sample(t, families, "nebula_notifications_total", "outcome", outcome), outcome)
		}
		require.EqualValues(t, m["notifications_pending"], sample(t, families, "nebula_notifications_pending"))
		require.EqualValues(t, m["needs_reconnect_marked"], sample(t, families, "nebula_needs_reconnect_marked_total"))
		return families
	}
	t.Run("delivered and failed", func(t *testing.T) {
		e := newTestBackend(t)
		rcv := withNotifications(t, e)
		c := &credential{Name: "svc", Type: "api_key"}
		e.b.notify(t.Context(), e.storage, eventRotationFailed, c, "")
		e.b.notify(t.Context(), e.storage, eventRefreshFailed, c, "")
		rcv.wait(t, 2)
		waitFor(t, "two deliveries counted", func() bool { return e.b.notifier.sent.Load() == 2 })
		rcv.answer(http.StatusServiceUnavailable)
		e.b.notify(t.Context(), e.storage, eventRotationFailed, c, "")
		rcv.wait(t, notifyAttempts)
		waitFor(t, "the failed delivery counted", func() bool { return e.b.notifier.failed.Load() == 1 })
		families := same(t, e)
		require.EqualValues(t, 2, sample(t, families, "nebula_notifications_total", "outcome", "sent"))
		require.EqualValues(t, 1, sample(t, families, "nebula_notifications_total", "outcome", "failed"))
	})
	t.Run("queued and dropped", func(t *testing.T) {
		e := newTestBackend(t)
		e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{
			"notify_url": "https://receiver.example/events", "notify_secret": testNotifySecret,
		})
		c := &credential{Name: "svc", Type: "oauth2"}
		for range notifyQueueSize + 3 {
			e.b.notify(t.Context(), e.storage, eventRefreshFailed, c, "")
		}
		families := same(t, e)
		require.EqualValues(t, notifyQueueSize, sample(t, families, "nebula_notifications_pending"))
		require.EqualValues(t, 3, sample(t, families, "nebula_notifications_total", "outcome", "dropped"))
	})
}

func TestMetricsFormatField(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	plain := e.mustRequest(t, logical.ReadOperation, "metrics", nil).Data
	asJSON := e.mustRequest(t, logical.ReadOperation, "metrics", map[string]any{"format": "json"}).Data
	require.Equal(t, plain, asJSON)
	keys := make([]string, 0, len(plain))
	for k := range plain {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	require.Equal(t, []string{"audit_dropped", "audit_pending", "avg_refresh_ms", "cache_hit_rate", "cache_hits", "cache_misses",
		"cache_size", "credentials_by_type", "needs_reconnect_marked", "notifications_dropped", "notifications_failed",
		"notifications_pending", "notifications_sent", "p99_refresh_ms", "refresh_count", "refresh_failures", "rotation_failures",
		"rotations", "token_reads", "total_credentials"}, keys, "the JSON answer keeps its fields")

	_, err := e.request(t, logical.ReadOperation, "metrics", map[string]any{"format": "openmetrics"})
	requireKind(t, err, KindInvalidInput, "format")
}

func TestMetricsPrometheusStorageFailure(t *testing.T) {
	e := newTestBackend(t)
	e.storage.failList.Store(true)
	_, err := e.request(t, logical.ReadOperation, "metrics", map[string]any{"format": "prometheus"})
	requireKind(t, err, KindStorage)
}

func TestRefreshBuckets(t *testing.T) {
	var s engineStats
	for _, d := range []time.Duration{10 * time.Millisecond, 300 * time.Millisecond, 3 * time.Second, time.Minute} {
		s.observeRefresh("x", time.Now(), d, nil)
	}
	count, sum, buckets := s.refreshHistogram()
	require.EqualValues(t, 4, count)
	require.InDelta(t, 63.31, sum, 0.001)
	require.EqualValues(t, 1, buckets[0.05])
	require.EqualValues(t, 1, buckets[0.25])
	require.EqualValues(t, 2, buckets[0.5])
	require.EqualValues(t, 3, buckets[5])
	require.EqualValues(t, 3, buckets[30], "a minute is only in +Inf")
}

func TestMetricsPrometheusUpstreamInFlight(t *testing.T) {
	e, h := newHangingEnv(t)
	h.hold(0)
	done := make(chan error, 1)
	go func() {
		_, err := e.request(t, logical.ReadOperation, "token/a", nil)
		done <- err
	}()
	h.waitArrival(t)

	host := h.Listener.Addr().String()
	_, families := scrape(t, e)
	require.EqualValues(t, 1, sample(t, families, "nebula_upstream_requests_in_flight", "host", host))
	require.EqualValues(t, 0, sample(t, families, "nebula_upstream_requests_waiting", "host", host))

	h.release()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(testWait):
		t.Fatal("the token read did not finish")
	}
	_, families = scrape(t, e)
	for _, m := range families["nebula_upstream_requests_in_flight"].GetMetric() {
		require.Zero(t, m.GetGauge().GetValue(), "nothing in flight once answered")
	}
}
