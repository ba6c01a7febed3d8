package acceptance

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

// TestVersionedRegistration: the plugin is in the catalog under the version
// stamped into it with -ldflags, with its SHA-256, and the mount runs that
// version.
func TestVersionedRegistration(t *testing.T) {
	v := harness.SharedDev(t)
	_, pluginName, sha, version := harness.BuildPlugin(t)

	t.Run("catalog via cli", func(t *testing.T) {
		out, err := v.CLI(t, "plugin", "info", "-format=json", "-version="+version, "secret", pluginName)
		if err != nil {
			t.Fatalf("vault plugin info: %v", err)
		}
		var data map[string]any // plugin info prints the entry itself, not a secret
		if err := decodeJSON([]byte(out), &data); err != nil {
			t.Fatalf("decoding %q: %v", out, err)
		}
		requireFields(t, data, map[string]string{"name": pluginName, "version": version, "sha256": sha})
	})
	t.Run("catalog via api", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		secret, err := v.Client().Logical().ReadWithDataWithContext(ctx,
			"sys/plugins/catalog/secret/"+pluginName, map[string][]string{"version": {version}})
		if err != nil || secret == nil {
			t.Fatalf("reading the catalog entry: %v, %v", secret, err)
		}
		requireFields(t, secret.Data, map[string]string{"version": version, "sha256": sha})
	})
	t.Run("mount via cli", func(t *testing.T) {
		out, err := v.CLI(t, "read", "-format=json", "sys/mounts/"+v.Mount)
		if err != nil {
			t.Fatalf("vault read sys/mounts/%s: %v", v.Mount, err)
		}
		requireFields(t, cliData(t, out), map[string]string{
			"type": pluginName, "plugin_version": version,
			"running_plugin_version": version, "running_sha256": sha,
		})
	})
	t.Run("mount via secrets list", func(t *testing.T) {
		out, err := v.CLI(t, "secrets", "list", "-detailed", "-format=json")
		if err != nil {
			t.Fatalf("vault secrets list: %v", err)
		}
		var mounts map[string]map[string]any
		if err := decodeJSON([]byte(out), &mounts); err != nil {
			t.Fatalf("decoding %q: %v", out, err)
		}
		requireFields(t, mounts[v.Mount+"/"], map[string]string{"type": pluginName, "running_plugin_version": version})
	})
	t.Run("mount via api", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		m, err := v.Client().Sys().GetMountWithContext(ctx, v.Mount)
		if err != nil {
			t.Fatalf("GetMount: %v", err)
		}
		if m.RunningVersion != version || m.PluginVersion != version || m.RunningSha256 != sha {
			t.Errorf("mount runs %q (plugin_version %q, sha %q); want %q, %q", m.RunningVersion, m.PluginVersion, m.RunningSha256, version, sha)
		}
	})
}

// cliData decodes the data of a `vault read -format=json` answer.
func cliData(tb testing.TB, out string) map[string]any {
	tb.Helper()
	var body struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &body); err != nil {
		tb.Fatalf("decoding %q: %v", out, err)
	}
	return body.Data
}
