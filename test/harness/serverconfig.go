package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
)

func (v *Vault) serverArgs() ([]string, error) {
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(v.port))
	if v.mode == modeDev {
		args := []string{
			"server", "-dev",
			"-dev-listen-address=" + listen,
			"-dev-root-token-id=" + devRootToken,
			"-dev-no-store-token",
			"-dev-plugin-dir=" + v.Plugin.Dir,
			"-log-level=" + v.opts.logLevel,
		}
		if v.Host == HostOpenBao && (v.opts.maxJSONStrings != 0 || v.opts.maxJSONMemory != 0) {
			return nil, errors.New("WithListenerLimits needs a server with a configuration file (StartFile): an OpenBao dev server's listener takes no settings")
		}
		if extra := v.hostConfig(); extra != "" {
			// OpenBao merges the dev configuration with -config files.
			config := filepath.Join(v.dir, "dev-extra.hcl")
			if err := os.WriteFile(config, []byte(extra), 0o600); err != nil {
				return nil, err
			}
			args = append(args, "-config="+config)
		}
		return args, nil
	}
	config := filepath.Join(v.dir, "vault.hcl")
	if err := os.WriteFile(config, []byte(v.fileConfig()), 0o600); err != nil {
		return nil, err
	}
	return []string{"server", "-config=" + config, "-log-level=" + v.opts.logLevel}, nil
}

// fileConfig is the configuration of a file-storage server. The cluster
// listener (port+1) is set explicitly so it stays on loopback.
func (v *Vault) fileConfig() string {
	return v.serverConfig(fmt.Sprintf("storage \"file\" {\n  path = %q\n}\n", filepath.Join(v.dir, "data")))
}

// serverConfig is a server configuration with the given storage stanza: a
// loopback listener without TLS on v's port (cluster port next to it), the
// plugin directory and v's addresses.
func (v *Vault) serverConfig(storage string) string {
	cluster := net.JoinHostPort("127.0.0.1", strconv.Itoa(v.port+1))
	var limits string
	if v.Host == HostOpenBao {
		if v.opts.maxJSONStrings != 0 {
			limits += fmt.Sprintf("  max_request_json_strings = %d\n", v.opts.maxJSONStrings)
		}
		if v.opts.maxJSONMemory != 0 {
			limits += fmt.Sprintf("  max_request_json_memory  = %d\n", v.opts.maxJSONMemory)
		}
	}
	return storage + v.hostConfig() + fmt.Sprintf(`
listener "tcp" {
  address         = %q
  cluster_address = %q
  tls_disable     = true
%s}

plugin_directory = %q
api_addr         = %q
cluster_addr     = %q
disable_mlock    = true
ui               = false
`, net.JoinHostPort("127.0.0.1", strconv.Itoa(v.port)), cluster, limits, v.Plugin.Dir, v.Addr, "https://"+cluster)
}

// hostConfig is the configuration only OpenBao needs: the declared file
// audit device (WithFileAudit). It is empty on Vault, which enables the
// device through the API (enableAudit).
func (v *Vault) hostConfig() string {
	if v.Host != HostOpenBao || v.opts.auditFile == "" {
		return ""
	}
	return fmt.Sprintf(`
audit "file" "file" {
  options {
    file_path = %q
  }
}
`, v.opts.auditFile)
}

// enableAudit enables the file audit device of WithFileAudit on Vault
// through the API, unless it is enabled already (a restarted file server).
// OpenBao declares it in its configuration (hostConfig).
func (v *Vault) enableAudit(ctx context.Context) error {
	if v.Host == HostOpenBao || v.opts.auditFile == "" {
		return nil
	}
	audits, err := v.Client().Sys().ListAuditWithContext(ctx)
	if err != nil {
		return fmt.Errorf("listing audit devices: %w", err)
	}
	if _, ok := audits["file/"]; ok {
		return nil
	}
	if _, err := v.cli(ctx, cliOptions{token: v.Token}, "audit", "enable", "file", "file_path="+v.opts.auditFile); err != nil {
		return fmt.Errorf("enabling the file audit device: %w", err)
	}
	return nil
}
