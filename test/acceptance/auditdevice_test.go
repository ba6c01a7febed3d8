package acceptance

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

// TestAuditDeviceTuning checks the README's guidance on Vault audit
// devices: with the mount tuned to leave the non-secret response keys
// expires_at, token_type and header_name un-HMAC'd, a token read shows them
// in clear in Vault's audit log while access_token and header_value stay
// HMAC'd (and the secret appears nowhere); numbers (version, ttl) are never
// HMAC'd; request fields such as execution_id are HMAC'd by default. The
// engine's trail records the same request's id, so the two trails can be
// joined.
func TestAuditDeviceTuning(t *testing.T) {
	// The file audit device: enabled through the API on Vault, declared in
	// the server configuration on OpenBao (harness.WithFileAudit).
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	v := harness.StartDev(t, harness.WithFileAudit(auditLog))
	if _, err := v.CLI(t, "secrets", "tune",
		"-audit-non-hmac-response-keys=expires_at",
		"-audit-non-hmac-response-keys=token_type",
		"-audit-non-hmac-response-keys=header_name",
		v.Mount+"/"); err != nil {
		t.Fatalf("tuning the mount: %v", err)
	}

	secret := "tok-SECRET-" + randomHex(t, 12)
	name := newName("audit-dev")
	const expires = "2030-01-01T00:00:00Z"
	cliWrite(t, v, credPath(v, name), "type=bearer", "token="+secret, "expires_at="+expires)
	tokenPath := v.Mount + "/token/" + name
	const executionID = "exec-audit-dev"
	mustWrite(t, apiDriver{c: v.Client()}, tokenPath, map[string]any{"execution_id": executionID})

	raw, err := os.ReadFile(auditLog)
	if err != nil {
		t.Fatalf("reading Vault's audit log: %v", err)
	}
	if strings.Contains(string(raw), secret) {
		t.Fatalf("Vault's audit log shows the secret value in clear")
	}
	var request, response map[string]any
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var entry map[string]any
		if json.Unmarshal(sc.Bytes(), &entry) != nil {
			continue
		}
		req, _ := entry["request"].(map[string]any)
		if req == nil || req["path"] != tokenPath {
			continue
		}
		switch entry["type"] {
		case "request":
			request = entry
		case "response":
			response = entry
		}
	}
	if request == nil || response == nil {
		t.Fatalf("no request/response entries for %s in Vault's audit log", tokenPath)
	}

	reqData, _ := request["request"].(map[string]any)["data"].(map[string]any)
	if got, _ := reqData["execution_id"].(string); !strings.HasPrefix(got, "hmac-sha256:") {
		t.Errorf("request execution_id = %q; want it HMAC'd by default", got)
	}
	respData, _ := response["response"].(map[string]any)["data"].(map[string]any)
	for _, key := range []string{"access_token", "header_value"} {
		if got, _ := respData[key].(string); !strings.HasPrefix(got, "hmac-sha256:") {
			t.Errorf("response %s = %q; want it HMAC'd", key, got)
		}
	}
	want := map[string]string{"expires_at": expires, "token_type": "Bearer", "header_name": "Authorization"}
	for key, value := range want {
		if got, _ := respData[key].(string); got != value {
			t.Errorf("response %s = %q; want %q in clear (audit_non_hmac_response_keys)", key, got, value)
		}
	}
	for _, key := range []string{"version", "ttl"} {
		if _, isNumber := respData[key].(float64); !isNumber {
			t.Errorf("response %s = %#v; want a number in clear (audit devices HMAC strings only)", key, respData[key])
		}
	}

	requestID, _ := request["request"].(map[string]any)["id"].(string)
	if requestID == "" {
		t.Fatalf("the audit log's request entry has no id")
	}
	events := cliRead(t, v, v.Mount+"/audit", "credential="+name, "action=read_token")
	list, _ := events.Data["events"].([]any)
	var matched bool
	for _, item := range list {
		ev, _ := item.(map[string]any)
		if field(ev, "request_id") == requestID && field(ev, "execution_id") == executionID {
			matched = true
		}
	}
	if !matched {
		t.Errorf("no engine audit event with request_id %s (the audit device's request.id): %s", requestID, events.Raw)
	}
}
