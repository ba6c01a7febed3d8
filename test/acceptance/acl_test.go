package acceptance

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

// TestACLPolicy: Vault's ACL decides who may do what on the mount's paths.
// A token allowed only `read` on token/a and `list` on creds/ can list
// credentials but not write one, nor read another credential's token.
func TestACLPolicy(t *testing.T) {
	v := harness.SharedDev(t)
	visible := newName("acl-visible")
	mustWrite(t, apiDriver{c: v.Client()}, credPath(v, visible), map[string]any{"type": "api_key", "api_key": "acl-SECRET-1"})

	policy := newName("nebula-reader")
	token := tokenWithPolicy(t, v, policy, fmt.Sprintf(`
path "%[1]s/token/a" {
  capabilities = ["read"]
}
path "%[1]s/creds/" {
  capabilities = ["list"]
}
`, v.Mount))

	for _, d := range drivers(v, token) {
		t.Run(d.Name(), func(t *testing.T) {
			names, err := d.List(t, v.Mount+"/creds/")
			if err != nil {
				t.Fatalf("list with the policy's token: %v", err)
			}
			if !slices.Contains(names, visible) {
				t.Errorf("list %v does not hold %q", names, visible)
			}

			denied := []struct {
				name string
				do   func() error
			}{
				{"write creds/a", func() error {
					_, err := d.Write(t, v.Mount+"/creds/a", map[string]any{"type": "api_key", "api_key": "acl-SECRET-2"})
					return err
				}},
				{"read creds/<visible>", func() error { _, err := d.Read(t, credPath(v, visible)); return err }},
				{"read token/b", func() error { _, err := d.Read(t, v.Mount+"/token/b"); return err }},
				{"delete creds/<visible>", func() error { return d.Delete(t, credPath(v, visible)) }},
				{"write config", func() error {
					_, err := d.Write(t, v.Mount+"/config", map[string]any{"cache_enabled": false})
					return err
				}},
			}
			for _, c := range denied {
				t.Run(c.name, func(t *testing.T) {
					err := c.do()
					requireError(t, err, 403, "")
					requireErrorMentions(t, err, "permission denied")
				})
			}
			// token/a is allowed by the policy; whether the path answers
			// yet is the plugin's business, not the ACL's.
		})
	}

	// The credential is still there: the denied delete did nothing.
	mustRead(t, apiDriver{c: v.Client()}, credPath(v, visible))
}

// tokenWithPolicy writes an ACL policy and creates a token holding only it
// (auth/token/create), through the HTTP API.
func tokenWithPolicy(tb testing.TB, v *harness.Vault, name, rules string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	c := v.Client()
	if err := c.Sys().PutPolicyWithContext(ctx, name, rules); err != nil {
		tb.Fatalf("writing policy %s: %v", name, err)
	}
	secret, err := c.Logical().WriteWithContext(ctx, "auth/token/create", map[string]any{
		"policies":          []string{name},
		"no_default_policy": true,
		"ttl":               "30m",
	})
	if err != nil {
		tb.Fatalf("creating a token with policy %s: %v", name, err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		tb.Fatalf("auth/token/create answered no token: %#v", secret)
	}
	return secret.Auth.ClientToken
}
