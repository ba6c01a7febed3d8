package acceptance

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/test/harness"
	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// Timings of TestAgentTemplate. The OAuth2 server issues 120s tokens and
// the mount's refresh_ahead is 100s, so the engine serves each token for
// agentTokenWindow (20s): token/<name> answers ttl <= 15 with a
// rotation_period, and Vault Agent (consul-template) reads the secret again
// ttl+1 seconds after each read.
const (
	agentTokenLifetime = 120 * time.Second
	agentRefreshAhead  = 100 * time.Second
	// agentRefreshAfter is when, after the first render, the test refreshes:
	// early enough that the new token exists when the agent reads again
	// (about a window later), late enough that it is still served then
	// (its own window runs until agentRefreshAfter + agentTokenWindow).
	agentRefreshAfter = 8 * time.Second
	agentTokenWindow  = agentTokenLifetime - agentRefreshAhead
	// agentStartWait bounds the agent's start, authentication and first
	// render.
	agentStartWait = 30 * time.Second
	// agentRenderWait bounds the re-render after a refresh: the agent wakes
	// at most a window (+1s) after its last read; the rest is slack.
	agentRenderWait = agentTokenWindow + 10*time.Second
	agentStopWait   = 10 * time.Second
)

// TestAgentTemplate runs a real Vault Agent (the same vault binary) against
// the server: auto_auth with a token file holding a token whose policy may
// read only the credential's token, and a template rendering
// {{ .Data.access_token }} to a file. The file gets the token; after
// refresh/<name> it gets the new token, as soon as the ttl of the token the
// agent read has passed (ttl + rotation_period drive the agent's re-read).
// About 20s.
func TestAgentTemplate(t *testing.T) {
	t.Parallel()
	v := harness.SharedDev(t)
	mount := ownMount(t, v, "nebula-agent")
	srv := oauthserver.Start(t, oauthserver.WithAccessTokenLifetime(agentTokenLifetime))
	cliWrite(t, v, mount+"/config", "insecure_http_hosts=127.0.0.1",
		fmt.Sprintf("refresh_ahead=%ds", int(agentRefreshAhead.Seconds())))
	name := newName("agent-oauth")
	id, secret := srv.ClientCredentialsClient()
	cliWrite(t, v, mount+"/creds/"+name, "type=oauth2", "grant_type=client_credentials",
		"client_id="+id, "client_secret="+secret, "token_url="+srv.TokenURL(), "auth_style=header")

	tokenPath := mount + "/token/" + name
	agentToken := tokenWithPolicy(t, v, newName("agent-policy"), fmt.Sprintf(`
path %q { capabilities = ["read"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
`, tokenPath))

	dir := t.TempDir()
	out := filepath.Join(dir, "token.txt")
	startAgent(t, v, dir, agentToken, fmt.Sprintf(`{{ with secret %q }}{{ .Data.access_token }}{{ end }}`, tokenPath), out)

	first := waitForFile(t, out, agentStartWait, func(s string) bool { return s != "" })
	seenAt := time.Now()
	t.Logf("agent rendered the first token after start")
	served := cliRead(t, v, tokenPath)
	requireFields(t, served.Data, map[string]string{"access_token": first})
	if n := srv.TokenRequests(); n != 1 {
		t.Errorf("the OAuth2 server had %d token requests after the first render; want 1", n)
	}

	// Refresh some seconds into the first token's window, so the new
	// token is still served when the agent reads again (at the end of the
	// first window).
	time.Sleep(time.Until(seenAt.Add(agentRefreshAfter)))
	refreshedAt := time.Now()
	refreshed := field(cliWrite(t, v, mount+"/refresh/"+name).Data, "access_token")
	if refreshed == "" || refreshed == first {
		t.Fatalf("refresh answered access_token %q; want a new token (old %q)", refreshed, first)
	}
	got := waitForFile(t, out, agentRenderWait, func(s string) bool {
		if s != first && s != refreshed {
			t.Fatalf("the agent rendered a token that is neither the first nor the refreshed one")
		}
		return s == refreshed
	})
	if got != refreshed {
		t.Fatalf("file holds %q; want the refreshed token", got)
	}
	t.Logf("agent rendered the refreshed token %s after refresh", time.Since(refreshedAt).Round(100*time.Millisecond))
	requireNoSecrets(t, "rendered file", got, []string{secret})
}

// startAgent writes a Vault Agent configuration (auto_auth with a token
// file holding token, one template rendering contents to dest) and runs
// `vault agent` until the test ends. A failing test prints the agent log.
func startAgent(tb testing.TB, v *harness.Vault, dir, token, contents, dest string) {
	tb.Helper()
	tokenFile := filepath.Join(dir, "vault-token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		tb.Fatal(err)
	}
	config := filepath.Join(dir, "agent.hcl")
	hcl := fmt.Sprintf(`
vault {
  address = %q
}

auto_auth {
  method "token_file" {
    config = {
      token_file_path = %q
    }
  }
}

template_config {
  exit_on_retry_failure = true
}

template {
  contents    = %q
  destination = %q
}
`, v.Addr, tokenFile, contents, dest)
	if err := os.WriteFile(config, []byte(hcl), 0o600); err != nil {
		tb.Fatal(err)
	}

	logPath := filepath.Join(dir, "agent.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(harness.VaultBinary(tb), "agent", "-config="+config, "-log-level=debug")
	cmd.Dir = dir
	cmd.Env = agentEnv(dir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		tb.Fatalf("starting vault agent: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit shows in the log
		close(done)
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(agentStopWait):
			_ = cmd.Process.Kill()
			<-done
		}
		logFile.Close()
		if tb.Failed() {
			log, _ := os.ReadFile(logPath)
			tb.Logf("vault agent log:\n%s", log)
		}
	})
}

// agentEnv is the caller's environment without VAULT_* and BAO_* variables,
// with HOME set to dir so the agent (`vault agent` or `bao agent`) touches
// nothing of the user's.
func agentEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "BAO_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+dir)
}

// waitForFile polls path every 200ms until done accepts its (trimmed)
// content, and answers that content; it fails the test after wait.
func waitForFile(tb testing.TB, path string, wait time.Duration, done func(string) bool) string {
	tb.Helper()
	deadline := time.Now().Add(wait)
	var last string
	for {
		raw, err := os.ReadFile(path)
		if err == nil {
			last = string(bytes.TrimSpace(raw))
			if done(last) {
				return last
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not rendered as expected within %s (last content %q, err %v)", filepath.Base(path), wait, last, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
