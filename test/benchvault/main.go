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
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/nebula-credential/nebula-credential/test/benchserver"
)

const (
	rootToken     = benchserver.RootToken
	pluginVersion = "v0.1.0-bench"
	credName      = "bench"
)

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
	root, err := benchserver.ModuleRoot("benchvault")
	if err != nil {
		return 0, err
	}
	vaultBin, err := benchserver.FindVault(ctx, root)
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "benchvault-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)

	plugins := []*benchserver.Plugin{
		{Name: "nebula-credential-plugin", Pkg: "./cmd/nebula-credential-plugin", Mount: "nebula", Version: pluginVersion},
		{Name: "noop-plugin", Pkg: "./test/noopplugin", Mount: "noop", Version: pluginVersion},
	}
	pluginDir := filepath.Join(dir, "plugins")
	for _, p := range plugins {
		if err := benchserver.Build(ctx, root, pluginDir, p); err != nil {
			return 0, err
		}
	}

	srv, err := benchserver.Start(ctx, vaultBin, dir, pluginDir, benchserver.Options{})
	if err != nil {
		return 0, err
	}
	defer srv.Stop()
	if err := setup(ctx, srv.Client, plugins); err != nil {
		return 0, srv.WithLog(err)
	}

	b := newBencher(srv.Addr, cfg.concurrency)
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

// setup registers and mounts the plugins, creates the api_key credential
// and warms both mounts.
func setup(ctx context.Context, c *api.Client, plugins []*benchserver.Plugin) error {
	for _, p := range plugins {
		if err := benchserver.Register(ctx, c, []*benchserver.Plugin{p}); err != nil {
			return err
		}
		if err := benchserver.Mount(ctx, c, p, p.Mount); err != nil {
			return err
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
	host := "Vault"
	if strings.HasPrefix(vaultVersion, "OpenBao") {
		host = "OpenBao"
	}
	fmt.Printf("----- benchvault: token reads through %s (copy from here) -----\n", host)
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
