// Command noopplugin is a minimal external Vault secrets plugin for
// throughput comparisons (test/benchvault): one path, token/<name>, that
// answers constant data shaped like nebula-credential's token response
// without storage, locks or audit. It is served exactly as
// cmd/nebula-credential-plugin is (plugin.ServeMultiplex over gRPC), so the
// difference between the two is the engine's own cost.
package main

import (
	"context"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/plugin"
)

// version is set at build time: -ldflags "-X main.version=v0.1.0".
var version = "v0.0.0-dev"

// tokenLifetime is the lifetime of the constant token.
const tokenLifetime = time.Hour

func main() {
	logger := hclog.New(&hclog.LoggerOptions{Name: "noopplugin"})
	meta := &api.PluginAPIClientMeta{}
	if err := meta.FlagSet().Parse(os.Args[1:]); err != nil {
		logger.Error("parsing plugin flags", "error", err)
		os.Exit(1)
	}
	err := plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: factory,
		TLSProviderFunc:    api.VaultPluginTLSProvider(meta.GetTLSConfig()),
		Logger:             logger,
	})
	if err != nil {
		logger.Error("plugin shutting down", "error", err)
		os.Exit(1)
	}
}

// factory is the plugin's logical.Factory.
func factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := &framework.Backend{
		Help:           "A no-op secrets engine answering a constant token, for benchmarks.",
		BackendType:    logical.TypeLogical,
		RunningVersion: version,
		Paths: []*framework.Path{{
			Pattern: "token/(?P<name>[^/]+)$",
			Fields: map[string]*framework.FieldSchema{
				"name": {Type: framework.TypeString, Description: "Name of the credential (ignored)."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: readToken},
			},
			HelpSynopsis:    "Answer a constant token.",
			HelpDescription: "Answers the same data as nebula-credential's token/<name>, without doing anything.",
		}},
	}
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

// issuedAt is when the constant token was "issued": the plugin's start.
var issuedAt = time.Now()

func readToken(_ context.Context, _ *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	now := time.Now()
	expires := issuedAt.Add(tokenLifetime)
	return &logical.Response{Data: map[string]any{
		"access_token":    "noop-token",
		"token_type":      "api_key",
		"header_name":     "X-API-Key",
		"header_value":    "noop-token",
		"expires_at":      expires.UTC().Format(time.RFC3339),
		"ttl":             max(int64(expires.Sub(now).Seconds()), 1),
		"rotation_period": int64(tokenLifetime.Seconds()),
		"version":         1,
	}}, nil
}
