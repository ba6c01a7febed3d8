package nebula

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
)

// The Prometheus exposition of metrics?format=prometheus.
//
// One source of truth: the collector reads the engine's counters
// (engineStats, the audit log, the token cache, the token client's per-host
// limiter) at scrape time; credentials and mirror states are counted from
// the summaries the JSON answer uses too (summary.go), flows once per
// scrape. Only the refresh duration histogram is observed as refreshes
// happen (engineStats.observeRefresh).
//
// Labels never carry a secret nor a credential name: every label has a
// bounded set of values (an error code, a credential type or status, a
// flow status, a mirror target, a token endpoint's host:port),
// so a mount with many credentials does not make many series. Per
// credential numbers stay in metrics/<name>.

// refreshBucketBounds are the upper bounds, in seconds, of the refresh
// duration histogram's buckets.
var refreshBucketBounds = [...]float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// refreshBucket is the index of the histogram bucket d falls in;
// len(refreshBucketBounds) is the +Inf bucket.
func refreshBucket(d time.Duration) int {
	sec := d.Seconds()
	for i, bound := range refreshBucketBounds {
		if sec <= bound {
			return i
		}
	}
	return len(refreshBucketBounds)
}

// refreshHistogram returns the count, the sum in seconds and the
// cumulative bucket counts of the refresh durations, consistent with each
// other.
func (s *engineStats) refreshHistogram() (count uint64, sum float64, buckets map[float64]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	buckets = make(map[float64]uint64, len(refreshBucketBounds))
	for i, bound := range refreshBucketBounds {
		count += s.refreshBuckets[i]
		buckets[bound] = count
	}
	count += s.refreshBuckets[len(refreshBucketBounds)]
	return count, s.refreshTotal.Seconds(), buckets
}

// counter returns the counter of key in m, adding it at zero if needed.
func counter(m *sync.Map, key any) *atomic.Int64 {
	if c, ok := m.Load(key); ok {
		return c.(*atomic.Int64)
	}
	c, _ := m.LoadOrStore(key, new(atomic.Int64))
	return c.(*atomic.Int64)
}

// errorCode is the stable code of err's kind, "error" when it has none.
func errorCode(err error) string {
	if k := ErrorKind(err); k != 0 {
		return k.Code()
	}
	return "error"
}

// oauthErrorCodes are the registered OAuth2 token endpoint error codes
// (RFC 6749 sections 4.1.2.1 and 5.2, RFC 8628 section 3.5, RFC 8707).
// Other codes are counted as "other": a token endpoint chooses them, and
// a label must not take unbounded values.
var oauthErrorCodes = []string{
	"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
	"invalid_scope", "access_denied", "server_error", "temporarily_unavailable", "authorization_pending",
	"slow_down", "expired_token", "invalid_target",
}

// upstreamErrorCode is the token endpoint's OAuth2 error code behind err:
// a registered code, "other", or "" when the endpoint answered none.
func upstreamErrorCode(err error) string {
	var ue *upstream.Error
	if !errors.As(err, &ue) || ue.Code == "" {
		return ""
	}
	if slices.Contains(oauthErrorCodes, ue.Code) {
		return ue.Code
	}
	return "other"
}

// upstreamHosts reports the token client's requests in flight and waiting
// for a slot per host (host:port of a token or revocation URL, never a path
// or query), from its per-host limiter. A host shows while it has requests
// in flight or waiting, or is paused by a Retry-After.
func (b *backend) upstreamHosts() map[string]upstream.HostStats {
	b.upstreamMu.Lock()
	c := b.upstreamClient
	b.upstreamMu.Unlock()
	if c == nil {
		return nil
	}
	l := c.HostLimiter()
	if l == nil {
		return nil
	}
	return l.Stats()
}

// storedCounts is what a scrape counts in storage.
type storedCounts struct {
	credentials map[[2]string]int // {type, status} -> count
	flows       map[string]int    // status -> count
	mirrors     map[[2]string]int // {target, sync status} -> count
}

// countStored counts credentials by type and status, flows by status and
// mirror states by target and sync status at now.
func (b *backend) countStored(ctx context.Context, s logical.Storage, now time.Time) (*storedCounts, error) {
	sc := &storedCounts{flows: map[string]int{}}
	var err error // credentials and mirror states from the summaries (summary.go), not a scan
	if sc.credentials, sc.mirrors, err = b.summary.storedCounts(ctx, s, b.eachMirrorState, now); err != nil {
		return nil, err
	}
	ids, err := s.List(ctx, flowPrefix)
	if err != nil {
		return nil, storageError("listing flows", err)
	}
	for _, id := range ids {
		f, err := loadFlow(ctx, s, id)
		if err != nil {
			return nil, err
		}
		if f == nil {
			continue
		}
		status := f.Status
		if status == flowPending && f.expired(now) {
			status = flowExpired
		}
		sc.flows[status]++
	}
	return sc, nil
}

// Descriptions of the nebula_* families.
var (
	descTokenReads = prometheus.NewDesc("nebula_token_reads_total",
		"Token reads (token/<name>) on this node since the plugin started, by result: success or the error code.", []string{"result"}, nil)
	descCacheHits = prometheus.NewDesc("nebula_cache_hits_total",
		"Token reads served from the token cache.", nil, nil)
	descCacheMisses = prometheus.NewDesc("nebula_cache_misses_total",
		"Token reads the token cache could not serve.", nil, nil)
	descCacheSize = prometheus.NewDesc("nebula_cache_size",
		"Tokens in the token cache.", nil, nil)
	descRefreshes = prometheus.NewDesc("nebula_refreshes_total",
		"Upstream token requests, by outcome (success, failure), the engine's error code and the token endpoint's OAuth2 error code (registered codes, other; empty when none).",
		[]string{"outcome", "code", "upstream_error"}, nil)
	descRefreshDuration = prometheus.NewDesc("nebula_refresh_duration_seconds",
		"Duration of upstream token requests.", nil, nil)
	descInFlight = prometheus.NewDesc("nebula_upstream_requests_in_flight",
		"Token endpoint requests in flight, by host (host:port).", []string{"host"}, nil)
	descWaiting = prometheus.NewDesc("nebula_upstream_requests_waiting",
		"Token endpoint requests waiting for one of the host's slots (config upstream_concurrency_per_host), by host (host:port).", []string{"host"}, nil)
	descRotations = prometheus.NewDesc("nebula_rotations_total",
		"Credential rotations, by outcome (success, failure).", []string{"outcome"}, nil)
	descCredentials = prometheus.NewDesc("nebula_credentials",
		"Stored credentials, by type and status (active, expired, error).", []string{"type", "status"}, nil)
	descFlows = prometheus.NewDesc("nebula_flows",
		"Stored interactive flows, by status (pending, completed, failed, expired).", []string{"status"}, nil)
	descMirrors = prometheus.NewDesc("nebula_mirror_credentials",
		"Mirrored credentials, by target and sync status (pending, synced, error, delete_pending).", []string{"target", "status"}, nil)
	descAuditBuffered = prometheus.NewDesc("nebula_audit_events_buffered",
		"Audit events buffered on this node, not yet written to storage.", nil, nil)
	descAuditDropped = prometheus.NewDesc("nebula_audit_events_dropped_total",
		"Audit events lost to a full buffer since the plugin started.", nil, nil)
	descAuditFailing = prometheus.NewDesc("nebula_audit_write_failing",
		"1 when the last write of audit events to storage failed, else 0.", nil, nil)
	descNotifications = prometheus.NewDesc("nebula_notifications_total",
		"Notification events (config notify_url) since the plugin started, by outcome: sent, failed (not delivered after its retries), dropped (a full queue, more left undelivered than a start could queue, an undecodable one, or one held only in memory lost at a stop).", []string{"outcome"}, nil)
	descNotificationsPending = prometheus.NewDesc("nebula_notifications_pending",
		"Notification events queued on this node, not yet delivered.", nil, nil)
	descNeedsReconnect = prometheus.NewDesc("nebula_needs_reconnect_marked_total",
		"Credentials marked needs_reconnect (a dead grant) since the plugin started.", nil, nil)
)

// engineCollector is a prometheus.Collector over the engine's counters and
// one scrape's stored counts.
type engineCollector struct {
	b      *backend
	stored *storedCounts
}

// Describe implements prometheus.Collector.
func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTokenReads, descCacheHits, descCacheMisses, descCacheSize, descRefreshes,
		descRefreshDuration, descInFlight, descWaiting, descRotations, descCredentials, descFlows, descMirrors,
		descAuditBuffered, descAuditDropped, descAuditFailing, descNotifications, descNotificationsPending, descNeedsReconnect} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	st := &c.b.stats
	constant := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}

	constant(descTokenReads, prometheus.CounterValue, float64(st.tokenReads.Load()), "success")
	st.readFailures.Range(func(k, v any) bool {
		constant(descTokenReads, prometheus.CounterValue, float64(v.(*atomic.Int64).Load()), k.(string))
		return true
	})
	constant(descCacheHits, prometheus.CounterValue, float64(st.cacheHits.Load()))
	constant(descCacheMisses, prometheus.CounterValue, float64(st.cacheMisses.Load()))
	constant(descCacheSize, prometheus.GaugeValue, float64(c.b.cache.Len()))

	constant(descRefreshes, prometheus.CounterValue, float64(counter(&st.refreshes, refreshLabels{}).Load()), "success", "", "")
	st.refreshes.Range(func(k, v any) bool {
		if key := k.(refreshLabels); key != (refreshLabels{}) {
			constant(descRefreshes, prometheus.CounterValue, float64(v.(*atomic.Int64).Load()), "failure", key.code, key.upstream)
		}
		return true
	})
	count, sum, buckets := st.refreshHistogram()
	ch <- prometheus.MustNewConstHistogram(descRefreshDuration, count, sum, buckets)

	for host, hs := range c.b.upstreamHosts() {
		constant(descInFlight, prometheus.GaugeValue, float64(hs.InFlight), host)
		constant(descWaiting, prometheus.GaugeValue, float64(hs.Waiting), host)
	}

	failures := st.rotationFailures.Load()
	constant(descRotations, prometheus.CounterValue, float64(st.rotations.Load()), "success")
	constant(descRotations, prometheus.CounterValue, float64(failures), "failure")

	for k, n := range c.stored.credentials {
		constant(descCredentials, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	for status, n := range c.stored.flows {
		constant(descFlows, prometheus.GaugeValue, float64(n), status)
	}
	for k, n := range c.stored.mirrors {
		constant(descMirrors, prometheus.GaugeValue, float64(n), k[0], k[1])
	}

	dropped, _, flushFailed := c.b.auditLog.droppedStats()
	constant(descAuditBuffered, prometheus.GaugeValue, float64(c.b.auditLog.pending()))
	constant(descAuditDropped, prometheus.CounterValue, float64(dropped))
	failing := 0.0
	if flushFailed {
		failing = 1
	}
	constant(descAuditFailing, prometheus.GaugeValue, failing)

	n := &c.b.notifier
	constant(descNotifications, prometheus.CounterValue, float64(n.sent.Load()), "sent")
	constant(descNotifications, prometheus.CounterValue, float64(n.failed.Load()), "failed")
	constant(descNotifications, prometheus.CounterValue, float64(n.dropped.Load()), "dropped")
	constant(descNotificationsPending, prometheus.GaugeValue, float64(len(n.queue)))
	constant(descNeedsReconnect, prometheus.CounterValue, float64(n.deadGrants.Load()))
}

// prometheusResponse answers the metrics in the Prometheus text exposition
// format, as a raw body.
func (b *backend) prometheusResponse(ctx context.Context, s logical.Storage) (*logical.Response, error) {
	stored, err := b.countStored(ctx, s, b.now())
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(&engineCollector{b: b, stored: stored}); err != nil {
		return nil, err
	}
	families, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, format)
	for _, mf := range families {
		if err := enc.Encode(mf); err != nil {
			return nil, err
		}
	}
	return &logical.Response{Data: map[string]any{
		logical.HTTPStatusCode:  http.StatusOK,
		logical.HTTPContentType: string(format),
		logical.HTTPRawBody:     buf.Bytes(),
	}}, nil
}
