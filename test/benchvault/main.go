// Command benchvault measures token read throughput through a real Vault:
// nebula-credential's token/<name> against a no-op plugin (test/noopplugin)
// answering the same shape of data, on one Vault dev server on loopback.
//
// It builds both plugins, starts `vault server -dev` with both registered
// (versioned, with their SHA-256) and mounted at nebula/ and noop/, creates
// an api_key credential and warms the token cache, then runs interleaved
// rounds: each round reads one mount with -c concurrent keep-alive clients
// for -round, alternating the mounts (and their order) so both see the same
// machine load. It prints requests/s, p50/p99 latency and the ratio
// nebula/noop.
//
// Usage (from the repository root): go run ./test/benchvault [-c 8] [-round 2s] [-rounds 5]
//
// Vault comes from VAULT_BIN, else scripts/install-vault.sh.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
)

const (
	rootToken     = "root"
	pluginVersion = "v0.1.0-bench"
	credName      = "bench"
	startTimeout  = 90 * time.Second
	stopTimeout   = 15 * time.Second
)

// plugin is one plugin to build, register and mount.
type plugin struct {
	name  string // binary and catalog name
	pkg   string // Go package to build
	mount string
	sha   string
}

func main() {
	concurrency := flag.Int("c", 8, "concurrent HTTP clients")
	round := flag.Duration("round", 2*time.Second, "length of one measured round")
	rounds := flag.Int("rounds", 5, "measured rounds per mount (interleaved)")
	warmup := flag.Duration("warmup", time.Second, "unmeasured warm-up round per mount")
	limit := flag.Duration("timeout", 150*time.Second, "bound of the whole run")
	failBelow := flag.Float64("fail-below", 0, "exit 1 when the ratio nebula/noop is below this (0: never)")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	ratio, err := run(ctx, config{concurrency: *concurrency, round: *round, rounds: *rounds, warmup: *warmup})
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchvault:", err)
		os.Exit(1)
	}
	if *failBelow > 0 && ratio < *failBelow {
		fmt.Fprintf(os.Stderr, "benchvault: ratio %.3f is below %.2f\n", ratio, *failBelow)
		os.Exit(1)
	}
}

type config struct {
	concurrency int
	round       time.Duration
	rounds      int
	warmup      time.Duration
}

func run(ctx context.Context, cfg config) (float64, error) {
	root, err := moduleRoot()
	if err != nil {
		return 0, err
	}
	vaultBin, err := findVault(ctx, root)
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "benchvault-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)

	plugins := []*plugin{
		{name: "nebula-credential-plugin", pkg: "./cmd/nebula-credential-plugin", mount: "nebula"},
		{name: "noop-plugin", pkg: "./test/noopplugin", mount: "noop"},
	}
	pluginDir := filepath.Join(dir, "plugins")
	for _, p := range plugins {
		if err := build(ctx, root, pluginDir, p); err != nil {
			return 0, err
		}
	}

	srv, err := startVault(ctx, vaultBin, dir, pluginDir)
	if err != nil {
		return 0, err
	}
	defer srv.stop()
	if err := setup(ctx, srv.client, plugins); err != nil {
		return 0, fmt.Errorf("%w\nvault log (%s):\n%s", err, srv.logPath, tail(srv.logPath))
	}

	b := newBencher(srv.addr, cfg.concurrency)
	targets := []string{"nebula", "noop"}
	for _, t := range targets {
		if _, err := b.round(ctx, t, cfg.warmup); err != nil {
			return 0, err
		}
	}
	results := map[string]*result{"nebula": {}, "noop": {}}
	for r := 0; r < cfg.rounds; r++ {
		order := targets
		if r%2 == 1 {
			order = []string{targets[1], targets[0]}
		}
		for _, t := range order {
			res, err := b.round(ctx, t, cfg.round)
			if err != nil {
				return 0, err
			}
			results[t].add(res)
		}
	}
	// `vault version` says "Vault v1.21.0, built <date>"; keep the version.
	version, _ := exec.CommandContext(ctx, vaultBin, "version").Output()
	vaultVersion, _, _ := strings.Cut(strings.TrimSpace(string(version)), ",")
	return report(cfg, vaultVersion, results), nil
}

// moduleRoot is the directory of the repository's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", errors.New("run benchvault inside the repository (go env GOMOD found no go.mod)")
	}
	return filepath.Dir(gomod), nil
}

// findVault returns VAULT_BIN, else what scripts/install-vault.sh prints.
func findVault(ctx context.Context, root string) (string, error) {
	if bin := os.Getenv("VAULT_BIN"); bin != "" {
		return bin, nil
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "install-vault.sh"))
	cmd.Dir, cmd.Stderr = root, &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/install-vault.sh: %w\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1]), nil
}

// build compiles a plugin into dir and records its SHA-256.
func build(ctx context.Context, root, dir string, p *plugin) error {
	bin := filepath.Join(dir, p.name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "-ldflags", "-X main.version="+pluginVersion, p.pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", p.pkg, err, out)
	}
	raw, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(raw)
	p.sha = hex.EncodeToString(sum[:])
	return nil
}

// server is the running Vault dev server.
type server struct {
	addr    string
	client  *api.Client
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
}

// startVault starts `vault server -dev` on a free loopback port (its
// cluster listener takes the next one) and waits until it is active.
func startVault(ctx context.Context, bin, dir, pluginDir string) (*server, error) {
	port, err := freePortPair()
	if err != nil {
		return nil, err
	}
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	s := &server{addr: "http://127.0.0.1:" + strconv.Itoa(port), logPath: filepath.Join(dir, "vault.log")}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	s.cmd = exec.Command(bin, "server", "-dev",
		"-dev-listen-address=127.0.0.1:"+strconv.Itoa(port),
		"-dev-root-token-id="+rootToken, "-dev-no-store-token",
		"-dev-plugin-dir="+pluginDir, "-log-level=warn")
	s.cmd.Dir = home
	s.cmd.Env = cleanEnv(home)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// A process group of its own, so a stuck server is killed with its
	// plugin processes.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	s.done = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()

	s.client, err = api.NewClient(&api.Config{Address: s.addr, HttpClient: &http.Client{Timeout: 30 * time.Second}})
	if err != nil {
		s.stop()
		return nil, err
	}
	s.client.SetToken(rootToken)
	s.client.ClearNamespace()

	wait, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		h, err := s.client.Sys().HealthWithContext(wait)
		if err == nil && h.Initialized && !h.Sealed && !h.Standby {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("vault exited while starting:\n%s", tail(s.logPath))
		case <-wait.Done():
			s.stop()
			return nil, fmt.Errorf("vault not active within %s:\n%s", startTimeout, tail(s.logPath))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM, then kills the process group if Vault does not exit.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return
	case <-time.After(stopTimeout):
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}

// cleanEnv is the caller's environment without VAULT_* variables and with
// HOME set to home, so nothing of the user's Vault setup is touched.
func cleanEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return append(env, "HOME="+home)
}

// setup registers and mounts the plugins, creates the api_key credential
// and warms both mounts.
func setup(ctx context.Context, c *api.Client, plugins []*plugin) error {
	for _, p := range plugins {
		if err := c.Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
			Name: p.name, Type: api.PluginTypeSecrets, Command: p.name, SHA256: p.sha, Version: pluginVersion,
		}); err != nil {
			return fmt.Errorf("registering %s: %w", p.name, err)
		}
		if err := c.Sys().MountWithContext(ctx, p.mount, &api.MountInput{Type: p.name, Config: api.MountConfigInput{PluginVersion: pluginVersion}}); err != nil {
			return fmt.Errorf("mounting %s at %s/: %w", p.name, p.mount, err)
		}
	}
	if _, err := c.Logical().WriteWithContext(ctx, "nebula/creds/"+credName, map[string]any{
		"type": "api_key", "api_key": "bench-SECRET-value", "description": "benchvault",
	}); err != nil {
		return fmt.Errorf("creating the credential: %w", err)
	}
	for _, mount := range []string{"nebula", "noop"} {
		s, err := c.Logical().ReadWithContext(ctx, mount+"/token/"+credName)
		if err != nil || s == nil || s.Data["access_token"] == nil {
			return fmt.Errorf("warming %s/token/%s: %v, %v", mount, credName, s, err)
		}
	}
	return nil
}

// bencher sends token reads with keep-alive connections.
type bencher struct {
	addr        string
	concurrency int
	client      *http.Client
}

func newBencher(addr string, concurrency int) *bencher {
	tr := &http.Transport{
		MaxIdleConns:        concurrency * 2,
		MaxIdleConnsPerHost: concurrency * 2,
		IdleConnTimeout:     time.Minute,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}
	return &bencher{addr: addr, concurrency: concurrency, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// roundResult is one round against one mount.
type roundResult struct {
	requests  int
	elapsed   time.Duration
	latencies []time.Duration
}

// round reads mount/token/bench from every client until d has passed.
func (b *bencher) round(ctx context.Context, mount string, d time.Duration) (*roundResult, error) {
	url := b.addr + "/v1/" + mount + "/token/" + credName
	var (
		mu       sync.Mutex
		res      = &roundResult{}
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for range b.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			var err error
			for time.Now().Before(end) && ctx.Err() == nil {
				t0 := time.Now()
				if err = b.get(ctx, url); err != nil {
					break
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			defer mu.Unlock()
			res.latencies = append(res.latencies, lat...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.requests = len(res.latencies)
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return res, firstErr
}

func (b *bencher) get(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", rootToken)
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"access_token"`)) {
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return nil
}

// result sums a mount's measured rounds.
type result struct {
	requests  int
	elapsed   time.Duration
	latencies []time.Duration
	perRound  []float64 // requests/s of each round
}

func (r *result) add(rr *roundResult) {
	r.requests += rr.requests
	r.elapsed += rr.elapsed
	r.latencies = append(r.latencies, rr.latencies...)
	r.perRound = append(r.perRound, float64(rr.requests)/rr.elapsed.Seconds())
}

func (r *result) rate() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func (r *result) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	slices.Sort(r.latencies)
	i := int(p * float64(len(r.latencies)-1))
	return r.latencies[i]
}

// report prints the figures and answers the ratio nebula/noop.
func report(cfg config, vaultVersion string, results map[string]*result) float64 {
	neb, noop := results["nebula"], results["noop"]
	ratio := neb.rate() / noop.rate()
	verdict := "meets"
	if ratio < 0.9 {
		verdict = "BELOW"
	}
	fmt.Println("----- benchvault: token reads through Vault (copy from here) -----")
	fmt.Printf("%s, %s %s/%s, NumCPU %d, GOMAXPROCS %d\n", vaultVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	fmt.Printf("GET /v1/<mount>/token/%s, %d keep-alive clients, %d interleaved rounds of %s per mount (after a %s warm-up)\n",
		credName, cfg.concurrency, cfg.rounds, cfg.round, cfg.warmup)
	fmt.Printf("%-8s %9s %10s %9s %9s  %s\n", "mount", "requests", "req/s", "p50", "p99", "req/s per round")
	for _, name := range []string{"nebula", "noop"} {
		r := results[name]
		rounds := make([]string, len(r.perRound))
		for i, v := range r.perRound {
			rounds[i] = fmt.Sprintf("%.0f", v)
		}
		fmt.Printf("%-8s %9d %10.1f %9s %9s  %s\n", name, r.requests, r.rate(),
			r.percentile(0.50).Round(time.Microsecond), r.percentile(0.99).Round(time.Microsecond), strings.Join(rounds, " "))
	}
	fmt.Printf("ratio nebula/noop: %.3f (target >= 0.90: %s)\n", ratio, verdict)
	fmt.Println("----- end benchvault -----")
	return ratio
}

// freePortPair returns a port p such that p and p+1 are free on 127.0.0.1.
func freePortPair() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1))
		l.Close()
		if err == nil {
			l2.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free pair of ports on 127.0.0.1")
}

// tail is the end of a log file, for error messages.
func tail(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const max = 8 << 10
	if len(raw) > max {
		raw = raw[len(raw)-max:]
	}
	return string(raw)
}
