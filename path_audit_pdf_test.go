package nebula

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

// exportWith exports the trail with a filter and decodes the report.
func exportWith(tb testing.TB, e *testEnv, data map[string]any) []byte {
	tb.Helper()
	resp := e.mustRequest(tb, logical.UpdateOperation, "audit/export", data)
	report, err := base64.StdEncoding.DecodeString(resp.Data["report"].(string))
	require.NoError(tb, err)
	return report
}

// squeeze drops all white space, so text wrapped over lines (and broken
// inside words) compares equal to the original.
func squeeze(s string) string { return strings.Join(strings.Fields(s), "") }

// TestAuditPDFReport: the PDF export read back with pdftotext shows the
// filter, the period, the totals by action and by outcome, the day chart's
// labels, every event's key fields on its row, and a long error message in
// full (wrapped inside its cell, not clipped at the cell edge).
func TestAuditPDFReport(t *testing.T) {
	e := newTestBackend(t)
	start := e.clock.Now().Add(-3 * 24 * time.Hour) // 2026-11-26T12:00:00Z
	e.clock.now = start
	tick := func() { e.clock.Advance(time.Minute) } // every event at its own time

	e.mustRequest(t, logical.CreateOperation, "creds/pdf-key", validCreds["api_key"])
	tick()
	for range 2 {
		e.mustRequest(t, logical.UpdateOperation, "token/pdf-key", map[string]any{"execution_id": "exec-pdf-7", "user_id": "auditor-alice"})
		tick()
	}
	e.clock.Advance(24 * time.Hour)
	e.mustRequest(t, logical.UpdateOperation, "creds/pdf-key", map[string]any{"description": "moved"})
	tick()
	_, err := e.request(t, logical.ReadOperation, "token/pdf-missing", nil)
	requireKind(t, err, KindNotFound)
	tick()
	e.clock.Advance(24 * time.Hour)
	since := e.clock.Now()
	e.mustRequest(t, logical.UpdateOperation, "rotate/pdf-key", map[string]any{"api_key": "rotated-sk-live-77"})
	tick()
	const longMsg = "refresh_failed: credential \"pdf-oauth\": token endpoint answered 401 invalid_client; the client " +
		"secret was probably rotated at the identity provider without the engine being told, so every scheduled refresh " +
		"fails until creds/pdf-oauth is updated with the new secret (see runbook AUTH-1234, section 5) " +
		"and-this-part-is-one-very-long-word-without-any-space-that-must-still-be-shown-in-full-xyz"
	e.b.auditLog.add(auditEvent{Time: e.clock.Now(), Action: actionRefresh, Credential: "pdf-oauth", Actor: engineUser, Error: longMsg})
	tick()
	e.mustRequest(t, logical.ReadOperation, "token/pdf-key", nil)

	var events []auditEvent
	require.NoError(t, json.Unmarshal(exportWith(t, e, map[string]any{"format": "json"}), &events))
	require.Len(t, events, 9, "8 requests, and the rotation's destroy_version")
	oldest, newest := events[len(events)-1].Time, events[0].Time

	text := pdfText(t, exportWith(t, e, map[string]any{"format": "pdf"}))
	flat := squeeze(text)
	rfc := func(tm time.Time) string { return tm.UTC().Format(time.RFC3339) }

	require.Contains(t, text, "Filter:")
	require.Contains(t, text, "none (every event)")
	require.Contains(t, flat, squeeze("Period: "+rfc(oldest)+" (oldest event) to "+rfc(newest)+" (newest event)"))
	require.Contains(t, flat, squeeze("Events: 9 (success 7, failure 2), newest first"))

	// Totals by action: events, successes, failures.
	for action, n := range map[string][3]int{"read_token": {4, 3, 1}, "create": {1, 1, 0}, "update": {1, 1, 0}, "rotate": {1, 1, 0}, "destroy_version": {1, 1, 0}, "refresh": {1, 0, 1}, "all actions": {9, 7, 2}} {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^\s*%s\s+%d\s+%d\s+%d\b`, regexp.QuoteMeta(action), n[0], n[1], n[2]))
		require.Regexp(t, re, text, "totals of %s", action)
	}

	// The chart: its title, a label per day, the legend.
	require.Contains(t, text, "Events per day by action")
	for _, day := range []string{"11-26", "11-27", "11-28"} {
		require.Contains(t, text, day)
	}

	// Every event's key fields, on a row that starts with its time.
	lines := strings.Split(text, "\n")
	for _, ev := range events {
		want := []string{ev.Action, ev.Credential, ev.outcome(), ev.actor(), ev.UserID, ev.ExecutionID}
		if ev.Version != 0 {
			want = append(want, fmt.Sprint(ev.Version))
		}
		var rows []string
		found := false
		for _, l := range lines {
			if !strings.HasPrefix(strings.TrimSpace(l), rfc(ev.Time)) {
				continue
			}
			rows = append(rows, l)
			all := true
			for _, w := range want {
				all = all && strings.Contains(l, w)
			}
			found = found || all
		}
		require.True(t, found, "no row shows %v of the event at %s; rows: %q", want, rfc(ev.Time), rows)
		if ev.Error != "" {
			require.Contains(t, flat, squeeze(ev.Error), "the error of the event at %s, in full", rfc(ev.Time))
		}
	}
	require.NotContains(t, text, secretKeyValue)
	require.NotContains(t, text, "rotated-sk-live-77")

	// A filter: it is named, and since bounds the period.
	text = pdfText(t, exportWith(t, e, map[string]any{"format": "pdf", "credential": "pdf-key", "since": since.Format(time.RFC3339)}))
	flat = squeeze(text)
	require.Contains(t, flat, squeeze("Filter: credential=pdf-key, since="+rfc(since)))
	require.Contains(t, flat, squeeze("Period: "+rfc(since)+" (since) to "+rfc(newest)+" (newest event)"))
	require.Contains(t, flat, squeeze("Events: 3 (success 3, failure 0)"))
	require.NotContains(t, text, "pdf-oauth")
}

// A row taller than what is left of a page moves to the next page whole; a
// value too long for a whole page is continued there, never lost.
func TestAuditPDFLongRows(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	var events []auditEvent
	for i := range 40 {
		events = append(events, auditEvent{ID: fmt.Sprint(i), Time: now.Add(-time.Duration(i) * time.Hour), Action: actionReadToken,
			Credential: fmt.Sprintf("row-%02d", i), Error: fmt.Sprintf("not_found: event %02d %s", i, strings.Repeat("wrapped words ", 12))})
	}
	const piece = "a value longer than a whole page of its column "
	events[20].Error = "storage_error: " + strings.Repeat(piece, 120) + "END-OF-HUGE"
	report, _, err := renderPDF(events, &auditReport{Now: now})
	require.NoError(t, err)
	text := pdfText(t, report)
	// Without the page footers and the repeated table headers.
	var body []string
	for _, l := range strings.Split(text, "\n") {
		f := strings.Fields(l)
		if strings.Contains(l, "nebula-credential audit report, generated") || len(f) > 2 && f[0] == "time" && f[1] == "action" {
			continue
		}
		body = append(body, l)
	}
	flat := squeeze(strings.Join(body, "\n"))
	for i, ev := range events {
		require.Contains(t, text, ev.Credential)
		if i != 20 {
			require.Contains(t, flat, squeeze(ev.Error), ev.Credential)
		}
	}
	// The value over a page goes on across the page break (the footer and
	// the header come between its parts).
	require.Equal(t, 120, strings.Count(flat, squeeze(piece)))
	require.Contains(t, text, "END-OF-HUGE")
}
