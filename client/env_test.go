package client_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/client"
)

// clearVaultEnv empties the environment variables NewFromEnv reads, for
// the test.
func clearVaultEnv(t *testing.T) {
	t.Helper()
	for _, v := range []string{
		"VAULT_ADDR", "VAULT_AGENT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "VAULT_MAX_RETRIES", "VAULT_HEADERS",
		"VAULT_CACERT", "VAULT_CAPATH", "VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY", "VAULT_SKIP_VERIFY",
		"VAULT_HTTP_PROXY", "VAULT_PROXY_ADDR", "VAULT_RATE_LIMIT", "VAULT_SRV_LOOKUP", "VAULT_CLIENT_TIMEOUT",
		"BAO_ADDR", "BAO_TOKEN", "BAO_NAMESPACE", client.EnvMount,
	} {
		t.Setenv(v, "")
	}
}

// TestNewFromEnv: NewFromEnv takes the address, token, namespace and
// mount from the environment; the Vault client's retries are off
// (refresh_failed is sent once) and VAULT_MAX_RETRIES becomes WithRetry.
func TestNewFromEnv(t *testing.T) {
	lv := newLoopVault(t, failThenOK(1, vaultError(503, "Vault is sealed"), credentialOK))
	clearVaultEnv(t)
	t.Setenv("VAULT_ADDR", lv.URL)
	t.Setenv("VAULT_TOKEN", "env-token")
	t.Setenv("VAULT_NAMESPACE", "team-a")
	t.Setenv(client.EnvMount, "/secrets/nebula/")
	t.Setenv("VAULT_MAX_RETRIES", "1")
	c, err := client.NewFromEnv()
	if err != nil {
		t.Fatalf("NewFromEnv: %v", err)
	}
	if c.Mount() != "secrets/nebula" {
		t.Errorf("mount = %q, want secrets/nebula", c.Mount())
	}
	if _, err := c.Get(testContext(t), "x"); err != nil {
		t.Fatalf("Get through a 503 with VAULT_MAX_RETRIES=1: %v", err)
	}
	reqs := lv.Requests()
	if len(reqs) != 2 {
		t.Fatalf("the server saw %d requests, want 2 (one retry)", len(reqs))
	}
	r := reqs[1]
	if r.Path != "/v1/secrets/nebula/creds/x" || r.Header.Get("X-Vault-Token") != "env-token" || r.Header.Get("X-Vault-Namespace") != "team-a" {
		t.Errorf("request %s with token %q namespace %q", r.Path, r.Header.Get("X-Vault-Token"), r.Header.Get("X-Vault-Namespace"))
	}

	t.Run("no retries of refresh_failed", func(t *testing.T) {
		lv := newLoopVault(t, failThenOK(1, vaultError(502, "refresh_failed: token endpoint answered 500"), credentialOK))
		t.Setenv("VAULT_ADDR", lv.URL)
		t.Setenv("VAULT_MAX_RETRIES", "") // the Vault client's default is 2 retries of every 5xx
		c, err := client.NewFromEnv(client.WithMount("other"))
		if err != nil {
			t.Fatal(err)
		}
		if c.Mount() != "other" {
			t.Errorf("WithMount did not override %s: mount %q", client.EnvMount, c.Mount())
		}
		_, err = c.Refresh(testContext(t), "x")
		requireKind(t, err, client.RefreshFailed, client.ErrRefreshFailed)
		if n := len(lv.Requests()); n != 1 {
			t.Errorf("refresh_failed was sent %d times", n)
		}
	})
	t.Run("OpenBao names", func(t *testing.T) {
		lv := newLoopVault(t, failThenOK(0, loopAnswer{}, credentialOK))
		clearVaultEnv(t)
		t.Setenv("BAO_ADDR", lv.URL)
		t.Setenv("BAO_TOKEN", "bao-token")
		t.Setenv("BAO_NAMESPACE", "team-b")
		c, err := client.NewFromEnv()
		if err != nil {
			t.Fatal(err)
		}
		if c.Mount() != client.DefaultMount {
			t.Errorf("mount = %q without %s", c.Mount(), client.EnvMount)
		}
		if _, err := c.Get(testContext(t), "x"); err != nil {
			t.Fatal(err)
		}
		r := lv.Requests()[0]
		if r.Path != "/v1/nebula/creds/x" || r.Header.Get("X-Vault-Token") != "bao-token" || r.Header.Get("X-Vault-Namespace") != "team-b" {
			t.Errorf("request %s with token %q namespace %q", r.Path, r.Header.Get("X-Vault-Token"), r.Header.Get("X-Vault-Namespace"))
		}
	})
	t.Run("malformed", func(t *testing.T) {
		for _, kv := range [][2]string{{"VAULT_MAX_RETRIES", "many"}, {"VAULT_CLIENT_TIMEOUT", "soon"}, {"VAULT_SKIP_VERIFY", "perhaps"}} {
			clearVaultEnv(t)
			t.Setenv(kv[0], kv[1])
			if _, err := client.NewFromEnv(); err == nil || !strings.HasPrefix(err.Error(), "nebula: ") {
				t.Errorf("%s=%s: NewFromEnv = %v; want an error", kv[0], kv[1], err)
			}
		}
	})
}

// TestNewFromEnvVault: a client from the environment of a real Vault
// (VAULT_ADDR, VAULT_TOKEN, NEBULA_MOUNT of a mount of the test's own)
// creates a credential and reads its token.
func TestNewFromEnvVault(t *testing.T) {
	_, v := newClient(t)
	mounted := newMount(t, v)
	clearVaultEnv(t)
	t.Setenv("VAULT_ADDR", v.Addr)
	t.Setenv("VAULT_TOKEN", v.Token)
	t.Setenv(client.EnvMount, mounted.Mount())
	c, err := client.NewFromEnv(client.WithRetry(3, testBackoff))
	if err != nil {
		t.Fatalf("NewFromEnv: %v", err)
	}
	if c.Mount() != mounted.Mount() {
		t.Fatalf("mount = %q, want %q", c.Mount(), mounted.Mount())
	}
	ctx := testContext(t)
	name := newName("env")
	if _, err := c.Create(ctx, name, client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret("env-SECRET")}, IdempotencyKey: "env-1"}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	tok, err := c.GetToken(ctx, name, nil)
	if err != nil || tok.Value() != "env-SECRET" {
		t.Fatalf("GetToken = %v, %v", tok, err)
	}
	names, err := mounted.List(ctx)
	if err != nil || !slices.Contains(names, name) {
		t.Errorf("the credential is not on %s/: %v, %v", mounted.Mount(), names, err)
	}
	_, err = c.Get(ctx, newName("missing"))
	requireKind(t, err, client.NotFound, client.ErrNotFound)
}
