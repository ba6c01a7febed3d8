package nebula

import (
	"context"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/nebula-credential/nebula-credential/internal/upstream"
)

// revokeTokens revokes a retired oauth2 version's tokens where the
// credential (or its provider) has a revocation endpoint. Failures are
// logged; the version is retired either way. The caller holds the
// credential's write lock.
//
// Nothing a live version (the current one, a previous one still served in
// its grace period, a token held in memory for one) still uses is revoked:
// providers that do not rotate refresh tokens give every version the same
// refresh token. When the retired version's refresh token is live, its
// access token is kept too, because RFC 7009 section 2.1 lets a server
// revoke the whole grant when one of its access tokens is revoked (Google
// does); that access token lapses at its expiry, as after any refresh.
//
// What to revoke is decided here, under the lock; the requests are made
// after the caller releases it when the context carries a revocation queue
// (deferRevocations), else at once.
func (b *backend) revokeTokens(ctx context.Context, s logical.Storage, c *credential, sv *secretVersion) {
	v := sv.upstreamValues(c) // the endpoints the credential was written with
	p, err := b.resolveProvider(ctx, s, v)
	if err != nil {
		return
	}
	revocationURL := firstNonEmpty(v.String("revocation_url"), p.RevocationURL)
	if revocationURL == "" || sv.Token == nil {
		return
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return
	}
	live, err := b.liveTokens(ctx, s, c, sv.ID)
	if err != nil {
		b.logger.Warn("not revoking a retired version's tokens: the live versions could not be read", "credential", c.Name, "error", err)
		return
	}
	refresh := sv.refreshToken()
	if refresh != "" && live[refresh] {
		b.logger.Info("not revoking a retired version's tokens: a live version uses the same grant", "credential", c.Name, "version", sv.Version)
		return
	}
	type revocation struct{ token, hint string }
	var todo []revocation
	if refresh != "" {
		todo = append(todo, revocation{refresh, "refresh_token"})
	}
	if at := sv.Token.AccessToken; at != "" && !live[at] {
		todo = append(todo, revocation{at, "access_token"})
	}
	if len(todo) == 0 {
		return
	}
	req := upstream.Request{ClientID: v.String("client_id"), ClientSecret: v.String("client_secret"),
		AuthStyle: firstNonEmpty(v.String("auth_style"), p.AuthStyle)}
	if err := signedJWTRequest(v, &req); err != nil {
		b.logger.Warn("could not revoke a retired version's tokens", "credential", c.Name, "error", err)
		return
	}
	client := b.upstream(cfg)
	name := c.Name
	run := func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*upstream.DefaultTimeout)
		defer cancel()
		for _, r := range todo {
			if err := client.Revoke(ctx, req, revocationURL, r.token, r.hint); err != nil {
				b.logger.Warn("could not revoke a retired token", "credential", name, "token_type_hint", r.hint, "error", err)
			}
		}
	}
	if q, ok := ctx.Value(revocationQueueKey{}).(*revocationQueue); ok {
		q.add(run)
		return
	}
	run(ctx)
}

// liveTokens returns the tokens (access token, and the refresh token it
// refreshes with) of every version of c that is still served, other than
// the one with id except, and those held in memory for c.
func (b *backend) liveTokens(ctx context.Context, s logical.Storage, c *credential, except string) (map[string]bool, error) {
	live := map[string]bool{}
	ids := []string{c.ID}
	if c.Previous != nil {
		ids = append(ids, c.Previous.ID)
	}
	for _, id := range ids {
		if id == except {
			continue
		}
		sv, err := loadSecret(ctx, s, c.Name, id)
		if err != nil {
			return nil, err
		}
		live[sv.refreshToken()] = true
		if sv.Token != nil {
			live[sv.Token.AccessToken] = true
		}
	}
	b.held.liveTokens(c.Name, live)
	delete(live, "")
	return live, nil
}

// refreshToken is the refresh token a version refreshes with: the latest
// issued one, else the supplied refresh_token field (requestToken's rule).
func (sv *secretVersion) refreshToken() string {
	if sv.Token != nil && sv.Token.RefreshToken != "" {
		return sv.Token.RefreshToken
	}
	return sv.Fields.String("refresh_token")
}

// revocationQueue collects revocations decided under a credential's lock,
// to be made once the lock is released (no network call under a lock
// shard that other credentials share).
type revocationQueue struct {
	mu   sync.Mutex
	jobs []func(context.Context) // guarded by mu
}

type revocationQueueKey struct{}

func (q *revocationQueue) add(job func(context.Context)) {
	q.mu.Lock()
	q.jobs = append(q.jobs, job)
	q.mu.Unlock()
}

// deferRevocations returns a context under which revokeTokens queues its
// requests, and the function that makes them; call it after releasing the
// credential's lock:
//
//	ctx, revoke := b.deferRevocations(ctx)
//	defer revoke()
//	lock.Lock()
//	defer lock.Unlock()
func (b *backend) deferRevocations(ctx context.Context) (context.Context, func()) {
	q := &revocationQueue{}
	return context.WithValue(ctx, revocationQueueKey{}, q), func() {
		q.mu.Lock()
		jobs := q.jobs
		q.jobs = nil
		q.mu.Unlock()
		for _, job := range jobs {
			job(ctx)
		}
	}
}
