package nebula

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

// auditEvents queries the audit path and returns its events.
func (e *testEnv) auditEvents(tb testing.TB, filter map[string]any) ([]map[string]any, string) {
	tb.Helper()
	resp := e.mustRequest(tb, logical.ReadOperation, "audit", filter)
	return resp.Data["events"].([]map[string]any), resp.Data["next"].(string)
}

func TestTokenReadsAreAuditedWithoutSynchronousWrites(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	e.mustRequest(t, logical.ReadOperation, "token/k", nil) // warm the cache
	puts := e.storage.puts.Load()

	const reads = 10_000
	req := &logical.Request{Operation: logical.ReadOperation, Path: "token/k", Storage: e.storage}
	for range reads {
		_, err := e.b.HandleRequest(context.Background(), req)
		require.NoError(t, err)
	}
	require.Equal(t, puts, e.storage.puts.Load(), "token reads write nothing synchronously")
	require.Equal(t, reads+2, e.b.auditLog.pending(), "create, warm-up read and the reads")

	require.NoError(t, e.b.auditLog.flush(context.Background(), e.storage))
	require.Less(t, e.storage.puts.Load()-puts, int64(20), "events are written in batches")
	var count int
	cursor := ""
	for {
		events, next := e.auditEvents(t, map[string]any{"action": "read_token", "limit": 5000, "cursor": cursor})
		count += len(events)
		if next == "" {
			break
		}
		cursor = next
	}
	require.Equal(t, reads+1, count, "every read is in the trail")
	require.Zero(t, e.b.auditLog.pending())
}

func TestAuditRecordsCallerAndNoSecrets(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	e.mustRequest(t, logical.UpdateOperation, "token/k", map[string]any{"execution_id": "ex-9", "workflow_id": "wf-1", "user_id": "alice"})
	_, err := e.request(t, logical.ReadOperation, "token/missing", nil)
	require.Error(t, err)
	e.mustRequest(t, logical.UpdateOperation, "rotate/k", map[string]any{"api_key": "next-key"})
	e.mustRequest(t, logical.DeleteOperation, "creds/k", nil)

	events, _ := e.auditEvents(t, nil)
	actions := []string{}
	for _, ev := range events {
		actions = append(actions, ev["action"].(string))
	}
	require.Equal(t, []string{"delete", "rotate", "destroy_version", "read_token", "read_token", "create"}, actions, "newest first")
	read := events[4]
	require.Equal(t, "alice", read["user"])
	require.Equal(t, "ex-9", read["execution_id"])
	require.Equal(t, true, read["success"])
	failed := events[3]
	require.Equal(t, false, failed["success"])
	require.True(t, strings.HasPrefix(failed["error"].(string), "not_found: "))

	raw, err := json.Marshal(events)
	require.NoError(t, err)
	require.NotContains(t, string(raw), secretKeyValue)
	require.NotContains(t, string(raw), "next-key")
}

func TestAuditFiltersAndPaging(t *testing.T) {
	e := newTestBackend(t)
	start := e.clock.Now()
	for i := range 3 {
		e.mustRequest(t, logical.CreateOperation, fmt.Sprintf("creds/c%d", i), validCreds["api_key"])
		e.clock.Advance(time.Hour)
	}
	for range 5 {
		e.mustRequest(t, logical.ReadOperation, "token/c1", nil)
		e.clock.Advance(time.Minute)
	}
	events, _ := e.auditEvents(t, map[string]any{"credential": "c1"})
	require.Len(t, events, 6)
	events, _ = e.auditEvents(t, map[string]any{"action": "create"})
	require.Len(t, events, 3)
	events, _ = e.auditEvents(t, map[string]any{"since": start.Add(30 * time.Minute).Format(time.RFC3339), "until": start.Add(90 * time.Minute).Format(time.RFC3339)})
	require.Len(t, events, 1)
	require.Equal(t, "c1", events[0]["credential"])
	events, _ = e.auditEvents(t, map[string]any{"user": "nobody"})
	require.Empty(t, events)

	var pages [][]map[string]any
	cursor := ""
	for {
		page, next := e.auditEvents(t, map[string]any{"limit": 3, "cursor": cursor})
		pages = append(pages, page)
		if next == "" {
			break
		}
		cursor = next
	}
	require.Len(t, pages, 3)
	var ids []string
	for _, p := range pages {
		for _, ev := range p {
			ids = append(ids, ev["id"].(string))
		}
	}
	require.Len(t, ids, 8)
	require.IsDecreasing(t, ids, "pages continue newest first without repeats")

	_, err := e.request(t, logical.ReadOperation, "audit", map[string]any{"limit": 0})
	requireKind(t, err, KindInvalidInput, "limit")
}

func TestAuditRetention(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"audit_retention": "48h"})
	e.mustRequest(t, logical.CreateOperation, "creds/old", validCreds["api_key"])
	e.clock.Advance(72 * time.Hour)
	e.mustRequest(t, logical.CreateOperation, "creds/new", validCreds["api_key"])
	require.NoError(t, e.b.auditLog.flush(context.Background(), e.storage))
	e.runPeriodic(t)
	events, _ := e.auditEvents(t, map[string]any{"action": "create"})
	require.Len(t, events, 1)
	require.Equal(t, "new", events[0]["credential"])
}

func TestAuditSyncWritesOnTheRequest(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"audit_sync": true})
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	require.Zero(t, e.b.auditLog.pending())
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"audit_enabled": false})
	e.mustRequest(t, logical.ReadOperation, "token/k", nil)
	events, _ := e.auditEvents(t, map[string]any{"action": "read_token"})
	require.Empty(t, events, "audit_enabled=false records nothing")
}

func exportAudit(tb testing.TB, e *testEnv, format string) ([]byte, map[string]any) {
	tb.Helper()
	resp := e.mustRequest(tb, logical.UpdateOperation, "audit/export", map[string]any{"format": format})
	report, err := base64.StdEncoding.DecodeString(resp.Data["report"].(string))
	require.NoError(tb, err)
	return report, resp.Data
}

func TestAuditExports(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/export-me", validCreds["api_key"])
	e.mustRequest(t, logical.UpdateOperation, "token/export-me", map[string]any{"execution_id": "exec-42"})

	report, data := exportAudit(t, e, "json")
	require.Equal(t, "application/json", data["content_type"])
	require.Equal(t, 2, data["count"])
	var events []auditEvent
	require.NoError(t, json.Unmarshal(report, &events))
	require.Len(t, events, 2)
	require.Equal(t, "exec-42", events[0].ExecutionID)

	report, data = exportAudit(t, e, "csv")
	require.Equal(t, "text/csv", data["content_type"])
	rows, err := csv.NewReader(bytes.NewReader(report)).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 3)
	require.Equal(t, csvHeader, rows[0])
	require.Equal(t, "read_token", rows[1][2])
	require.Equal(t, "exec-42", rows[1][7])

	report, data = exportAudit(t, e, "pdf")
	require.Equal(t, "application/pdf", data["content_type"])
	require.True(t, bytes.HasPrefix(report, []byte("%PDF-")))
	text := pdfText(t, report)
	for _, want := range []string{"nebula-credential audit report", "export-me", "read_token", "exec-42", "create"} {
		require.Contains(t, text, want)
	}
	require.NotContains(t, text, secretKeyValue)

	_, err = e.request(t, logical.UpdateOperation, "audit/export", map[string]any{"format": "xml"})
	requireKind(t, err, KindInvalidInput, "format")
}

// pdfText extracts a PDF's text with pdftotext (Debian's poppler-utils,
// which make test installs).
func pdfText(tb testing.TB, pdf []byte) string {
	tb.Helper()
	bin, err := exec.LookPath("pdftotext")
	require.NoError(tb, err, "pdftotext (poppler-utils) is needed to check PDF exports")
	path := filepath.Join(tb.TempDir(), "report.pdf")
	require.NoError(tb, os.WriteFile(path, pdf, 0o600))
	out, err := exec.Command(bin, "-layout", path, "-").Output()
	require.NoError(tb, err, "pdftotext could not open the report")
	return string(out)
}

func TestAuditFlusherRunsFromInitializeAndStopsOnClean(t *testing.T) {
	e := newTestBackend(t)
	require.NoError(t, e.b.Initialize(context.Background(), &logical.InitializationRequest{Storage: e.storage}))
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	require.Eventually(t, func() bool { return e.b.auditLog.pending() == 0 }, 5*time.Second, 20*time.Millisecond,
		"the background flusher writes buffered events")

	// Events recorded just before Clean are written by the final flush.
	e.mustRequest(t, logical.ReadOperation, "token/k", nil)
	e.b.Cleanup(context.Background())
	require.Zero(t, e.b.auditLog.pending())
	events, _, err := queryAudit(context.Background(), e.storage, auditFilter{Action: "read_token", Limit: 10})
	require.NoError(t, err)
	require.Len(t, events, 1)
}
