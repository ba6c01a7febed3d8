package harness_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// TestStartDev starts a dev server and checks what every acceptance test
// relies on: the plugin mounted under its version, the root token on the
// API client and the CLI, CLI failures as *CLIError, and a restart that
// brings the mount back.
func TestStartDev(t *testing.T) {
	v := harness.StartDev(t)
	dir, name, sha, version := harness.BuildPlugin(t)
	if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
		t.Fatalf("plugin binary: %v", err)
	}
	if len(sha) != 64 || version == "" {
		t.Fatalf("BuildPlugin answered sha %q, version %q", sha, version)
	}
	if !strings.HasPrefix(v.Addr, "http://127.0.0.1:") {
		t.Errorf("Addr = %q, want loopback", v.Addr)
	}

	requireMount := func(t *testing.T) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m, err := v.Client().Sys().GetMountWithContext(ctx, v.Mount)
		if err != nil {
			t.Fatalf("reading mount %s: %v", v.Mount, err)
		}
		if m.Type != name || m.RunningVersion != version {
			t.Errorf("mount %s: type %q version %q; want %q %q", v.Mount, m.Type, m.RunningVersion, name, version)
		}
	}
	requireMount(t)

	out, err := v.CLI(t, "token", "lookup", "-format=json")
	if err != nil || !strings.Contains(out, `"root"`) {
		t.Errorf("vault token lookup: %q, %v", out, err)
	}
	_, err = v.CLIWithToken(t, "not-a-token", "secrets", "list")
	var ce *harness.CLIError
	if !errors.As(err, &ce) || ce.ExitCode == 0 || !strings.Contains(ce.Stderr, "403") {
		t.Errorf("CLI with a bad token: %v; want a *CLIError with a 403", err)
	}
	out, err = v.CLIWith(t, harness.CLIOptions{Token: v.Token, Stdin: `{"type":"api_key","api_key":"h-SECRET"}`},
		"write", "-format=json", v.Mount+"/creds/harness", "-")
	if err != nil || !strings.Contains(out, `"api_key"`) {
		t.Errorf("vault write with JSON on stdin: %q, %v", out, err)
	}

	v.Restart(t)
	requireMount(t)
	if !v.Running() {
		t.Error("Running() is false after Restart")
	}
	if !strings.Contains(v.Log(), "==> harness:") {
		t.Error("the server log does not hold the harness's start lines")
	}
}
