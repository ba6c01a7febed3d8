package nebula

import (
	"context"
	"sort"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Health statuses.
const (
	healthHealthy   = "healthy"
	healthDegraded  = "degraded"
	healthUnhealthy = "unhealthy"
)

func pathHealth(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "health$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "health"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathHealthRead, Responses: healthResponses},
			},
			HelpSynopsis:    "Report the engine's health.",
			HelpDescription: "status is healthy, degraded (some credential fails to refresh or rotate, is due or overdue for rotation, or fails to mirror; audit events cannot be written or were lost in the last 24 hours) or unhealthy (storage fails). issues names each credential or target with its problem.",
		},
		{
			Pattern:      "metrics$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "metrics"},
			Fields: map[string]*framework.FieldSchema{
				"format": {Type: framework.TypeString, Description: "json, or prometheus for the Prometheus text exposition format.", Default: "json"},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathMetricsRead, Responses: metricsResponses},
			},
			HelpSynopsis:    "Read the engine's metrics.",
			HelpDescription: "Credential totals from storage; counters (token reads, cache hits, refreshes, rotations, audit events dropped) of the active node since the plugin started (a node that cannot write forwards the read). format=prometheus answers the nebula_* families in the Prometheus text exposition format (labels carry no credential name nor secret).",
		},
		{
			Pattern:      "metrics/(?P<name>[^/]+)$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "credential-metrics"},
			Fields: map[string]*framework.FieldSchema{
				"name": {Type: framework.TypeString, Description: "Name of the credential."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathCredMetricsRead, Responses: credentialMetricsResponses},
			},
			HelpSynopsis:    "Read one credential's metrics.",
			HelpDescription: "usage_count, last_used, refresh_count and last_refresh (the active node, since the plugin started), last_error and next_rotation_at (from storage).",
		},
	}
}

// healthIssue is one problem the health path reports.
type healthIssue struct {
	Credential string `json:"credential,omitempty"`
	Target     string `json:"target,omitempty"`
	Kind       string `json:"kind"`
	Message    string `json:"message"`
}

// credentialIssues lists what is wrong with one credential at now.
func credentialIssues(c *credential, now time.Time) []healthIssue {
	var issues []healthIssue
	add := func(kind, msg string) {
		issues = append(issues, healthIssue{Credential: c.Name, Kind: kind, Message: msg})
	}
	if c.LastError != "" {
		add("refresh_failed", c.LastError)
	}
	issues = append(issues, reconnectIssues(c)...)
	if c.RotationState.LastError != "" {
		add("rotation_failed", c.RotationState.LastError)
	}
	if next := c.nextRotation(); !next.IsZero() {
		switch {
		case !now.Before(next):
			add("rotation_overdue", "rotation was due at "+next.UTC().Format(time.RFC3339))
		case c.rotationWarning(now):
			add("rotation_due", "rotation is due at "+next.UTC().Format(time.RFC3339))
		}
	}
	if c.status(now) == statusExpired {
		add("expired", "the credential's token has expired")
	}
	return issues
}

// pathHealthRead, pathMetricsRead and pathCredMetricsRead run on the active
// node (onActiveNode): it runs background refresh, rotations, mirrors and
// the audit flusher, and its counters and summaries are the cluster's; a
// standby's own answer would depend on which node a load balancer picked.
func (b *backend) pathHealthRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	if err := b.onActiveNode(); err != nil {
		return nil, err
	}
	now := b.now()
	// From the summaries (summary.go), not a scan of storage.
	issues, err := b.summary.issuesAt(ctx, req.Storage, b.eachMirrorState, now)
	status := healthHealthy
	switch {
	case err != nil:
		// Storage fails: what other parts would read from it is unknown
		// too (a scan of it would find nothing).
		status = healthUnhealthy
		issues = []healthIssue{{Kind: "storage_error", Message: err.Error()}}
	case len(issues) > 0:
		status = healthDegraded
	}
	if err == nil {
		issues = append(issues, b.extraHealthIssues(ctx, req.Storage)...)
	}
	issues = append(issues, b.auditHealthIssues(now)...)
	return &logical.Response{Data: healthData(status, issues, now)}, nil
}

// healthData renders a health answer: the status (degraded when it would
// be healthy but issues were found) and the issues.
func healthData(status string, issues []healthIssue, now time.Time) map[string]any {
	if status == healthHealthy && len(issues) > 0 {
		status = healthDegraded
	}
	list := make([]map[string]any, 0, len(issues))
	for _, is := range issues {
		m := map[string]any{"kind": is.Kind, "message": is.Message}
		if is.Credential != "" {
			m["credential"] = is.Credential
		}
		if is.Target != "" {
			m["target"] = is.Target
		}
		list = append(list, m)
	}
	return map[string]any{"status": status, "issues": list, "checked_at": now.UTC().Format(time.RFC3339)}
}

// extraHealthIssues reports issues of other parts (mirror targets); the
// list of sources is fixed at construction.
func (b *backend) extraHealthIssues(ctx context.Context, s logical.Storage) []healthIssue {
	var out []healthIssue
	for _, source := range b.healthSources {
		out = append(out, source(ctx, s)...)
	}
	return out
}

func (b *backend) pathMetricsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := b.onActiveNode(); err != nil {
		return nil, err
	}
	switch d.Get("format").(string) {
	case "json":
	case "prometheus":
		return b.prometheusResponse(ctx, req.Storage)
	default:
		return nil, newError(KindInvalidInput, "field \"format\" must be json or prometheus")
	}
	total, byType, err := b.summary.totals(ctx, req.Storage, b.eachMirrorState)
	if err != nil {
		return nil, err
	}
	st := &b.stats
	hits, misses := st.cacheHits.Load(), st.cacheMisses.Load()
	rate := 0.0
	if hits+misses > 0 {
		rate = float64(hits) / float64(hits+misses)
	}
	avg, p99 := st.refreshTimes()
	auditDropped, _, _ := b.auditLog.droppedStats()
	resp := &logical.Response{Data: map[string]any{
		"total_credentials":   total,
		"credentials_by_type": byType,
		"token_reads":         st.tokenReads.Load(),
		"cache_hits":          hits,
		"cache_misses":        misses,
		"cache_hit_rate":      rate,
		"cache_size":          b.cache.Len(),
		"refresh_count":       st.refreshCount.Load(),
		"refresh_failures":    st.refreshFailures.Load(),
		"avg_refresh_ms":      float64(avg.Microseconds()) / 1000,
		"p99_refresh_ms":      float64(p99.Microseconds()) / 1000,
		"rotations":           st.rotations.Load(),
		"rotation_failures":   st.rotationFailures.Load(),
		"audit_pending":       b.auditLog.pending(),
		"audit_dropped":       auditDropped,
	}}
	b.addNotifyMetrics(resp.Data)
	return resp, nil
}

func (b *backend) pathCredMetricsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := b.onActiveNode(); err != nil {
		return nil, err
	}
	c, err := loadCredentialRequired(ctx, req.Storage, d.Get("name").(string))
	if err != nil {
		return nil, err
	}
	cs := b.stats.cred(c.Name)
	issues := credentialIssues(c, b.now())
	kinds := make([]string, 0, len(issues))
	for _, is := range issues {
		kinds = append(kinds, is.Kind)
	}
	sort.Strings(kinds)
	return &logical.Response{Data: map[string]any{
		"name":             c.Name,
		"usage_count":      cs.usage.Load(),
		"last_used":        unixNanoTime(cs.lastUsed.Load()),
		"refresh_count":    cs.refreshCount.Load(),
		"last_refresh":     unixNanoTime(cs.lastRefresh.Load()),
		"last_error":       firstNonEmpty(c.LastError, c.RotationState.LastError),
		"next_rotation_at": formatTime(c.nextRotation()),
		"issues":           kinds,
	}}, nil
}
