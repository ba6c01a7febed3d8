package acceptance

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

// TestAuditTrail: with a file audit device (enabled through the API on
// Vault, declared in the server configuration on OpenBao:
// harness.WithFileAudit), token reads of an api_key credential (by `vault
// read` and by an HTTP token write with a caller context) show in the
// engine's audit trail (audit, audit/export as CSV) and in the host's audit
// log by request path; the secret value shows in clear in neither. health
// and metrics answer. The test has a server of its own: an audit device
// would log every other test's requests too.
func TestAuditTrail(t *testing.T) {
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	v := harness.StartDev(t, harness.WithFileAudit(auditLog))
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	audits, err := v.Client().Sys().ListAuditWithContext(ctx)
	cancel()
	if err != nil || audits["file/"] == nil || audits["file/"].Type != "file" {
		t.Fatalf("audit devices %v (%v); want a file device at file/", audits, err)
	}

	secret := "audit-SECRET-" + randomHex(t, 12)
	name := newName("audit-key")
	tokenPath := v.Mount + "/token/" + name
	cliWrite(t, v, credPath(v, name), "type=api_key", "api_key="+secret)

	byCLI := cliRead(t, v, tokenPath)
	requireFields(t, byCLI.Data, map[string]string{"access_token": secret})
	const executionID, workflowID = "exec-4711", "wf-nightly"
	byAPI := mustWrite(t, apiDriver{c: v.Client()}, tokenPath, map[string]any{
		"execution_id": executionID, "workflow_id": workflowID,
	})
	requireFields(t, byAPI.Data, map[string]string{"access_token": secret})

	t.Run("engine audit", func(t *testing.T) {
		resp := cliRead(t, v, v.Mount+"/audit", "credential="+name)
		requireNoSecrets(t, "audit answer", resp.Raw, []string{secret})
		list, _ := resp.Data["events"].([]any)
		var reads []map[string]any
		for _, item := range list {
			ev, _ := item.(map[string]any)
			if field(ev, "action") == "read_token" {
				reads = append(reads, ev)
			}
		}
		if len(reads) != 2 {
			t.Fatalf("audit shows %d read_token events of %s; want 2: %s", len(reads), name, resp.Raw)
		}
		// Newest first: the HTTP write with the caller context, then the
		// CLI read.
		requireFields(t, reads[0], map[string]string{
			"credential": name, "execution_id": executionID, "workflow_id": workflowID,
			"success": "true", "version": "1",
		})
		requireFields(t, reads[1], map[string]string{"credential": name, "execution_id": "", "success": "true"})
	})

	t.Run("engine audit export csv", func(t *testing.T) {
		resp := cliWrite(t, v, v.Mount+"/audit/export", "format=csv", "credential="+name)
		requireFields(t, resp.Data, map[string]string{"content_type": "text/csv"})
		report, err := base64.StdEncoding.DecodeString(field(resp.Data, "report"))
		if err != nil {
			t.Fatalf("report is not base64: %v", err)
		}
		requireNoSecrets(t, "CSV report", string(report), []string{secret})
		rows, err := csv.NewReader(bytes.NewReader(report)).ReadAll()
		if err != nil || len(rows) == 0 {
			t.Fatalf("report is not CSV (%v):\n%s", err, report)
		}
		header := rows[0]
		col := func(name string) int { return slices.Index(header, name) }
		for _, c := range []string{"action", "credential", "execution_id", "success"} {
			if col(c) < 0 {
				t.Fatalf("CSV header %v has no %s column", header, c)
			}
		}
		if count, _ := strconv.Atoi(field(resp.Data, "count")); count != len(rows)-1 {
			t.Errorf("count = %s; the report has %d rows", field(resp.Data, "count"), len(rows)-1)
		}
		var withContext int
		for _, row := range rows[1:] {
			if row[col("credential")] != name {
				t.Errorf("row of another credential: %v", row)
			}
			if row[col("action")] == "read_token" && row[col("execution_id")] == executionID {
				withContext++
			}
		}
		if withContext != 1 {
			t.Errorf("the report has %d read_token rows with execution_id %s; want 1:\n%s", withContext, executionID, report)
		}
	})

	t.Run("vault audit log", func(t *testing.T) {
		raw, err := os.ReadFile(auditLog)
		if err != nil {
			t.Fatalf("reading Vault's audit log: %v", err)
		}
		log := string(raw)
		if n := strings.Count(log, `"path":"`+tokenPath+`"`); n < 4 {
			// A request and a response entry per token read.
			t.Errorf("Vault's audit log has %d entries with path %s; want at least 4", n, tokenPath)
		}
		if strings.Contains(log, secret) {
			t.Errorf("Vault's audit log shows the secret value in clear")
		}
	})

	t.Run("health and metrics", func(t *testing.T) {
		health := cliRead(t, v, v.Mount+"/health")
		requireFields(t, health.Data, map[string]string{"status": "healthy"})
		metrics := cliRead(t, v, v.Mount+"/metrics")
		if reads, _ := strconv.Atoi(field(metrics.Data, "token_reads")); reads < 2 {
			t.Errorf("metrics token_reads = %q; want at least 2: %s", field(metrics.Data, "token_reads"), metrics.Raw)
		}
		requireFields(t, metrics.Data, map[string]string{"total_credentials": "1"})
		perCred := cliRead(t, v, v.Mount+"/metrics/"+name)
		if uses, _ := strconv.Atoi(field(perCred.Data, "usage_count")); uses < 2 {
			t.Errorf("metrics/%s usage_count = %q; want at least 2", name, field(perCred.Data, "usage_count"))
		}
		requireNoSecrets(t, "metrics", metrics.Raw+perCred.Raw+health.Raw, []string{secret})
	})
}

func randomHex(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}
