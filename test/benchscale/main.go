// Command benchscale measures nebula-credential at scale through a real
// Vault dev server on loopback (make bench-scale):
//
//   - the fill rate of batch/create (api_key items, -batch per request);
//   - health and metrics latency (p50/p99) at 100, 10,000 and 100,000
//     credentials;
//   - random token reads across all names (token cache at its default
//     size) against the no-op plugin of make bench (test/noopplugin);
//   - the plugin process's resident memory at the largest size;
//   - the time from a plugin reload (sys/plugins/reload/backend) to the
//     first successful token read;
//   - refresh of -refresh due oauth2 client_credentials credentials against
//     a loopback token endpoint answering after -latency: the time of one
//     `refresh` write and the most requests in flight at the endpoint, and
//     the same maximum during the burst of first reads that obtains their
//     tokens.
//
// It prints the machine (CPU, cores, Go, Vault) and one table. -max scales
// the sizes down for quick runs (e.g. -max 2000: sizes 100 and 2,000).
//
// Usage (from the repository root): go run ./test/benchscale [-max 100000]
//
// Vault comes from VAULT_BIN, else scripts/install-vault.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nebula-credential/nebula-credential/test/benchserver"
)

// config holds the sizes and bounds of a run.
type config struct {
	max        int           // largest number of credentials
	batch      int           // items per batch/create request
	reads      int           // health/metrics reads per size
	minReads   int           // reads taken even past the budget
	budget     time.Duration // time bound of the reads of one endpoint at one size
	clients    int           // concurrent clients of random token reads
	round      time.Duration // one measured round of token reads
	rounds     int           // rounds per mount (interleaved)
	refreshN   int           // oauth2 credentials of the refresh scenario
	latency    time.Duration // token endpoint latency
	burst      int           // concurrent clients of the first reads
	reloadWait time.Duration // bound of reload-to-first-read
	src        string        // module root the plugins are built from ("": this repository)
	label      string        // describes src in the report
}

func main() {
	var cfg config
	flag.IntVar(&cfg.max, "max", 100_000, "largest number of credentials (sizes: 100, 10000, 100000 up to max, and max)")
	flag.IntVar(&cfg.batch, "batch", 500, "api_key items per batch/create request")
	flag.IntVar(&cfg.reads, "reads", 50, "health and metrics reads per size")
	flag.IntVar(&cfg.minReads, "min-reads", 3, "health and metrics reads per size even past -budget")
	flag.DurationVar(&cfg.budget, "budget", 20*time.Second, "time bound of the reads of one endpoint at one size (at least -min-reads are taken)")
	flag.IntVar(&cfg.clients, "c", 8, "concurrent clients of random token reads")
	flag.DurationVar(&cfg.round, "round", 2*time.Second, "length of one measured round of token reads")
	flag.IntVar(&cfg.rounds, "rounds", 3, "measured rounds of token reads per mount (interleaved)")
	flag.IntVar(&cfg.refreshN, "refresh", 1000, "due oauth2 credentials to refresh (0: skip)")
	flag.DurationVar(&cfg.latency, "latency", 100*time.Millisecond, "latency of the loopback token endpoint")
	flag.IntVar(&cfg.burst, "burst", 32, "concurrent clients of the first token reads of the oauth2 credentials")
	flag.DurationVar(&cfg.reloadWait, "reload-wait", 5*time.Minute, "bound of reload-to-first-read")
	flag.StringVar(&cfg.src, "src", "", "build the plugins from this module root instead of this repository (e.g. an export of another commit)")
	flag.StringVar(&cfg.label, "label", "", "what -src is, for the report (default: its git describe)")
	limit := flag.Duration("timeout", 20*time.Minute, "bound of the whole run")
	flag.Parse()
	if cfg.max < 1 || cfg.batch < 1 || cfg.batch > 5000 || cfg.reads < 1 || cfg.clients < 1 || cfg.rounds < 1 || cfg.burst < 1 {
		fmt.Fprintln(os.Stderr, "benchscale: -max, -reads, -c, -rounds and -burst must be positive, -batch 1 to 5000")
		os.Exit(2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "benchscale:", err)
		os.Exit(1)
	}
}

// sizes are the credential counts measured: 100, 10,000 and 100,000 up to
// max, and max itself.
func sizes(max int) []int {
	var out []int
	for _, n := range []int{100, 10_000, 100_000} {
		if n <= max {
			out = append(out, n)
		}
	}
	if !slices.Contains(out, max) {
		out = append(out, max)
	}
	return out
}

func run(ctx context.Context, cfg config) error {
	started := time.Now()
	root, err := benchserver.ModuleRoot("benchscale")
	if err != nil {
		return err
	}
	vaultBin, err := benchserver.FindVault(ctx, root)
	if err != nil {
		return err
	}
	if cfg.src != "" {
		if root, err = filepath.Abs(cfg.src); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "benchscale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	nebula := &benchserver.Plugin{Name: "nebula-credential-plugin", Pkg: "./cmd/nebula-credential-plugin", Mount: "nebula", Version: pluginVersion}
	noop := &benchserver.Plugin{Name: "noop-plugin", Pkg: "./test/noopplugin", Mount: "noop", Version: pluginVersion}
	pluginDir := filepath.Join(dir, "plugins")
	for _, p := range []*benchserver.Plugin{nebula, noop} {
		if err := benchserver.Build(ctx, root, pluginDir, p); err != nil {
			return err
		}
	}
	srv, err := benchserver.Start(ctx, vaultBin, dir, pluginDir, serverOptions)
	if err != nil {
		return err
	}
	defer srv.Stop()
	fail := srv.WithLog
	if err := benchserver.Register(ctx, srv.Client, []*benchserver.Plugin{nebula, noop}); err != nil {
		return fail(err)
	}
	for _, p := range []*benchserver.Plugin{nebula, noop} {
		if err := benchserver.Mount(ctx, srv.Client, p, p.Mount); err != nil {
			return fail(err)
		}
	}

	b := &bench{cfg: cfg, srv: srv, rd: newReader(srv.Addr, max(cfg.clients, cfg.burst)), nebula: nebula, noop: noop}
	if err := b.scale(ctx); err != nil {
		return fail(err)
	}
	if cfg.refreshN > 0 {
		if err := b.refresh(ctx); err != nil {
			return fail(err)
		}
	}
	b.report(ctx, vaultBin, root, cfg.label, time.Since(started))
	return nil
}

// bench runs the scenarios and collects the table.
type bench struct {
	cfg    config
	srv    *benchserver.Server
	rd     *reader
	nebula *benchserver.Plugin
	noop   *benchserver.Plugin
	rows   []row
}

// row is one line of the table.
type row struct {
	what   string
	creds  int
	value  string
	detail string
}

func (b *bench) add(what string, creds int, value, detail string) {
	b.rows = append(b.rows, row{what, creds, value, detail})
	// Progress on stderr, so a long run shows where it is.
	fmt.Fprintf(os.Stderr, "benchscale: %s (%d): %s %s\n", what, creds, value, detail)
}

// report prints the machine and the table.
func (b *bench) report(ctx context.Context, vaultBin, root, label string, took time.Duration) {
	version, _ := exec.CommandContext(ctx, vaultBin, "version").Output()
	vaultVersion, _, _ := strings.Cut(strings.TrimSpace(string(version)), ",")
	if label == "" {
		commit, _ := exec.CommandContext(ctx, "git", "-C", root, "describe", "--always", "--dirty").Output()
		label = strings.TrimSpace(string(commit))
	}

	fmt.Println("----- benchscale: nebula-credential at scale through Vault (copy from here) -----")
	fmt.Printf("machine: %s, %d cores (GOMAXPROCS %d), %s %s/%s, %s\n", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0),
		runtime.Version(), runtime.GOOS, runtime.GOARCH, vaultVersion)
	args := make([]string, len(os.Args)-1)
	for i, a := range os.Args[1:] {
		if strings.ContainsAny(a, " '\"") {
			a = strconv.Quote(a)
		}
		args[i] = a
	}
	fmt.Printf("code: %s; run took %s; command: make bench-scale ARGS='%s'\n", label, took.Round(time.Second), strings.Join(args, " "))
	width := len("measurement")
	for _, r := range b.rows {
		width = max(width, len(r.what))
	}
	fmt.Printf("%-*s %12s  %-28s %s\n", width, "measurement", "credentials", "result", "detail")
	for _, r := range b.rows {
		fmt.Printf("%-*s %12d  %-28s %s\n", width, r.what, r.creds, r.value, r.detail)
	}
	fmt.Println("----- end benchscale -----")
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	raw, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
