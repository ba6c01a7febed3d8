package nebula

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// A creds/ update with a new client_secret makes a new version; with a
// provider that rotates refresh tokens, only the latest issued refresh token
// is valid, so the new version must carry it (not the one first supplied).
func TestSecretUpdateKeepsTheGrantsLatestRefreshToken(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	createRefreshCredential(t, e, srv, "user", nil) // its first read rotated the refresh token upstream
	first := e.tokenOf(t, "user")
	id, _ := srv.WebClient()

	secret, err := srv.RotateClientSecret(id)
	require.NoError(t, err)
	e.mustRequest(t, logical.UpdateOperation, "creds/user", map[string]any{"client_secret": secret})
	read := e.mustRequest(t, logical.ReadOperation, "creds/user", nil)
	require.EqualValues(t, 2, read.Data["version"], "a new secret makes a new version")

	e.clock.Advance(10 * time.Minute)
	second := e.mustRequest(t, logical.UpdateOperation, "refresh/user", nil)
	require.NotEqual(t, first, second.Data["access_token"])
	require.Equal(t, "active", e.mustRequest(t, logical.ReadOperation, "creds/user", nil).Data["status"])
}

// verify=true on an update that changes no secret obtains a token for the
// current version; the refresh token the provider issued with it must be
// stored, since the one it replaced is consumed.
func TestVerifyOnUpdateStoresTheIssuedToken(t *testing.T) {
	e, srv := newOAuthEnv(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	createRefreshCredential(t, e, srv, "user", nil)
	e.mustRequest(t, logical.UpdateOperation, "creds/user", map[string]any{"description": "verified", "verify": true})
	require.EqualValues(t, 2, srv.TokenRequestsFor("refresh_token"), "the first read and the verification")

	requests := srv.TokenRequests()
	verified := e.tokenOf(t, "user")
	require.NotEmpty(t, verified)
	require.Equal(t, requests, srv.TokenRequests(), "the verified token is served")

	e.clock.Advance(10 * time.Minute)
	refreshed := e.mustRequest(t, logical.UpdateOperation, "refresh/user", nil)
	require.NotEqual(t, verified, refreshed.Data["access_token"], "the next refresh uses the refresh token verify obtained")
}

// A write to the same credential while its verification waits for the
// provider is not overwritten by the verifying write.
func TestVerifyRefusesWhenTheCredentialChangedMeanwhile(t *testing.T) {
	e, h := newHangingEnv(t)
	h.hold(0)
	hung := make(chan error, 1)
	go func() {
		_, err := e.request(t, logical.UpdateOperation, "creds/a", map[string]any{"description": "first", "verify": true})
		hung <- err
	}()
	h.waitArrival(t)
	e.mustRequest(t, logical.UpdateOperation, "creds/a", map[string]any{"description": "second"})
	h.release()
	requireKind(t, <-hung, KindRotationInProgress, "changed")
	require.Equal(t, "second", e.mustRequest(t, logical.ReadOperation, "creds/a", nil).Data["description"])
}
