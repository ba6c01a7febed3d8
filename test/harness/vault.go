// Package harness runs a real Vault (or OpenBao) server with the
// nebula-credential plugin registered (versioned, with its SHA-256) and
// mounted at nebula/, for acceptance tests. Servers listen on loopback only,
// every wait is bounded, and the CLI runs with its own HOME so nothing
// touches the user's ~/.vault-token.
//
// The host is HashiCorp Vault unless NEBULA_TEST_HOST=openbao selects
// OpenBao (see CurrentHost); every kind of server below exists on both, and
// options that differ between the hosts (WithFileAudit, WithListenerLimits)
// are applied the way each host needs.
//
// Two kinds of server:
//
//   - StartDev: `vault server -dev` (in-memory storage, root token "root"),
//     stopped when the test ends. SharedDev gives the tests of one package a
//     single dev server, stopped by Main.
//   - StartFile: a server with `storage "file"`, initialised with one key
//     share and unsealed; Stop and Start (or Restart) keep the data, so a
//     test can show it survives a restart.
package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// DefaultMount is where the plugin is mounted unless WithMount says
// otherwise.
const DefaultMount = "nebula"

// devRootToken is the root token of dev servers.
const devRootToken = "root"

// Time limits.
const (
	defaultStartTimeout = 90 * time.Second
	stopTimeout         = 15 * time.Second
	cliTimeout          = 2 * time.Minute
	// maxLogDump bounds how much of the server log a failed test prints.
	maxLogDump = 256 << 10
	// startAttempts bounds retries when a port turns out to be taken.
	startAttempts = 5
)

type mode int

const (
	modeDev mode = iota
	modeFile
)

// Vault is a running (or stopped) Vault or OpenBao server.
type Vault struct {
	// Host is the server product (Vault or OpenBao).
	Host Host
	// Addr is the server's address, e.g. http://127.0.0.1:41234. A restart
	// keeps it when the port is still free.
	Addr string
	// Token is the root token.
	Token string
	// Mount is the plugin's mount path without slashes ("" when not
	// mounted).
	Mount string
	// Plugin is the registered plugin build.
	Plugin Plugin

	mode    mode
	opts    options
	bin     string
	dir     string // working directory: home, log, config, data
	home    string // HOME of the server and the CLI
	logPath string
	port    int

	// unsealKey is the single unseal key of a file server.
	unsealKey string

	mu   sync.Mutex // guards cmd and done
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd exits
}

// StartDev starts `vault server -dev` with the plugin registered and mounted
// at nebula/ and stops it when the test ends, printing the server log if the
// test failed.
func StartDev(tb testing.TB, opts ...Option) *Vault {
	tb.Helper()
	return startForTest(tb, modeDev, opts)
}

// StartFile starts a server with file storage in a temporary directory,
// initialises it (one key share, threshold one), unseals it, registers the
// plugin and mounts it at nebula/. Stop and Start (or Restart) keep the
// data. The server is stopped when the test ends.
func StartFile(tb testing.TB, opts ...Option) *Vault {
	tb.Helper()
	return startForTest(tb, modeFile, opts)
}

func startForTest(tb testing.TB, m mode, opts []Option) *Vault {
	tb.Helper()
	v, err := newVault(m, tb.TempDir(), opts)
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	tb.Cleanup(func() {
		v.stop()
		if tb.Failed() {
			tb.Logf("vault server log (%s):\n%s", v.logPath, v.logSince(0))
		}
	})
	if err := v.start(); err != nil {
		tb.Fatalf("harness: starting vault: %v\nserver log:\n%s", err, v.logSince(0))
	}
	return v
}

var shared struct {
	once sync.Once
	v    *Vault
	err  error
}

// SharedDev returns the package's shared dev server, starting it on first
// use (opts count on that call only); Main stops it after the tests. Tests sharing it should use distinct
// credential names. A failing test prints the part of the server log written
// while it ran.
func SharedDev(tb testing.TB, opts ...Option) *Vault {
	tb.Helper()
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "nebula-vault-")
		if err != nil {
			shared.err = err
			return
		}
		atExit(func() { os.RemoveAll(dir) })
		v, err := newVault(modeDev, dir, opts)
		if err != nil {
			shared.err = err
			return
		}
		atExit(v.stop)
		if err := v.start(); err != nil {
			shared.err = fmt.Errorf("starting vault: %w\nserver log:\n%s", err, v.logSince(0))
			return
		}
		shared.v = v
	})
	if shared.err != nil {
		tb.Fatalf("harness: shared dev server: %v", shared.err)
	}
	v := shared.v
	offset := v.logSize()
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("vault server log during %s (%s):\n%s", tb.Name(), v.logPath, v.logSince(offset))
		}
	})
	return v
}

func newVault(m mode, dir string, opts []Option) (*Vault, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	bin, err := vaultBinary()
	if err != nil {
		return nil, err
	}
	p, err := buildPlugin()
	if err != nil {
		return nil, err
	}
	v := &Vault{
		Host:    CurrentHost(),
		Plugin:  p,
		mode:    m,
		opts:    o,
		bin:     bin,
		dir:     dir,
		home:    filepath.Join(dir, "home"),
		logPath: filepath.Join(dir, "vault.log"),
	}
	if m == modeDev {
		v.Token = devRootToken
	}
	if err := os.MkdirAll(v.home, 0o700); err != nil {
		return nil, err
	}
	return v, nil
}

// Stop stops the server (SIGTERM, then SIGKILL after a while). A file
// server keeps its data for Start.
func (v *Vault) Stop(tb testing.TB) {
	tb.Helper()
	v.stop()
}

// Start starts a stopped server again: a file server on the same data
// directory (and unseals it), a dev server afresh (its data is gone; the
// plugin is registered and mounted again).
func (v *Vault) Start(tb testing.TB) {
	tb.Helper()
	if err := v.start(); err != nil {
		tb.Fatalf("harness: starting vault: %v\nserver log:\n%s", err, v.logSince(0))
	}
}

// Restart stops and starts the server.
func (v *Vault) Restart(tb testing.TB) {
	tb.Helper()
	v.Stop(tb)
	v.Start(tb)
}

// Running reports whether the server process is running.
func (v *Vault) Running() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.done == nil {
		return false
	}
	select {
	case <-v.done:
		return false
	default:
		return true
	}
}

// start runs the process (retrying on a taken port), waits until it is
// healthy, then initialises, unseals, registers and mounts as needed.
func (v *Vault) start() error {
	if v.Running() {
		return errors.New("already running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), v.opts.startTimeout)
	defer cancel()

	var err error
	for attempt := 0; attempt < startAttempts; attempt++ {
		if v.port == 0 || attempt > 0 {
			if v.port, err = freePortPair(); err != nil {
				return err
			}
		}
		v.Addr = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(v.port))
		offset := v.logSize()
		if err = v.spawn(); err != nil {
			return err
		}
		err = v.waitResponding(ctx)
		if err == nil {
			break
		}
		v.stop()
		if !strings.Contains(v.logSince(offset), "address already in use") {
			return err
		}
	}
	if err != nil {
		return err
	}
	if v.mode == modeFile {
		if err := v.initAndUnseal(ctx); err != nil {
			return err
		}
	}
	if err := v.waitActive(ctx); err != nil {
		return err
	}
	if err := v.enableAudit(ctx); err != nil {
		return err
	}
	return v.setupPlugin(ctx)
}

// spawn starts the server process, its output appended to the log file.
func (v *Vault) spawn() error {
	args, err := v.serverArgs()
	if err != nil {
		return err
	}
	return v.startProcess(args)
}

// startProcess runs the vault binary with args in v's directory and
// environment, appending its output to v's log, and records the process.
func (v *Vault) startProcess(args []string) error {
	logFile, err := os.OpenFile(v.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "==> harness: %s %s\n", v.bin, strings.Join(args, " "))

	cmd := exec.Command(v.bin, args...)
	cmd.Dir = v.dir
	cmd.Env = v.env("")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", v.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status shows in the log
		close(done)
	}()
	v.mu.Lock()
	v.cmd, v.done = cmd, done
	v.mu.Unlock()
	return nil
}

// env is the environment of the server and of CLI commands: the caller's,
// without VAULT_* and BAO_* variables, with a private HOME, and with
// VAULT_ADDR and (when not empty) VAULT_TOKEN, which OpenBao's bao reads as
// well as BAO_ADDR and BAO_TOKEN.
func (v *Vault) env(token string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "BAO_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+v.home, "VAULT_ADDR="+v.Addr)
	if token != "" {
		env = append(env, "VAULT_TOKEN="+token)
	}
	return env
}

// waitResponding waits until the server answers sys/health at all.
func (v *Vault) waitResponding(ctx context.Context) error {
	return v.poll(ctx, "answering sys/health", func() (bool, error) {
		_, err := v.rawClient("").Sys().HealthWithContext(ctx)
		return err == nil, nil
	})
}

// waitActive waits until the server is initialised, unsealed and active.
func (v *Vault) waitActive(ctx context.Context) error {
	return v.poll(ctx, "becoming active", func() (bool, error) {
		h, err := v.rawClient("").Sys().HealthWithContext(ctx)
		return err == nil && h.Initialized && !h.Sealed && !h.Standby, nil
	})
}

// poll calls check every 100ms until it reports done, the process exits or
// ctx ends.
func (v *Vault) poll(ctx context.Context, what string, check func() (bool, error)) error {
	v.mu.Lock()
	done := v.done
	v.mu.Unlock()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := check()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("vault exited before %s", what)
		case <-ctx.Done():
			return fmt.Errorf("vault not %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// initAndUnseal initialises a new file server (one key share) and unseals
// it with the key kept from the first start.
func (v *Vault) initAndUnseal(ctx context.Context) error {
	c := v.rawClient("")
	inited, err := c.Sys().InitStatusWithContext(ctx)
	if err != nil {
		return fmt.Errorf("init status: %w", err)
	}
	if !inited {
		resp, err := c.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
		if err != nil {
			return fmt.Errorf("initialising: %w", err)
		}
		v.unsealKey, v.Token = resp.Keys[0], resp.RootToken
	}
	if v.unsealKey == "" {
		return errors.New("initialised by someone else: no unseal key")
	}
	status, err := c.Sys().UnsealWithContext(ctx, v.unsealKey)
	if err != nil {
		return fmt.Errorf("unsealing: %w", err)
	}
	if status.Sealed {
		return errors.New("still sealed after the unseal key")
	}
	return nil
}

// setupPlugin registers the plugin (versioned, with its SHA-256) and mounts
// it, unless it is mounted already (a restarted file server).
func (v *Vault) setupPlugin(ctx context.Context) error {
	if !v.opts.register {
		return nil
	}
	if v.opts.mount != "" {
		mounts, err := v.Client().Sys().ListMountsWithContext(ctx)
		if err != nil {
			return fmt.Errorf("listing mounts: %w", err)
		}
		if _, ok := mounts[v.opts.mount+"/"]; ok {
			v.Mount = v.opts.mount
			return nil
		}
	}
	p := v.Plugin
	if _, err := v.cli(ctx, cliOptions{token: v.Token}, "plugin", "register",
		"-sha256="+p.SHA256, "-version="+p.Version, "secret", p.Name); err != nil {
		return fmt.Errorf("registering the plugin: %w", err)
	}
	if v.opts.mount == "" {
		return nil
	}
	if _, err := v.cli(ctx, cliOptions{token: v.Token}, "secrets", "enable",
		"-path="+v.opts.mount, "-plugin-version="+p.Version, p.Name); err != nil {
		return fmt.Errorf("mounting the plugin at %s/: %w", v.opts.mount, err)
	}
	v.Mount = v.opts.mount
	return nil
}

// detach takes the running server process (nil when none) and its exit
// channel from v, so that one caller ends it.
func (v *Vault) detach() (*exec.Cmd, chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	cmd, done := v.cmd, v.done
	v.cmd, v.done = nil, nil
	return cmd, done
}

// stop ends the server process: SIGTERM, then SIGKILL to its process group
// (the plugin processes included) when it does not exit in time.
func (v *Vault) stop() {
	cmd, done := v.detach()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return
	case <-time.After(stopTimeout):
	}
	killGroup(cmd.Process)
	select {
	case <-done:
	case <-time.After(stopTimeout):
	}
}
