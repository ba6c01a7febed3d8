package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Host is the server product the harness runs: HashiCorp Vault or OpenBao.
// Both run the same plugin build; the harness hides their differences
// (binary, audit devices, listener limits) behind the same API.
type Host string

// The hosts. HostEnv selects one; Vault is the default.
const (
	HostVault   Host = "vault"
	HostOpenBao Host = "openbao"
)

// HostEnv is the environment variable that selects the host of every
// server a test binary starts: "vault" (default) or "openbao".
const HostEnv = "NEBULA_TEST_HOST"

// CurrentHost is the host selected by NEBULA_TEST_HOST ("vault" when it is
// empty). An unknown value panics: a typo must not silently test Vault.
func CurrentHost() Host {
	switch h := Host(strings.ToLower(strings.TrimSpace(os.Getenv(HostEnv)))); h {
	case "", HostVault:
		return HostVault
	case HostOpenBao, "bao":
		return HostOpenBao
	default:
		panic(fmt.Sprintf("harness: %s=%q: want %q or %q", HostEnv, string(h), HostVault, HostOpenBao))
	}
}

// IsOpenBao reports whether the servers are OpenBao.
func IsOpenBao() bool { return CurrentHost() == HostOpenBao }

// CLIName is the host's command-line tool ("vault" or "bao"), for messages.
func (h Host) CLIName() string {
	if h == HostOpenBao {
		return "bao"
	}
	return "vault"
}

// installScript is the script that prints (building when needed) the
// host's binary: scripts/install-vault.sh honours VAULT_BIN,
// scripts/install-openbao.sh OPENBAO_BIN.
func (h Host) installScript() string {
	if h == HostOpenBao {
		return "install-openbao.sh"
	}
	return "install-vault.sh"
}

var (
	hostBinMu   sync.Mutex
	hostBinDone = map[Host]bool{}
	hostBinPath = map[Host]string{}
	hostBinErr  = map[Host]error{}
)

// hostBinary returns the path of the host's server binary, once per
// process and host.
func hostBinary(h Host) (string, error) {
	hostBinMu.Lock()
	defer hostBinMu.Unlock()
	if !hostBinDone[h] {
		hostBinPath[h], hostBinErr[h] = installHost(h)
		hostBinDone[h] = true
	}
	return hostBinPath[h], hostBinErr[h]
}

// installHost runs the host's install script and answers the path it
// printed last.
func installHost(h Host) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), vaultInstallTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	script := h.installScript()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", script))
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("scripts/%s: %w\n%s", script, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	path := strings.TrimSpace(lines[len(lines)-1])
	if info, err := os.Stat(path); err != nil || info.IsDir() {
		return "", fmt.Errorf("scripts/%s printed %q, which is not a file", script, path)
	}
	return path, nil
}
