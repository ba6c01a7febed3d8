package harness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// PluginName is the name the plugin binary has in the plugin directory and
// in Vault's plugin catalog.
const PluginName = "nebula-credential-plugin"

// DefaultPluginVersion is the version BuildPlugin stamps into the plugin
// (-X main.version) and registers it under, unless NEBULA_PLUGIN_VERSION is
// set.
const DefaultPluginVersion = "v0.1.0-acceptance"

// Time limits of the helpers below. The Vault build is long on a cold cache
// (scripts/install-vault.sh); make test installs Vault before running tests.
const (
	pluginBuildTimeout  = 10 * time.Minute
	vaultInstallTimeout = 40 * time.Minute
)

// Plugin is a built plugin binary.
type Plugin struct {
	// Dir is the plugin directory holding the binary (and nothing else).
	Dir string
	// Name is the binary's file name and catalog name.
	Name string
	// SHA256 is the hex SHA-256 of the binary, for registration.
	SHA256 string
	// Version is the version stamped into the binary.
	Version string
}

var (
	pluginOnce   sync.Once
	pluginResult Plugin
	pluginErr    error

	rootOnce    sync.Once
	rootDir     string
	rootDirErr  error
	cleanupMu   sync.Mutex
	cleanupList []func()
)

// BuildPlugin builds ./cmd/nebula-credential-plugin into a fresh plugin
// directory, once per test binary, and returns the directory, the binary's
// name, its SHA-256 (hex) and the version stamped into it with -ldflags.
// The directory is removed by Main.
func BuildPlugin(tb testing.TB) (dir, name, sha256hex, version string) {
	tb.Helper()
	p, err := buildPlugin()
	if err != nil {
		tb.Fatalf("harness: building the plugin: %v", err)
	}
	return p.Dir, p.Name, p.SHA256, p.Version
}

func buildPlugin() (Plugin, error) {
	pluginOnce.Do(func() { pluginResult, pluginErr = doBuildPlugin() })
	return pluginResult, pluginErr
}

func doBuildPlugin() (Plugin, error) {
	root, err := ModuleRoot()
	if err != nil {
		return Plugin{}, err
	}
	version := os.Getenv("NEBULA_PLUGIN_VERSION")
	if version == "" {
		version = DefaultPluginVersion
	}
	dir, err := os.MkdirTemp("", "nebula-plugins-")
	if err != nil {
		return Plugin{}, err
	}
	atExit(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, PluginName)

	ctx, cancel := context.WithTimeout(context.Background(), pluginBuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin,
		"-ldflags", "-X main.version="+version, "./cmd/"+PluginName)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return Plugin{}, fmt.Errorf("go build ./cmd/%s: %w\n%s", PluginName, err, out)
	}
	sum, err := fileSHA256(bin)
	if err != nil {
		return Plugin{}, err
	}
	return Plugin{Dir: dir, Name: PluginName, SHA256: sum, Version: version}, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// VaultBinary returns the path of the server binary of the host under
// test (CurrentHost): Vault from scripts/install-vault.sh (which honours
// VAULT_BIN, then `vault` on PATH, then builds and caches Vault), or
// OpenBao's `bao` from scripts/install-openbao.sh (OPENBAO_BIN, then `bao`
// on PATH, then a cached build from the source archive), once per process.
// The binary is also the host's CLI and agent.
func VaultBinary(tb testing.TB) string {
	tb.Helper()
	path, err := vaultBinary()
	if err != nil {
		tb.Fatalf("harness: finding a %s binary: %v", CurrentHost().CLIName(), err)
	}
	return path
}

func vaultBinary() (string, error) { return hostBinary(CurrentHost()) }

// ModuleRoot returns the directory of the repository's go.mod.
func ModuleRoot() (string, error) {
	rootOnce.Do(func() { rootDir, rootDirErr = findModuleRoot() })
	return rootDir, rootDirErr
}

func findModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if gomod := strings.TrimSpace(string(out)); err == nil && gomod != "" && gomod != os.DevNull {
		return filepath.Dir(gomod), nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// atExit registers process-level cleanup, run by Main after the tests.
func atExit(f func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanupList = append(cleanupList, f)
}

// Main runs the tests of a package that uses the harness and then stops the
// shared servers and removes the plugin directory. Use it as
//
//	func TestMain(m *testing.M) { harness.Main(m) }
//
// Go passes m.Run's result to os.Exit when TestMain returns.
func Main(m *testing.M) {
	defer runAtExit()
	m.Run()
}

func runAtExit() {
	cleanupMu.Lock()
	list := cleanupList
	cleanupList = nil
	cleanupMu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		list[i]()
	}
}
