package acceptance

import (
	"testing"

	"github.com/nebula-credential/nebula-credential/test/harness"
	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// TestRotationKeepsAGrantTheProviderDoesNotRotate: against a provider that
// does not rotate refresh tokens (Google-style) and honours RFC 7009
// revocation, an immediate rotation of a refresh_token credential gives the
// new version the same refresh token; the retired version's revocation
// must leave that grant alone, so refresh keeps working after the
// rotation.
func TestRotationKeepsAGrantTheProviderDoesNotRotate(t *testing.T) {
	v := harness.SharedDev(t)
	mount := ownMount(t, v, "nebula-grants")
	srv := oauthserver.Start(t, oauthserver.WithoutRefreshTokenRotation())
	cliWrite(t, v, mount+"/config", "insecure_http_hosts=127.0.0.1")

	id, secret, refresh := srv.SignedInGrant(t)
	name := newName("grant")
	cliWrite(t, v, mount+"/creds/"+name, "type=oauth2", "grant_type=refresh_token",
		"client_id="+id, "client_secret="+secret, "refresh_token="+refresh,
		"token_url="+srv.TokenURL(), "revocation_url="+srv.RevocationURL(), "auth_style=header")
	before := field(cliRead(t, v, mount+"/token/"+name).Data, "access_token")
	if before == "" {
		t.Fatal("no access_token before the rotation")
	}

	rotated := cliWrite(t, v, mount+"/rotate/"+name)
	requireFields(t, rotated.Data, map[string]string{"version": "2"})
	requireNoSecrets(t, "rotate answer", rotated.Raw, []string{secret, refresh})
	after := field(cliRead(t, v, mount+"/token/"+name).Data, "access_token")
	if after == "" || after == before {
		t.Fatalf("after the rotation access_token = %q; want a new one", after)
	}

	// The grant survived: refresh obtains a new token from it, twice.
	for i := range 2 {
		out, err := v.CLI(t, "write", "-format=json", "-f", mount+"/refresh/"+name)
		if err != nil {
			t.Fatalf("refresh %d after an immediate rotation: %v", i+1, err)
		}
		resp, _ := decodeResponse(t, []byte(out))
		if got := field(resp.Data, "access_token"); got == "" || got == after {
			t.Fatalf("refresh %d answered access_token %q; want a new one", i+1, got)
		}
		requireFields(t, resp.Data, map[string]string{"version": "2"})
	}
	if n := srv.RevocationRequests(); n != 0 {
		t.Errorf("the provider had %d revocation requests; want none: every token of the retired version belongs to the grant the new version uses", n)
	}
}
