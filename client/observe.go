package client

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"time"
)

// Health statuses: healthy, degraded (some credential or mirror has a
// problem) or unhealthy (storage fails).
const (
	HealthHealthy   = "healthy"
	HealthDegraded  = "degraded"
	HealthUnhealthy = "unhealthy"
)

// Health is the engine's health.
type Health struct {
	// Status is HealthHealthy, HealthDegraded or HealthUnhealthy.
	Status string
	// Issues are the problems found; empty when healthy.
	Issues []HealthIssue
	// CheckedAt is when the engine looked.
	CheckedAt time.Time
}

// HealthIssue is one problem Health reports.
type HealthIssue struct {
	// Credential names the credential concerned; empty for other issues.
	Credential string `json:"credential"`
	// Target names the mirror target concerned; empty for other issues.
	Target string `json:"target"`
	// Kind is e.g. refresh_failed, rotation_failed, rotation_due,
	// rotation_overdue, expired, storage_error.
	Kind string `json:"kind"`
	// Message says what is wrong.
	Message string `json:"message"`
}

// Health reports the engine's health: failed refreshes, credentials due for
// rotation, mirror errors, storage errors.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var w struct {
		Status    string        `json:"status"`
		Issues    []HealthIssue `json:"issues"`
		CheckedAt time.Time     `json:"checked_at"`
	}
	if _, err := c.read(ctx, c.mount+"/health", nil, &w); err != nil {
		return nil, err
	}
	return &Health{Status: w.Status, Issues: w.Issues, CheckedAt: w.CheckedAt}, nil
}

// Metrics are the engine's metrics: credential totals from storage, and
// counters of the Vault node that answered since the plugin started.
type Metrics struct {
	// TotalCredentials is the number of credentials in the mount.
	TotalCredentials int
	// CredentialsByType counts them by type.
	CredentialsByType map[string]int
	// TokenReads counts the tokens served.
	TokenReads int64
	// CacheHits counts the reads answered from the token cache.
	CacheHits int64
	// CacheMisses counts the reads the cache could not answer.
	CacheMisses int64
	// CacheHitRate is hits / (hits + misses), from 0 to 1.
	CacheHitRate float64
	// CacheSize is the number of cached tokens.
	CacheSize int
	// RefreshCount counts upstream token requests.
	RefreshCount int64
	// RefreshFailures counts the failed ones.
	RefreshFailures int64
	// AvgRefresh is the mean time of upstream token requests.
	AvgRefresh time.Duration
	// P99Refresh is their 99th percentile time (of the recent ones).
	P99Refresh time.Duration
	// Rotations counts rotations.
	Rotations int64
	// RotationFailures counts failed rotations.
	RotationFailures int64
	// AuditPending is the number of audit events not yet written.
	AuditPending int
}

// Metrics returns the engine's metrics.
func (c *Client) Metrics(ctx context.Context) (*Metrics, error) {
	var w struct {
		TotalCredentials  int            `json:"total_credentials"`
		CredentialsByType map[string]int `json:"credentials_by_type"`
		TokenReads        int64          `json:"token_reads"`
		CacheHits         int64          `json:"cache_hits"`
		CacheMisses       int64          `json:"cache_misses"`
		CacheHitRate      float64        `json:"cache_hit_rate"`
		CacheSize         int            `json:"cache_size"`
		RefreshCount      int64          `json:"refresh_count"`
		RefreshFailures   int64          `json:"refresh_failures"`
		AvgRefreshMS      float64        `json:"avg_refresh_ms"`
		P99RefreshMS      float64        `json:"p99_refresh_ms"`
		Rotations         int64          `json:"rotations"`
		RotationFailures  int64          `json:"rotation_failures"`
		AuditPending      int            `json:"audit_pending"`
	}
	if _, err := c.read(ctx, c.mount+"/metrics", nil, &w); err != nil {
		return nil, err
	}
	return &Metrics{
		TotalCredentials: w.TotalCredentials, CredentialsByType: w.CredentialsByType,
		TokenReads: w.TokenReads, CacheHits: w.CacheHits, CacheMisses: w.CacheMisses,
		CacheHitRate: w.CacheHitRate, CacheSize: w.CacheSize,
		RefreshCount: w.RefreshCount, RefreshFailures: w.RefreshFailures,
		AvgRefresh: milliseconds(w.AvgRefreshMS), P99Refresh: milliseconds(w.P99RefreshMS),
		Rotations: w.Rotations, RotationFailures: w.RotationFailures, AuditPending: w.AuditPending,
	}, nil
}

// CredentialMetrics are one credential's metrics. Counters are those of
// the Vault node that answered since the plugin started.
type CredentialMetrics struct {
	// Credential is the credential's name.
	Credential string `json:"name"`
	// UsageCount is the number of tokens served.
	UsageCount int64 `json:"usage_count"`
	// LastUsed is when a token was last served; zero if never.
	LastUsed time.Time `json:"last_used"`
	// RefreshCount is the number of upstream token requests.
	RefreshCount int64 `json:"refresh_count"`
	// LastRefresh is when the last one was made; zero if never.
	LastRefresh time.Time `json:"last_refresh"`
	// LastError is the last refresh or rotation failure.
	LastError string `json:"last_error"`
	// NextRotationAt is when the next rotation is due; zero when none is.
	NextRotationAt time.Time `json:"next_rotation_at"`
	// Issues are the kinds of the credential's health issues.
	Issues []string `json:"issues"`
}

// CredentialMetrics returns one credential's metrics.
func (c *Client) CredentialMetrics(ctx context.Context, name string) (*CredentialMetrics, error) {
	path, err := c.pathOf("metrics", name)
	if err != nil {
		return nil, err
	}
	var m CredentialMetrics
	if _, err := c.read(ctx, path, nil, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// AuditFilter selects audit events. Zero fields select everything.
type AuditFilter struct {
	// Credential selects the events of one credential.
	Credential string
	// Action selects one action: create, update, delete, read_token,
	// refresh, rotate, destroy_version, config, flow_*, batch_*, mirror.
	Action string
	// User selects the events of one user (the caller's user_id, else
	// Vault's display name).
	User string
	// Since selects events at or after a time.
	Since time.Time
	// Until selects events at or before a time.
	Until time.Time
	// Limit is the most events to answer (the engine's default when 0).
	Limit int
	// Cursor continues after a previous page (AuditPage.Next).
	Cursor string
}

func (f *AuditFilter) values() map[string]any {
	v := map[string]any{}
	setString(v, "credential", f.Credential)
	setString(v, "action", f.Action)
	setString(v, "user", f.User)
	setTime(v, "since", f.Since)
	setTime(v, "until", f.Until)
	if f.Limit != 0 {
		v["limit"] = f.Limit
	}
	setString(v, "cursor", f.Cursor)
	return v
}

// AuditEvent is one event of the engine's audit trail. Events never hold
// secret values.
type AuditEvent struct {
	// ID orders events; it is the cursor of paging.
	ID string `json:"id"`
	// Time is when the event happened.
	Time time.Time `json:"time"`
	// Action is what happened: create, read_token, rotate, ...
	Action string `json:"action"`
	// Credential names the credential concerned, if any.
	Credential string `json:"credential"`
	// Version is the credential version concerned, if any.
	Version int `json:"version"`
	// User is the caller's user_id, else Vault's display name.
	User string `json:"user"`
	// EntityID is the caller's Vault entity.
	EntityID string `json:"entity_id"`
	// ExecutionID and WorkflowID are the caller context of token reads.
	ExecutionID string `json:"execution_id"`
	WorkflowID  string `json:"workflow_id"`
	// Success reports whether the operation succeeded.
	Success bool `json:"success"`
	// Error is the engine's error message ("<code>: <message>") of a
	// failed operation.
	Error string `json:"error"`
}

// AuditPage is one page of audit events, newest first.
type AuditPage struct {
	// Events are the page's events, newest first.
	Events []AuditEvent
	// Next is the cursor of the next page; empty on the last page.
	Next string
}

// AuditEvents queries the engine's audit trail.
func (c *Client) AuditEvents(ctx context.Context, f AuditFilter) (*AuditPage, error) {
	params := url.Values{}
	for k, v := range f.values() {
		params.Set(k, fmt.Sprint(v))
	}
	var w struct {
		Events []AuditEvent `json:"events"`
		Next   string       `json:"next"`
	}
	if _, err := c.read(ctx, c.mount+"/audit", params, &w); err != nil {
		return nil, err
	}
	return &AuditPage{Events: w.Events, Next: w.Next}, nil
}

// Audit report formats of ExportAudit.
const (
	FormatJSON = "json"
	FormatCSV  = "csv"
	FormatPDF  = "pdf"
)

// AuditReport is an exported audit report.
type AuditReport struct {
	// Data is the report itself.
	Data []byte
	// ContentType is its media type, e.g. text/csv.
	ContentType string
	// Count is the number of events in it.
	Count int
}

// ExportAudit renders the events the filter selects as a report in format
// (FormatJSON, FormatCSV or FormatPDF; JSON when empty).
func (c *Client) ExportAudit(ctx context.Context, f AuditFilter, format string) (*AuditReport, error) {
	body := f.values()
	setString(body, "format", format)
	var w struct {
		Report      string `json:"report"`
		ContentType string `json:"content_type"`
		Count       int    `json:"count"`
	}
	if _, err := c.write(ctx, replayable, c.mount+"/audit/export", body, &w); err != nil {
		return nil, err
	}
	data, err := base64.StdEncoding.DecodeString(w.Report)
	if err != nil {
		return nil, fmt.Errorf("nebula: audit export: decoding the report: %w", err)
	}
	return &AuditReport{Data: data, ContentType: w.ContentType, Count: w.Count}, nil
}

// milliseconds converts fractional milliseconds to a Duration.
func milliseconds(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }
