package mirror

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/mirror/mirrortest"
)

// hostPolicy is an upstream.Policy like the engine's config: https to
// allowed hosts (any when none), http to insecure hosts, and the listed
// hosts exempt from the address check.
type hostPolicy struct {
	allowed, insecure []string
}

func hostOf(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

func (p hostPolicy) HostAllowed(scheme, hostport string) bool {
	switch scheme {
	case "https":
		return len(p.allowed) == 0 || slices.Contains(p.allowed, hostOf(hostport))
	case "http":
		return slices.Contains(p.insecure, hostOf(hostport))
	}
	return false
}

func (p hostPolicy) HostListed(hostport string) bool {
	return slices.Contains(p.allowed, hostOf(hostport)) || slices.Contains(p.insecure, hostOf(hostport))
}

func (hostPolicy) PrivateNetworksAllowed() bool { return false }

func TestAWSRequestsFollowTheHostPolicy(t *testing.T) {
	f := mirrortest.NewAWS(t)
	const role = "arn:aws:iam::123456789012:role/nebula-mirror"
	withRole := func(c *AWSConfig) { c.RoleARN, c.STSEndpoint = role, f.URL() }
	ctx := context.Background()
	for name, policy := range map[string]hostPolicy{
		"http host not listed":    {allowed: []string{"only.example.com"}},
		"http not allowed at all": {},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := awsTestConfig(f)
			withRole(&cfg)
			// The SDK's default retryer: a refusal is not retried.
			target, err := NewAWS(cfg, upstream.NewHTTPClient(policy, nil))
			require.NoError(t, err)
			err = target.Put(ctx, "refused", 1, testContent(1))
			e := assertMirrorError(t, err, KindPolicy, false)
			assert.Equal(t, "host_policy", e.Code)
			assert.Contains(t, err.Error(), "insecure_http_hosts")
			assert.Zero(t, f.Connections(), "neither STS nor Secrets Manager was contacted")
		})
	}

	// Listed, the same client reaches STS (role_arn) and Secrets Manager.
	cfg := awsTestConfig(f)
	withRole(&cfg)
	target, err := NewAWS(cfg, upstream.NewHTTPClient(hostPolicy{insecure: []string{"127.0.0.1"}}, nil))
	require.NoError(t, err)
	require.NoError(t, target.Put(ctx, "listed", 1, testContent(1)))
	assert.Equal(t, []string{role}, f.AssumedRoles())
	assert.Positive(t, f.Connections())
}

func TestAzureRequestsFollowTheHostPolicy(t *testing.T) {
	f := mirrortest.NewAzure(t)
	roots := f.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	ctx := context.Background()
	clientSecret := func(c *AzureConfig) {
		c.TenantID, c.ClientID, c.ClientSecret = f.TenantID(), f.ClientID(), f.ClientSecret()
	}

	// https to any host, 127.0.0.1 not listed: the dial check refuses the
	// vault on loopback; the SDK does not retry.
	opts := f.ClientOptions()
	opts.Retry.MaxRetries = 0 // the SDK default: a refusal must not be retried
	opts.Transport = upstream.NewHTTPClient(hostPolicy{}, roots)
	cfg := AzureConfig{VaultURL: f.URL()}
	clientSecret(&cfg)
	target, err := NewAzure(cfg, nil, opts)
	require.NoError(t, err)
	err = target.Put(ctx, "refused", 1, testContent(1))
	assertMirrorError(t, err, KindPolicy, false, f.ClientSecret())
	assert.True(t, strings.Contains(err.Error(), "loopback address"), err.Error())
	assert.Zero(t, f.Connections(), "neither Key Vault nor the token endpoint was contacted")

	// Listed, Key Vault and the Entra token request go through the client.
	opts = f.ClientOptions()
	opts.Transport = upstream.NewHTTPClient(hostPolicy{allowed: []string{"127.0.0.1"}}, roots)
	target, err = NewAzure(cfg, nil, opts)
	require.NoError(t, err)
	require.NoError(t, target.Put(ctx, "listed", 1, testContent(1)))
	assert.Len(t, f.TokenRequests(), 1, "the client secret credential used the policy client")
}
