package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/nebula-credential/nebula-credential/test/benchserver"
)

// reader sends reads to Vault over keep-alive connections.
type reader struct {
	addr   string
	client *http.Client
}

func newReader(addr string, conns int) *reader {
	tr := &http.Transport{
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns * 2,
		IdleConnTimeout:     time.Minute,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}
	return &reader{addr: addr, client: &http.Client{Transport: tr, Timeout: maxRequestDuration}}
}

// get reads /v1/<path> and checks the answer is 200 holding want.
func (r *reader) get(ctx context.Context, path, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.addr+"/v1/"+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", rootToken)
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(want)) {
		if len(body) > 512 {
			body = body[:512]
		}
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return nil
}

// apiKeyName is the name of the i-th api_key credential.
func apiKeyName(i int) string { return fmt.Sprintf("k%06d", i) }

// scale fills the nebula mount size by size, measuring the fill rate and
// the operator reads at each size, then token reads, memory and reload at
// the largest.
func (b *bench) scale(ctx context.Context) error {
	var (
		filled   int
		fillTime time.Duration
	)
	for _, size := range sizes(b.cfg.max) {
		took, err := b.fill(ctx, filled, size)
		if err != nil {
			return err
		}
		b.add("batch/create fill rate", size, fmt.Sprintf("%.0f credentials/s", float64(size-filled)/took.Seconds()),
			fmt.Sprintf("credentials %d to %d in %s, %d per request, one client", filled+1, size, round(took), b.cfg.batch))
		fillTime += took
		filled = size
		if err := b.operatorReads(ctx, size); err != nil {
			return err
		}
	}
	b.add("batch/create fill rate, overall", filled, fmt.Sprintf("%.0f credentials/s", float64(filled)/fillTime.Seconds()),
		fmt.Sprintf("%s for %d api_key items", round(fillTime), filled))
	if err := b.tokenReads(ctx, filled); err != nil {
		return err
	}
	b.memory(filled)
	return b.reload(ctx, filled)
}

// fill creates api_key credentials from..to-1 with batch/create.
func (b *bench) fill(ctx context.Context, from, to int) (time.Duration, error) {
	var took time.Duration
	for start := from; start < to; start += b.cfg.batch {
		end := min(start+b.cfg.batch, to)
		items := make([]map[string]any, 0, end-start)
		for i := start; i < end; i++ {
			items = append(items, map[string]any{
				"name": apiKeyName(i), "type": "api_key", "api_key": fmt.Sprintf("bench-key-%06d", i),
			})
		}
		t0 := time.Now()
		if err := batchCreate(ctx, b.srv.Client, "nebula", items); err != nil {
			return 0, err
		}
		took += time.Since(t0)
	}
	return took, nil
}

// batchCreate writes one batch and checks every item succeeded.
func batchCreate(ctx context.Context, c *api.Client, mount string, items []map[string]any) error {
	s, err := c.Logical().WriteWithContext(ctx, mount+"/batch/create", map[string]any{"items": items})
	if err != nil {
		return fmt.Errorf("batch/create: %w", err)
	}
	if s == nil || fmt.Sprint(s.Data["failed"]) != "0" {
		first := ""
		if s != nil {
			results, _ := s.Data["results"].([]any)
			for _, r := range results {
				if m, ok := r.(map[string]any); ok && m["error"] != nil {
					first = fmt.Sprint(m["error"])
					break
				}
			}
		}
		return fmt.Errorf("batch/create: items failed: %s", first)
	}
	return nil
}

// operatorReads times health and metrics reads at one size.
func (b *bench) operatorReads(ctx context.Context, size int) error {
	for _, ep := range []struct{ path, want string }{
		{"nebula/health", `"status"`},
		{"nebula/metrics", fmt.Sprintf(`"total_credentials":%d`, size)},
	} {
		var lat []time.Duration
		start := time.Now()
		for len(lat) < b.cfg.reads && (len(lat) < b.cfg.minReads || time.Since(start) < b.cfg.budget) {
			t0 := time.Now()
			if err := b.rd.get(ctx, ep.path, ep.want); err != nil {
				return err
			}
			lat = append(lat, time.Since(t0))
		}
		name := strings.TrimPrefix(ep.path, "nebula/")
		b.add(name+" p50 / p99", size, fmt.Sprintf("%s / %s", round(percentile(lat, 0.50)), round(percentile(lat, 0.99))),
			fmt.Sprintf("%d sequential reads", len(lat)))
	}
	return nil
}

// tokenReads compares random token reads across n names on nebula/ with
// the no-op plugin, in interleaved rounds.
func (b *bench) tokenReads(ctx context.Context, n int) error {
	targets := []string{"nebula", "noop"}
	for _, t := range targets {
		if _, err := b.readRound(ctx, t, n, time.Second); err != nil {
			return err
		}
	}
	results := map[string]*sample{"nebula": {}, "noop": {}}
	for r := 0; r < b.cfg.rounds; r++ {
		order := targets
		if r%2 == 1 {
			order = []string{targets[1], targets[0]}
		}
		for _, t := range order {
			s, err := b.readRound(ctx, t, n, b.cfg.round)
			if err != nil {
				return err
			}
			results[t].add(s)
		}
	}
	neb, noop := results["nebula"], results["noop"]
	for _, t := range targets {
		s := results[t]
		b.add("random token reads "+t+"/", n, fmt.Sprintf("%.0f req/s", s.rate()),
			fmt.Sprintf("p50 %s p99 %s, %d clients, %d rounds of %s", round(percentile(s.lat, 0.5)), round(percentile(s.lat, 0.99)), b.cfg.clients, b.cfg.rounds, b.cfg.round))
	}
	b.add("random token reads ratio nebula/noop", n, fmt.Sprintf("%.3f", neb.rate()/noop.rate()), "token cache at its default size (10,000)")
	return nil
}

// sample is a set of timed reads.
type sample struct {
	reads   int
	elapsed time.Duration
	lat     []time.Duration
}

func (s *sample) add(o *sample) {
	s.reads += o.reads
	s.elapsed += o.elapsed
	s.lat = append(s.lat, o.lat...)
}

func (s *sample) rate() float64 { return float64(s.reads) / s.elapsed.Seconds() }

// readRound reads <mount>/token/<random name> from every client for d.
func (b *bench) readRound(ctx context.Context, mount string, n int, d time.Duration) (*sample, error) {
	var (
		mu       sync.Mutex
		res      = &sample{}
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for c := range b.cfg.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), uint64(c)))
			lat := make([]time.Duration, 0, 4096)
			var err error
			for time.Now().Before(end) && ctx.Err() == nil {
				t0 := time.Now()
				if err = b.rd.get(ctx, mount+"/token/"+apiKeyName(rng.IntN(n)), `"access_token"`); err != nil {
					break
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			defer mu.Unlock()
			res.lat = append(res.lat, lat...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.reads = len(res.lat)
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return res, firstErr
}

// memory records the resident memory of the nebula plugin process(es),
// found by their executable (the binary this run built).
func (b *bench) memory(n int) {
	procs := findProcesses(b.nebula.Path)
	if len(procs) == 0 {
		b.add("plugin RSS", n, "not found", "no process runs "+b.nebula.Path)
		return
	}
	for _, p := range procs {
		b.add("plugin RSS (VmRSS)", n, fmt.Sprintf("%.0f MiB", float64(p.rssKB)/1024),
			fmt.Sprintf("pid %d, peak VmHWM %.0f MiB", p.pid, float64(p.hwmKB)/1024))
	}
}

// proc is a process and its memory from /proc/<pid>/status.
type proc struct {
	pid          int
	rssKB, hwmKB int64
}

// findProcesses lists the processes whose executable is path.
func findProcesses(path string) []proc {
	want, err := filepath.EvalSymlinks(path)
	if err != nil {
		want = path
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || strings.TrimSuffix(exe, " (deleted)") != want {
			continue
		}
		p := proc{pid: pid}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			switch k {
			case "VmRSS":
				p.rssKB = kb
			case "VmHWM":
				p.hwmKB = kb
			}
		}
		out = append(out, p)
	}
	return out
}

// pids lists the processes' ids.
func pids(procs []proc) string {
	ids := make([]string, len(procs))
	for i, p := range procs {
		ids[i] = strconv.Itoa(p.pid)
	}
	return strings.Join(ids, ",")
}

// reload reloads the nebula mount's plugin and times the first successful
// token read after it.
func (b *bench) reload(ctx context.Context, n int) error {
	name := apiKeyName(rand.IntN(n))
	pidsBefore := pids(findProcesses(b.nebula.Path))
	t0 := time.Now()
	if _, err := b.srv.Client.Sys().ReloadPluginWithContext(ctx, &api.ReloadPluginInput{Mounts: []string{"nebula"}}); err != nil {
		return fmt.Errorf("reloading the plugin: %w", err)
	}
	reloaded := time.Since(t0)
	wait, cancel := context.WithTimeout(ctx, b.cfg.reloadWait)
	defer cancel()
	failures := 0
	var lastErr error
	for {
		err := b.rd.get(wait, "nebula/token/"+name, `"access_token"`)
		if err == nil {
			break
		}
		failures++
		lastErr = err
		select {
		case <-wait.Done():
			return fmt.Errorf("no successful token read within %s of the reload (%d failures, last: %v)", b.cfg.reloadWait, failures, lastErr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	first := time.Since(t0)
	b.add("reload to first token read", n, round(first).String(),
		fmt.Sprintf("reload call %s, %d failed reads before; plugin pid %s -> %s", round(reloaded), failures, pidsBefore, pids(findProcesses(b.nebula.Path))))
	// A first health read after the reload shows what rebuilding costs.
	t1 := time.Now()
	if err := b.rd.get(ctx, "nebula/health", `"status"`); err != nil {
		return err
	}
	b.add("first health read after reload", n, round(time.Since(t1)).String(), "")
	return nil
}

// refresh creates due oauth2 client_credentials credentials on a mount of
// their own against the loopback token endpoint and times one refresh of
// all of them.
func (b *bench) refresh(ctx context.Context) error {
	const mountPath = "nebula-refresh"
	n := b.cfg.refreshN
	ts, err := startTokenServer(b.cfg.latency, time.Hour)
	if err != nil {
		return err
	}
	defer ts.close()
	c := b.srv.Client
	if err := benchserver.Mount(ctx, c, b.nebula, mountPath); err != nil {
		return err
	}
	if _, err := c.Logical().WriteWithContext(ctx, mountPath+"/config", map[string]any{"insecure_http_hosts": ts.host}); err != nil {
		return fmt.Errorf("configuring %s/: %w", mountPath, err)
	}
	name := func(i int) string { return fmt.Sprintf("r%05d", i) }
	for start := 0; start < n; start += b.cfg.batch {
		var items []map[string]any
		for i := start; i < min(start+b.cfg.batch, n); i++ {
			items = append(items, map[string]any{
				"name": name(i), "type": "oauth2", "grant_type": "client_credentials",
				"client_id": "client-" + name(i), "client_secret": "bench-secret", "token_url": ts.url(),
			})
		}
		if err := batchCreate(ctx, c, mountPath, items); err != nil {
			return err
		}
	}

	// First reads: every credential obtains its first token, from -burst
	// clients at once.
	ts.resetMax()
	before := ts.requests.Load()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, b.cfg.burst)
	t0 := time.Now()
	for w := range b.cfg.burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := b.rd.get(ctx, mountPath+"/token/"+name(i), `"access_token"`); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("first token reads: %w", err)
	}
	b.add("first token reads (oauth2, cold)", n, round(time.Since(t0)).String(),
		fmt.Sprintf("%d clients, max %d in flight at the endpoint (%s latency), %d endpoint requests", b.cfg.burst, ts.maxInFlight(), b.cfg.latency, ts.requests.Load()-before))

	// Make every token due: refresh_ahead beyond their hour of life. The
	// new tokens live a day, so they are not due again (background refresh
	// finds nothing to take while refresh runs).
	ts.lifetime.Store(int64((24 * time.Hour).Seconds()))
	if _, err := c.Logical().WriteWithContext(ctx, mountPath+"/config", map[string]any{"refresh_ahead": "2h"}); err != nil {
		return fmt.Errorf("configuring %s/: %w", mountPath, err)
	}
	ts.resetMax()
	before = ts.requests.Load()
	t0 = time.Now()
	s, err := c.Logical().WriteWithContext(ctx, mountPath+"/refresh", map[string]any{})
	took := time.Since(t0)
	if err != nil {
		return fmt.Errorf("refresh: %w", err)
	}
	refreshed, failed := 0, 0
	if s != nil {
		r, _ := s.Data["refreshed"].([]any)
		f, _ := s.Data["failed"].([]any)
		refreshed, failed = len(r), len(f)
	}
	b.add("refresh of due oauth2 tokens", n, round(took).String(),
		fmt.Sprintf("%d refreshed, %d failed; max %d in flight at the endpoint (%s latency), %d endpoint requests",
			refreshed, failed, ts.maxInFlight(), b.cfg.latency, ts.requests.Load()-before))
	if _, err := c.Logical().WriteWithContext(ctx, mountPath+"/config", map[string]any{"refresh_ahead": "1m"}); err != nil {
		return fmt.Errorf("configuring %s/: %w", mountPath, err)
	}
	return nil
}

// percentile is the p-quantile of lat (nearest rank, sorted in place).
func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	return lat[int(p*float64(len(lat)-1)+0.5)]
}

// round keeps three significant-ish digits of a duration for the table.
func round(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
