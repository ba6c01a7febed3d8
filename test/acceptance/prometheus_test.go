//go:build linux

package acceptance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

// prometheusBinary is the Prometheus server the test runs: PROMETHEUS_BIN,
// else prometheus on PATH (Debian's prometheus package, which make tools
// installs).
func prometheusBinary(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv("PROMETHEUS_BIN"); bin != "" {
		return bin
	}
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		tb.Fatalf("prometheus is needed (make tools installs Debian's prometheus package; or set PROMETHEUS_BIN): %v", err)
	}
	return bin
}

// freeLoopbackPort returns a TCP port free on 127.0.0.1 a moment ago.
func freeLoopbackPort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// promAPI GETs a Prometheus HTTP API path and decodes its data.
func promAPI(ctx context.Context, base, path string, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	var answer struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return fmt.Errorf("%s answered %d %q: %w", path, resp.StatusCode, raw, err)
	}
	if answer.Status != "success" {
		return fmt.Errorf("%s answered %s: %s", path, answer.Status, answer.Error)
	}
	return json.Unmarshal(answer.Data, data)
}

// promVector is the data of an instant query answering a vector.
type promVector struct {
	Result []struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	} `json:"result"`
}

// TestPrometheusScrapesMetrics: a real Prometheus (Debian's package)
// scrapes nebula/metrics?format=prometheus through Vault with a token that
// holds only the scraper policy the README documents; its HTTP API shows
// the target up and the nebula_* families. The exposition itself answers
// the text format with no secret value.
func TestPrometheusScrapesMetrics(t *testing.T) {
	bin := prometheusBinary(t)
	v := harness.SharedDev(t)

	secret := "prom-SECRET-" + randomHex(t, 12)
	name := newName("prom-key")
	cliWrite(t, v, credPath(v, name), "type=api_key", "api_key="+secret)
	for range 3 {
		cliRead(t, v, v.Mount+"/token/"+name)
	}

	token := tokenWithPolicy(t, v, newName("nebula-scraper"),
		fmt.Sprintf("path %q {\n  capabilities = [\"read\"]\n}\n", v.Mount+"/metrics"))

	// What Prometheus will read, as curl would: Authorization: Bearer.
	metricsURL := v.Addr + "/v1/" + v.Mount + "/metrics?format=prometheus"
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", metricsURL, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET %s answered %d %q:\n%s", metricsURL, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	for _, want := range []string{"# TYPE nebula_token_reads_total counter", "# TYPE nebula_refresh_duration_seconds histogram", `nebula_credentials{status="active",type="api_key"}`} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("the exposition lacks %q:\n%s", want, body)
		}
	}
	requireNoSecrets(t, "the exposition", string(body), []string{secret, name})
	t.Logf("GET %s:\n%s", metricsURL, body)

	// The scraper token is refused elsewhere.
	if _, err := v.ClientWithToken(token).Logical().ReadWithContext(ctx, v.Mount+"/creds/"+name); err == nil {
		t.Errorf("the scraper token reads creds/%s", name)
	}

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "vault-token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(v.Addr)
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: nebula
    metrics_path: /v1/%s/metrics
    params:
      format: [prometheus]
    authorization:
      credentials_file: %s
    static_configs:
      - targets: [%q]
`, v.Mount, tokenFile, target.Host)
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	listen := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	promLog := func() string { raw, _ := os.ReadFile(logPath); return string(raw) }
	cmd := exec.Command(bin,
		"--config.file="+configFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen,
		"--log.level=warn",
	)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // gone if the test binary dies
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", promLog())
		}
	})

	base := "http://" + listen
	query := "/api/v1/query?query=" + url.QueryEscape(`up{job="nebula"}`)
	deadline := time.Now().Add(60 * time.Second)
	up := false
	var lastErr error
	for attempt := 0; attempt < 240 && time.Now().Before(deadline); attempt++ {
		select {
		case err := <-exited:
			t.Fatalf("prometheus exited: %v\n%s", err, promLog())
		case <-time.After(250 * time.Millisecond):
		}
		qctx, qcancel := context.WithTimeout(context.Background(), 5*time.Second)
		var vec promVector
		lastErr = promAPI(qctx, base, query, &vec)
		qcancel()
		if lastErr == nil && len(vec.Result) == 1 && vec.Result[0].Value[1] == "1" {
			up = true
			break
		}
		if lastErr == nil {
			lastErr = fmt.Errorf("up{job=\"nebula\"} = %v", vec.Result)
		}
	}
	if !up {
		var targets any
		tctx, tcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = promAPI(tctx, base, "/api/v1/targets", &targets)
		tcancel()
		t.Fatalf("prometheus did not scrape the nebula target within 60s: %v\ntargets: %v", lastErr, targets)
	}

	lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer lcancel()
	var names []string
	if err := promAPI(lctx, base, "/api/v1/label/__name__/values", &names); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"nebula_token_reads_total", "nebula_cache_hits_total", "nebula_cache_misses_total", "nebula_cache_size",
		"nebula_refreshes_total", "nebula_refresh_duration_seconds_bucket", "nebula_refresh_duration_seconds_count",
		"nebula_rotations_total", "nebula_credentials", "nebula_audit_events_buffered", "nebula_audit_events_dropped_total",
		"nebula_audit_write_failing", "nebula_notifications_total", "nebula_notifications_pending",
		"nebula_needs_reconnect_marked_total",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("prometheus has no %s; it has %v", want, names)
		}
	}

	// A value survives the trip: at least this test's three reads.
	var vec promVector
	if err := promAPI(lctx, base, "/api/v1/query?query="+url.QueryEscape(`nebula_token_reads_total{job="nebula",result="success"} >= 3`), &vec); err != nil {
		t.Fatal(err)
	}
	if len(vec.Result) != 1 {
		t.Errorf("nebula_token_reads_total{result=\"success\"} >= 3 answered %v", vec.Result)
	}
}
