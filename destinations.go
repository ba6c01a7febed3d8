package nebula

// Where a credential's secrets go: its endpoints (oauth2) and its mirror
// targets. No write that omits a credential's secrets may change either
// (README "A write without the secret cannot move the secret").

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/types"
)

// endpointFields are the oauth2 fields that say where a credential's
// secrets are sent.
var endpointFields = []string{"token_url", "auth_url", "device_url", "revocation_url"}

// destinations are the endpoint URLs secrets go to, by field name: the
// explicit field, else the provider snapshot's.
func destinations(fields types.Values, snapshot map[string]string) map[string]string {
	out := map[string]string{}
	for _, field := range endpointFields {
		if u := firstNonEmpty(fields.String(field), snapshot[field]); u != "" {
			out[field] = u
		}
	}
	return out
}

// heldSecrets lists the secret fields a version holds a value for, the
// refresh token issued by the upstream included.
func heldSecrets(t *types.Type, sv *secretVersion) []string {
	return secretsOf(t, sv, true)
}

// writtenSecrets lists the secret fields a version stores as written (an
// issued refresh token is not one of them).
func writtenSecrets(t *types.Type, sv *secretVersion) []string {
	return secretsOf(t, sv, false)
}

func secretsOf(t *types.Type, sv *secretVersion, issued bool) []string {
	var held []string
	for _, name := range t.SecretFields() {
		stored, _ := sv.Fields[name].(string)
		if stored != "" || issued && name == "refresh_token" && sv.Token != nil && sv.Token.RefreshToken != "" {
			held = append(held, name)
		}
	}
	return held
}

// unsupplied lists the fields of names that values gives no (non-empty)
// string for.
func unsupplied(names []string, values types.Values) []string {
	var missing []string
	for _, name := range names {
		if supplied, _ := values[name].(string); supplied == "" {
			missing = append(missing, name)
		}
	}
	return missing
}

// checkDestination enforces that no write omitting a credential's secrets
// can change where they are sent. It sets the provider endpoints c keeps (a
// write naming provider or tenant resolves the preset again; others keep the
// stored snapshot), then compares the endpoints before and after: moved is
// true when any differs, and then every secret the current version holds
// must be supplied in values, else invalid_input names the missing ones.
func (b *backend) checkDestination(ctx context.Context, s logical.Storage, existing, c *credential, current *secretVersion, values types.Values) (moved bool, err error) {
	t := existing.typ()
	if t != types.OAuth2 {
		return false, nil
	}
	before, err := b.snapshotOf(ctx, s, existing)
	if err != nil {
		return false, err
	}
	c.ProviderEndpoints = before
	_, provider := values["provider"]
	_, tenant := values["tenant"]
	if provider || tenant {
		if c.ProviderEndpoints, err = b.providerEndpoints(ctx, s, c.Fields); err != nil {
			return false, err
		}
	}
	was, will := destinations(existing.Fields, before), destinations(c.Fields, c.ProviderEndpoints)
	var changed []string
	for _, field := range endpointFields {
		if was[field] != will[field] {
			changed = append(changed, field)
		}
	}
	if len(changed) == 0 {
		return false, nil
	}
	if missing := unsupplied(heldSecrets(t, current), values); len(missing) > 0 {
		return false, newError(KindInvalidInput, "this write changes %s, where the credential's secrets are sent; supply %s in the same write (stored secrets are never sent to a new endpoint)",
			quoteList(changed), quoteList(missing))
	}
	return true, nil
}

// checkMirrorDestination applies the rule of checkDestination to mirror
// targets: a write that starts copying the credential somewhere new (adds a
// target to "mirror", or switches existing targets from the token to the
// secret fields) must supply the secret fields a person wrote (those the
// current version stores), else invalid_input names them. Targets are the
// mount admin's (mirror/aws, mirror/azure), but who may read them there is
// another system's policy: a caller allowed to update a credential's
// description must not be able to copy its secret into a place it can read.
// Dropping targets needs nothing.
func checkMirrorDestination(existing, c *credential, current *secretVersion, values types.Values) error {
	var added []string
	for _, target := range c.Mirror {
		if !slices.Contains(existing.Mirror, target) {
			added = append(added, target)
		}
	}
	toSecret := len(existing.Mirror) > 0 && existing.MirrorContent == "token" && c.MirrorContent != "token"
	if len(added) == 0 && !toSecret {
		return nil
	}
	missing := unsupplied(writtenSecrets(existing.typ(), current), values)
	if len(missing) == 0 {
		return nil
	}
	what := "mirror target " + quoteList(added)
	if len(added) == 0 {
		what = "the secret fields to its mirror targets (mirror_content=secret)"
	}
	return newError(KindInvalidInput, "this write copies the credential to %s; supply %s in the same write (a write without the secret cannot send it somewhere new)",
		what, quoteList(missing))
}

// quoteList renders field names as "a", "b".
func quoteList(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(quoted, ", ")
}
