// Command nebula-credential-plugin is the nebula-credential secrets engine,
// served to Vault as an external plugin over gRPC.
package main

import (
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/plugin"

	nebula "github.com/nebula-credential/nebula-credential"
)

// version is set at build time: -ldflags "-X main.version=v0.1.0".
var version = "v0.0.0-dev"

func main() {
	logger := hclog.New(&hclog.LoggerOptions{Name: "nebula-credential"})

	meta := &api.PluginAPIClientMeta{}
	flags := meta.FlagSet()
	if err := flags.Parse(os.Args[1:]); err != nil {
		logger.Error("parsing plugin flags", "error", err)
		os.Exit(1)
	}

	nebula.Version = version
	err := plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: nebula.Factory,
		TLSProviderFunc:    api.VaultPluginTLSProvider(meta.GetTLSConfig()),
		Logger:             logger,
	})
	if err != nil {
		logger.Error("plugin shutting down", "error", err)
		os.Exit(1)
	}
}
