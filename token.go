package nebula

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/types"
	"golang.org/x/oauth2"
)

// issuedToken is a token obtained from an upstream, stored (seal-wrapped)
// with the secret version it was obtained for.
type issuedToken struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	// RefreshToken is the latest refresh token, when the issuer sent one;
	// it supersedes the refresh_token field the operator supplied.
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry"`
	IssuedAt     time.Time `json:"issued_at"`
}

// servedToken is what token/<name> answers, and what the cache holds.
type servedToken struct {
	types.Token
	Version int
	// IssuedAt is when the token (or the static version) was issued.
	IssuedAt time.Time
	// StaleAt is when the engine will serve a new token: expiry less
	// refresh_ahead for refreshable tokens, expiry for static ones; zero
	// means not before a rotation.
	StaleAt time.Time
	// cacheUntil is when the cache entry lapses.
	cacheUntil time.Time
}

// responseData renders the token response at time now.
func (t *servedToken) responseData(now time.Time) map[string]any {
	data := map[string]any{
		"access_token": t.AccessToken,
		"token_type":   t.TokenType,
		"header_name":  t.HeaderName,
		"header_value": t.HeaderValue,
		"version":      t.Version,
		"expires_at":   nil,
	}
	if t.QueryParam != "" {
		data["query_param"] = t.QueryParam
	}
	if !t.ExpiresAt.IsZero() {
		data["expires_at"] = t.ExpiresAt.UTC().Format(time.RFC3339)
		// Vault Agent and consul-template sleep for ttl when
		// rotation_period is present, so they render again as soon as the
		// engine serves a new token.
		data["ttl"] = max(int64(t.StaleAt.Sub(now).Seconds()), 1)
		data["rotation_period"] = max(int64(t.ExpiresAt.Sub(t.IssuedAt).Seconds()), 1)
	}
	return data
}

// expiring reports whether an issued token should be replaced at now.
func (t *issuedToken) expiring(now time.Time, ahead time.Duration) bool {
	return t == nil || !now.Before(t.Expiry.Add(-ahead))
}

// sharedLoadTimeout bounds a load that concurrent readers share; it runs
// detached from any one reader's context (each reader still stops waiting
// when its own context ends).
const sharedLoadTimeout = 60 * time.Second

// tokenFor returns the ready-to-use token of a credential, from the cache
// when it holds a fresh one. Concurrent misses for one name share one load
// (and so one upstream request), which runs on a context of its own: a
// reader that goes away stops waiting but does not cancel the load the
// others wait for.
func (b *backend) tokenFor(ctx context.Context, s logical.Storage, name string) (*servedToken, error) {
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	now := b.now()
	if cfg.CacheEnabled {
		if t, ok := b.cache.Get(name); ok && now.Before(t.cacheUntil) {
			b.stats.cacheHits.Add(1)
			return t, nil
		}
		b.stats.cacheMisses.Add(1)
	}
	loadCtx := context.WithoutCancel(ctx)
	ch := b.loads.DoChan(name, func() (any, error) {
		ctx, cancel := context.WithTimeout(loadCtx, sharedLoadTimeout)
		defer cancel()
		gen, nameGen := b.cacheGen.Load(), b.nameGen(name).Load()
		t, err := b.loadToken(ctx, s, cfg, name, false)
		if err != nil {
			return nil, err
		}
		if cfg.CacheEnabled && b.cacheGen.Load() == gen && b.nameGen(name).Load() == nameGen {
			b.cache.Add(name, t)
		}
		return t, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*servedToken), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// loadToken builds a credential's token from storage, obtaining a new one
// upstream when the stored one is expiring (or force is set). No lock shard
// is held across the upstream call (see refresh).
func (b *backend) loadToken(ctx context.Context, s logical.Storage, cfg *Config, name string, force bool) (*servedToken, error) {
	lock := b.lock(name)
	lock.RLock()
	c, sv, err := loadCredentialWithCurrent(ctx, s, name)
	lock.RUnlock()
	if err != nil {
		return nil, err
	}
	t := c.typ()
	if t.IsStatic() {
		if force {
			return nil, newError(KindRefreshNotSupported, "credential %q is of type %s, which has no upstream to refresh from", name, t.Name)
		}
		return b.staticToken(cfg, c, sv)
	}
	if held := b.held.get(name, c.ID); held != nil {
		sv.Token = held
	}
	if !force && !sv.Token.expiring(b.now(), cfg.RefreshAhead) {
		st := b.served(cfg, c, sv.Token)
		if b.held.get(name, c.ID) != nil && !b.storeHeld(ctx, s, name) {
			st.cacheUntil = time.Time{} // not stored yet: the next read tries again
		}
		return st, nil
	}

	out, err := b.refresh(ctx, s, cfg, name, force)
	if err != nil {
		if isReadOnly(err) {
			// A standby: the active node refreshes (Vault forwards).
			return nil, logical.ErrReadOnly
		}
		if force || sv.Token == nil || !b.now().Before(sv.Token.Expiry) {
			return nil, err
		}
		// The last good token is still valid: serve it, uncached, so the
		// next read tries the upstream again.
		b.logger.Warn("token refresh failed; serving the current token until it expires", "credential", name, "error", err)
		st := b.served(cfg, c, sv.Token)
		st.cacheUntil = time.Time{}
		return st, nil
	}
	st := b.served(cfg, out.c, out.token)
	if out.held {
		st.cacheUntil = time.Time{} // held in memory: the next read stores it
	}
	return st, nil
}

func (b *backend) staticToken(cfg *Config, c *credential, sv *secretVersion) (*servedToken, error) {
	tok, err := c.typ().Token(sv.merged(c))
	if err != nil {
		return nil, fmt.Errorf("rendering token of %q: %w", c.Name, err)
	}
	now := b.now()
	if !tok.ExpiresAt.IsZero() && !now.Before(tok.ExpiresAt) {
		return nil, newError(KindExpired, "the token of credential %q expired at %s; rotate it", c.Name, tok.ExpiresAt.UTC().Format(time.RFC3339))
	}
	st := &servedToken{Token: tok, Version: c.Version, IssuedAt: sv.CreatedAt, StaleAt: tok.ExpiresAt}
	st.cacheUntil = cacheUntil(now, cfg, tok.ExpiresAt)
	return st, nil
}

func (b *backend) served(cfg *Config, c *credential, it *issuedToken) *servedToken {
	tokenType := normaliseTokenType(it.TokenType)
	stale := it.Expiry.Add(-cfg.RefreshAhead)
	return &servedToken{
		Token: types.Token{
			AccessToken: it.AccessToken,
			TokenType:   tokenType,
			HeaderName:  "Authorization",
			HeaderValue: tokenType + " " + it.AccessToken,
			ExpiresAt:   it.Expiry,
		},
		Version:    c.Version,
		IssuedAt:   it.IssuedAt,
		StaleAt:    stale,
		cacheUntil: cacheUntil(b.now(), cfg, stale),
	}
}

// cacheUntil is min(now + cache ttl, limit); a zero limit means none.
func cacheUntil(now time.Time, cfg *Config, limit time.Time) time.Time {
	until := now.Add(cfg.CacheTTL)
	if !limit.IsZero() && limit.Before(until) {
		return limit
	}
	return until
}

// requestToken asks the credential's token endpoint for a new token.
func (b *backend) requestToken(ctx context.Context, s logical.Storage, cfg *Config, c *credential, sv *secretVersion) (*issuedToken, error) {
	if err := reconnectGate(c, sv); err != nil {
		return nil, err // a dead grant: no upstream request
	}
	v := sv.upstreamValues(c) // the endpoints the credential was written with
	p, err := b.resolveProvider(ctx, s, v)
	if err != nil {
		return nil, err
	}
	req := upstream.Request{
		Grant:        v.String("grant_type"),
		ClientID:     v.String("client_id"),
		ClientSecret: v.String("client_secret"),
		TokenURL:     firstNonEmpty(v.String("token_url"), p.TokenURL),
		Scopes:       v.Strings("scopes"),
		Audience:     v.String("audience"),
		AuthStyle:    firstNonEmpty(v.String("auth_style"), p.AuthStyle),
		RefreshToken: v.String("refresh_token"),
	}
	if len(req.Scopes) == 0 {
		req.Scopes = p.Scopes
	}
	if sv.Token != nil && sv.Token.RefreshToken != "" {
		req.RefreshToken = sv.Token.RefreshToken
	}
	if err := signedJWTRequest(v, &req); err != nil {
		return nil, newError(KindRefreshFailed, "credential %q: %v", c.Name, err)
	}
	switch req.Grant {
	case types.GrantClientCredentials, types.GrantJWTBearer:
	case types.GrantRefreshToken:
		if req.RefreshToken == "" {
			return nil, newError(KindNoRefreshToken, "credential %q has no refresh token", c.Name)
		}
	default: // authorization_code, device_code: a user signs in once, then refresh
		if req.RefreshToken == "" {
			return nil, newError(KindInteractionRequired, "credential %q needs a user to sign in (flows/start)", c.Name)
		}
		req.Grant = types.GrantRefreshToken
	}
	if err := b.onActiveNode(); err != nil {
		// A standby must not use (and, with rotating refresh tokens,
		// consume) a grant whose next token it cannot store.
		return nil, err
	}
	if err := upstream.CheckURL(cfg.HostAllowed, req.TokenURL); err != nil {
		return nil, &CredentialError{Kind: KindRefreshFailed, Msg: fmt.Sprintf("credential %q: token_url %v", c.Name, err), Err: err}
	}

	ctx, cancel := context.WithTimeout(ctx, upstream.TokenRequestTimeout)
	defer cancel()
	tok, err := b.upstream(cfg).Token(ctx, req)
	if err != nil {
		return nil, &CredentialError{Kind: KindRefreshFailed, Msg: fmt.Sprintf("credential %q: %v", c.Name, err), Err: err}
	}
	issued := b.issuedFrom(cfg, tok)
	if issued.RefreshToken == "" && sv.Token != nil {
		issued.RefreshToken = sv.Token.RefreshToken
	}
	return issued, nil
}

// issuedFrom turns a token endpoint's answer into the stored token, with
// its expiry on the engine's clock from expires_in where the answer has it.
func (b *backend) issuedFrom(cfg *Config, tok *oauth2.Token) *issuedToken {
	now := b.now()
	issued := &issuedToken{
		AccessToken:  tok.AccessToken,
		TokenType:    normaliseTokenType(tok.TokenType),
		RefreshToken: tok.RefreshToken,
		IssuedAt:     now,
	}
	switch secs := upstream.TokenExpiresIn(tok); {
	case secs > 0:
		issued.Expiry = now.Add(time.Duration(secs) * time.Second)
	case !tok.Expiry.IsZero():
		issued.Expiry = now.Add(time.Until(tok.Expiry))
	default:
		issued.Expiry = now.Add(cfg.DefaultTokenLifetime)
	}
	return issued
}

// recordError notes a failure on the credential (status "error", shown by
// creds/ reads, health and metrics). Failing to record it is logged only.
func (b *backend) recordError(ctx context.Context, s logical.Storage, c *credential, cause error) {
	c.LastError = cause.Error()
	if err := b.writeMeta(ctx, s, c); err != nil {
		b.logger.Warn("could not store credential status", "credential", c.Name, "error", err)
	}
}

// dropCached removes a credential's cached token and makes in-flight loads
// that started before the drop skip caching what they read.
func (b *backend) dropCached(name string) {
	b.nameGen(name).Add(1)
	b.cache.Remove(name)
}

// nameGenSlots is the number of per-name cache generations: names share
// them by hash, so a drop may also stop an in-flight load of another name
// from caching (harmless: its next read loads again), and reads of any
// number of names keep the count fixed.
const nameGenSlots = 1024

// nameGen is the cache generation of one credential name.
func (b *backend) nameGen(name string) *atomic.Uint64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name)) // never fails
	return &b.nameGens[h.Sum32()%nameGenSlots]
}

// upstream returns the upstream client for the config's host policy (b.upstreamClient,
// rebuilt when the config changes).
func (b *backend) upstream(cfg *Config) *upstream.Client {
	b.upstreamMu.Lock()
	defer b.upstreamMu.Unlock()
	if b.upstreamClient == nil || b.upstreamCfg != cfg {
		// One set of per-host slots and pauses whatever the config: a
		// client built for a new config must not get fresh slots.
		b.upstreamClient = upstream.New(cfg, b.upstreamRoots, b.hostLimits)
		b.upstreamClient.Attempts = b.upstreamAttempts
		b.upstreamClient.Backoff = b.upstreamBackoff
		b.hostLimits.SetLimit(cfg.UpstreamConcurrencyPerHost)
		b.upstreamCfg = cfg
	}
	return b.upstreamClient
}

// normaliseTokenType spells the bearer type as RFC 6750's header scheme
// (issuers send "bearer" too); other types pass through.
func normaliseTokenType(t string) string {
	if t == "" || strings.EqualFold(t, "bearer") {
		return "Bearer"
	}
	return t
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
