package mirrortest

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// StaticCredential is an azcore.TokenCredential that returns a fixed token,
// valid for an hour from each call, without any network request, and records
// what it was asked for.
type StaticCredential struct {
	token string

	mu       sync.Mutex
	requests []policy.TokenRequestOptions // guarded by mu
}

var _ azcore.TokenCredential = (*StaticCredential)(nil)

// NewStaticCredential returns a credential that always gets token. With a
// token other than Azure.Token the fake rejects requests with 401.
func NewStaticCredential(token string) *StaticCredential {
	return &StaticCredential{token: token}
}

// GetToken returns the credential's token.
func (c *StaticCredential) GetToken(_ context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = append(c.requests, opts)
	return azcore.AccessToken{Token: c.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// Requests returns the options of each GetToken call, in order.
func (c *StaticCredential) Requests() []policy.TokenRequestOptions {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.requests)
}
