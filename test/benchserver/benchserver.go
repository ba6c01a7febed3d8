// Package benchserver is the Vault dev-server plumbing shared by the
// benchmark commands test/benchvault and test/benchscale: building the
// plugins (versioned, with their SHA-256), finding the Vault binary,
// starting `vault server -dev` on loopback with a clean environment,
// waiting until it is active, stopping it, and registering and mounting
// the plugins.
package benchserver

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
	// RootToken is the dev server's root token.
	RootToken    = "root"
	startTimeout = 90 * time.Second
	stopTimeout  = 15 * time.Second
)

// Plugin is one plugin to build, register and mount.
type Plugin struct {
	Name    string // binary and catalog name
	Pkg     string // Go package to build
	Mount   string // default mount path
	Version string // plugin version, built in and registered
	SHA     string // SHA-256 of the built binary, set by Build
	Path    string // the built binary, set by Build
}

// ModuleRoot is the directory of the repository's go.mod; command names
// the caller in the error.
func ModuleRoot(command string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("run %s inside the repository (go env GOMOD found no go.mod)", command)
	}
	return filepath.Dir(gomod), nil
}

// FindVault returns VAULT_BIN, else what scripts/install-vault.sh prints.
func FindVault(ctx context.Context, root string) (string, error) {
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

// Build compiles a plugin from the module at root into dir, with
// main.version set to p.Version, and records its path and SHA-256.
func Build(ctx context.Context, root, dir string, p *Plugin) error {
	p.Path = filepath.Join(dir, p.Name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", p.Path, "-ldflags", "-X main.version="+p.Version, p.Pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", p.Pkg, err, out)
	}
	raw, err := os.ReadFile(p.Path)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(raw)
	p.SHA = hex.EncodeToString(sum[:])
	return nil
}

// Options are what the commands start their servers with differently.
type Options struct {
	// Config, when not empty, is written to <dir>/extra.hcl and passed
	// with -config (e.g. to raise default_max_request_duration).
	Config string
	// ClientTimeout bounds each request of Server.Client (0: 30 s).
	ClientTimeout time.Duration
	// NoRetries turns off the API client's retries of 5xx answers.
	NoRetries bool
	// KillWithParent sends the server SIGTERM when this process dies.
	KillWithParent bool
}

// Server is a running Vault dev server.
type Server struct {
	Addr    string      // http://127.0.0.1:<port>
	Client  *api.Client // with the root token
	LogPath string      // the server's stdout and stderr
	cmd     *exec.Cmd
	done    chan struct{}
}

// Start starts `vault server -dev` from bin on a free loopback port (its
// cluster listener takes the next one), with HOME and the log in dir and
// plugins from pluginDir, and waits until it is active.
func Start(ctx context.Context, bin, dir, pluginDir string, opts Options) (*Server, error) {
	port, err := freePortPair()
	if err != nil {
		return nil, err
	}
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	args := []string{"server", "-dev",
		"-dev-listen-address=127.0.0.1:" + strconv.Itoa(port),
		"-dev-root-token-id=" + RootToken, "-dev-no-store-token",
		"-dev-plugin-dir=" + pluginDir}
	if opts.Config != "" {
		extra := filepath.Join(dir, "extra.hcl")
		if err := os.WriteFile(extra, []byte(opts.Config), 0o600); err != nil {
			return nil, err
		}
		args = append(args, "-config="+extra)
	}
	args = append(args, "-log-level=warn")
	s := &Server{Addr: "http://127.0.0.1:" + strconv.Itoa(port), LogPath: filepath.Join(dir, "vault.log")}
	logFile, err := os.Create(s.LogPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir = home
	s.cmd.Env = cleanEnv(home)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// A process group of its own, so a stuck server is killed with its
	// plugin processes.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if opts.KillWithParent {
		s.cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	s.done = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()

	timeout := opts.ClientTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	s.Client, err = api.NewClient(&api.Config{Address: s.Addr, HttpClient: &http.Client{Timeout: timeout}})
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.Client.SetToken(RootToken)
	s.Client.ClearNamespace()
	if opts.NoRetries {
		s.Client.SetMaxRetries(0)
	}

	wait, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		h, err := s.Client.Sys().HealthWithContext(wait)
		if err == nil && h.Initialized && !h.Sealed && !h.Standby {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("vault exited while starting:\n%s", Tail(s.LogPath))
		case <-wait.Done():
			s.Stop()
			return nil, fmt.Errorf("vault not active within %s:\n%s", startTimeout, Tail(s.LogPath))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM, then kills the process group if Vault does not exit.
func (s *Server) Stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return
	case <-time.After(stopTimeout):
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}

// WithLog adds the end of the server log to err, for error messages.
func (s *Server) WithLog(err error) error {
	return fmt.Errorf("%w\nvault log (%s):\n%s", err, s.LogPath, Tail(s.LogPath))
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

// Register adds the plugins to the catalog (versioned, with their SHA-256).
func Register(ctx context.Context, c *api.Client, plugins []*Plugin) error {
	for _, p := range plugins {
		if err := c.Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
			Name: p.Name, Type: api.PluginTypeSecrets, Command: p.Name, SHA256: p.SHA, Version: p.Version,
		}); err != nil {
			return fmt.Errorf("registering %s: %w", p.Name, err)
		}
	}
	return nil
}

// Mount mounts a registered plugin at path, pinned to its version.
func Mount(ctx context.Context, c *api.Client, p *Plugin, path string) error {
	if err := c.Sys().MountWithContext(ctx, path, &api.MountInput{Type: p.Name, Config: api.MountConfigInput{PluginVersion: p.Version}}); err != nil {
		return fmt.Errorf("mounting %s at %s/: %w", p.Name, path, err)
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

// Tail is the end of a log file, for error messages.
func Tail(path string) string {
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
