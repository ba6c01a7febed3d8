package client

import (
	"fmt"
	"os"
	"strconv"

	"github.com/hashicorp/vault/api"
)

// EnvMount is the environment variable NewFromEnv reads the engine's mount
// path from; DefaultMount when it is empty.
const EnvMount = "NEBULA_MOUNT"

// OpenBao's names of VAULT_ADDR, VAULT_TOKEN and VAULT_NAMESPACE, which
// NewFromEnv reads when the Vault ones are empty.
const (
	envBaoAddr      = "BAO_ADDR"
	envBaoToken     = "BAO_TOKEN"
	envBaoNamespace = "BAO_NAMESPACE"
)

// NewFromEnv returns a Client configured from the environment as the vault
// CLI is: VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE and the Vault API
// client's other variables (VAULT_CACERT, VAULT_CAPATH, VAULT_CLIENT_CERT,
// VAULT_CLIENT_KEY, VAULT_SKIP_VERIFY, VAULT_TLS_SERVER_NAME,
// VAULT_CLIENT_TIMEOUT, VAULT_AGENT_ADDR, VAULT_HTTP_PROXY, VAULT_HEADERS,
// ...; see api.Config.ReadEnvironment), and the engine's mount from
// NEBULA_MOUNT (default "nebula"). For OpenBao, BAO_ADDR, BAO_TOKEN and
// BAO_NAMESPACE stand in for the first three when those are not set. opts
// apply after the environment (WithMount overrides NEBULA_MOUNT).
//
// The Vault client's own retries are off: its policy retries every 5xx,
// refresh_failed and rotation_failed included. Retries are WithRetry's; a
// VAULT_MAX_RETRIES of n > 0 stands for WithRetry(n+1,
// DefaultRetryBackoff) unless opts set WithRetry. A malformed variable is
// an error; a missing token is not (Vault Agent may add it).
func NewFromEnv(opts ...Option) (*Client, error) {
	cfg := api.DefaultConfig() // reads the environment
	if cfg.Error != nil {
		return nil, fmt.Errorf("nebula: reading the Vault client's environment: %w", cfg.Error)
	}
	if os.Getenv(api.EnvVaultAddress) == "" && os.Getenv(api.EnvVaultAgentAddr) == "" {
		if addr := os.Getenv(envBaoAddr); addr != "" {
			cfg.Address = addr
		}
	}
	var pre []Option
	if v := os.Getenv(api.EnvVaultMaxRetries); v != "" {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("nebula: %s=%q is not a number of retries", api.EnvVaultMaxRetries, v)
		}
		if n > 0 {
			pre = append(pre, WithRetry(int(n)+1, DefaultRetryBackoff))
		}
	}
	cfg.MaxRetries = 0
	vc, err := api.NewClient(cfg) // reads VAULT_TOKEN, VAULT_NAMESPACE, VAULT_HEADERS
	if err != nil {
		return nil, fmt.Errorf("nebula: creating the Vault client: %w", err)
	}
	if os.Getenv(api.EnvVaultToken) == "" {
		if tok := os.Getenv(envBaoToken); tok != "" {
			vc.SetToken(tok)
		}
	}
	if os.Getenv(api.EnvVaultNamespace) == "" {
		if ns := os.Getenv(envBaoNamespace); ns != "" {
			vc.SetNamespace(ns)
		}
	}
	pre = append(pre, WithMount(os.Getenv(EnvMount)))
	return New(vc, append(pre, opts...)...), nil
}
