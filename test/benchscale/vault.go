package main

// The Vault side of the benchmark: building and registering the plugins and
// running a dev server. Copied from test/benchvault (kept apart so the two
// commands can change independently), with a server config that lifts
// Vault's 90 s request limit: a slow `refresh` of many credentials must be
// measured, not cut off.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
)

const (
	rootToken     = "root"
	pluginVersion = "v0.1.0-benchscale"
	startTimeout  = 90 * time.Second
	stopTimeout   = 15 * time.Second
	// maxRequestDuration is the server's default_max_request_duration.
	maxRequestDuration = 10 * time.Minute
)

// plugin is one plugin to build, register and mount.
type plugin struct {
	name  string // binary and catalog name
	pkg   string // Go package to build
	mount string
	sha   string
	path  string // the built binary
}

// moduleRoot is the directory of the repository's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", errors.New("run benchscale inside the repository (go env GOMOD found no go.mod)")
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

// build compiles a plugin into dir and records its path and SHA-256.
func build(ctx context.Context, root, dir string, p *plugin) error {
	p.path = filepath.Join(dir, p.name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", p.path, "-ldflags", "-X main.version="+pluginVersion, p.pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", p.pkg, err, out)
	}
	raw, err := os.ReadFile(p.path)
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
// cluster listener takes the next one), with a config file raising the
// request duration limit, and waits until it is active.
func startVault(ctx context.Context, bin, dir, pluginDir string) (*server, error) {
	port, err := freePortPair()
	if err != nil {
		return nil, err
	}
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	extra := filepath.Join(dir, "extra.hcl")
	if err := os.WriteFile(extra, []byte(fmt.Sprintf("default_max_request_duration = %q\n", maxRequestDuration)), 0o600); err != nil {
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
		"-dev-plugin-dir="+pluginDir, "-config="+extra, "-log-level=warn")
	s.cmd.Dir = home
	s.cmd.Env = cleanEnv(home)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// A process group of its own, so a stuck server is killed with its
	// plugin processes; SIGTERM when this process dies.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	s.done = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()

	s.client, err = api.NewClient(&api.Config{Address: s.addr, HttpClient: &http.Client{Timeout: maxRequestDuration}})
	if err != nil {
		s.stop()
		return nil, err
	}
	s.client.SetToken(rootToken)
	s.client.ClearNamespace()
	s.client.SetMaxRetries(0)

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

// register adds the plugins to the catalog (versioned, with their SHA-256).
func register(ctx context.Context, c *api.Client, plugins []*plugin) error {
	for _, p := range plugins {
		if err := c.Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
			Name: p.name, Type: api.PluginTypeSecrets, Command: p.name, SHA256: p.sha, Version: pluginVersion,
		}); err != nil {
			return fmt.Errorf("registering %s: %w", p.name, err)
		}
	}
	return nil
}

// mount mounts a registered plugin at path.
func mount(ctx context.Context, c *api.Client, p *plugin, path string) error {
	if err := c.Sys().MountWithContext(ctx, path, &api.MountInput{Type: p.name, Config: api.MountConfigInput{PluginVersion: pluginVersion}}); err != nil {
		return fmt.Errorf("mounting %s at %s/: %w", p.name, path, err)
	}
	return nil
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
