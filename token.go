package nebula

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/oauth2"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/types"
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
	c, sv, err := loadCurrent(ctx, s, name)
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

// loadCurrent reads a credential and its current secret version.
func loadCurrent(ctx context.Context, s logical.Storage, name string) (*credential, *secretVersion, error) {
	c, err := loadExisting(ctx, s, name)
	if err != nil {
		return nil, nil, err
	}
	sv, err := loadSecret(ctx, s, name, c.ID)
	if err != nil {
		return nil, nil, err
	}
	return c, sv, nil
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

// refreshOutcome is what refresh did.
type refreshOutcome struct {
	c     *credential
	token *issuedToken
	// refreshed is false when the stored token turned out fresh (another
	// request refreshed it meanwhile).
	refreshed bool
	// held is true when storage did not take the token: it is kept in
	// memory (b.held) and written on the next opportunity.
	held bool
}

// Upstream refresh attempts of one call to refresh: a version that changes
// while the request is out (rotation, update) makes it start over.
const refreshAttempts = 3

// refresh obtains a new token upstream for a credential's current version
// and stores it. The upstream request is made under the name's own upstream
// lock (one request at a time per credential), never under the shard lock
// that other names share; the answer is stored under the shard lock only if
// the credential is still at the version the request was made for, else it
// is discarded and the refresh starts over on the new version. Without
// force a token that is fresh by then (another request refreshed it) is
// returned as it is.
//
// Before the request, the node must be able to write: on a standby
// (SystemView) or when a probe write fails as read-only, refresh answers
// logical.ErrReadOnly without contacting the upstream, because a refresh
// token consumed by a node that cannot store its successor would be lost.
func (b *backend) refresh(ctx context.Context, s logical.Storage, cfg *Config, name string, force bool) (*refreshOutcome, error) {
	fresh := func(t *issuedToken) bool { return !force && !t.expiring(b.now(), cfg.RefreshAhead) }
	return b.refreshUnlessFresh(ctx, s, cfg, name, fresh)
}

// refreshUnlessFresh is refresh, where fresh decides (once the name's
// upstream lock is held) whether the stored token needs no refresh.
func (b *backend) refreshUnlessFresh(ctx context.Context, s logical.Storage, cfg *Config, name string, fresh func(*issuedToken) bool) (*refreshOutcome, error) {
	unlock, err := b.upstreamLocks.lock(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Once started, a refresh runs to its end whoever waits for it: a
	// request cancelled after the provider consumed the refresh token
	// would lose the one it issued.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedLoadTimeout)
	defer cancel()
	lock := b.lock(name)
	for range refreshAttempts {
		lock.RLock()
		c, sv, err := loadCurrent(ctx, s, name)
		lock.RUnlock()
		if err != nil {
			return nil, err
		}
		if !c.typ().Refreshable {
			return nil, newError(KindRefreshNotSupported, "credential %q is of type %s, which has no upstream to refresh from", name, c.Type)
		}
		if held := b.held.get(name, c.ID); held != nil {
			sv.Token = held
		}
		if fresh(sv.Token) {
			held := b.held.get(name, c.ID) != nil && !b.storeHeld(ctx, s, name)
			return &refreshOutcome{c: c, token: sv.Token, held: held}, nil
		}
		if err := b.checkWritable(ctx, s); err != nil {
			return nil, err
		}
		start := time.Now() // durations on the real clock, whatever b.now is
		issued, err := b.requestToken(ctx, s, cfg, c, sv)
		b.stats.observeRefresh(c.Name, b.now(), time.Since(start), err)
		if err != nil {
			var ce *CredentialError
			if !errors.As(err, &ce) || ce.Kind == KindRefreshFailed {
				b.recordErrorFor(ctx, s, name, c.ID, err)
			}
			return nil, err
		}
		out, err := b.storeIssued(ctx, s, c, issued)
		if errors.Is(err, errVersionChanged) {
			b.logger.Info("credential changed during a token refresh; the token obtained for the old version is discarded", "credential", name)
			continue
		}
		if err != nil {
			return nil, err
		}
		out.refreshed = true
		return out, nil
	}
	return nil, newError(KindRotationInProgress, "credential %q kept changing during the token refresh; try again", name)
}

// errVersionChanged: the credential is no longer at the version a token
// was obtained for.
var errVersionChanged = errors.New("the credential changed")

// writeProbeKey is written before every upstream refresh to learn whether
// storage takes writes (see checkWritable). Its value means nothing.
const writeProbeKey = "write-probe"

// checkWritable answers logical.ErrReadOnly on a node that may not write:
// a standby, as the SystemView tells (Vault performance standbys, and
// OpenBao standbys serving reads, which report ReplicationPerformanceStandby
// too), or a node whose storage refuses a small probe write as read-only
// (any other case, e.g. a node that just lost leadership). A probe write
// failing otherwise is a storage error: the refresh is not made, since its
// result could not be stored either.
func (b *backend) checkWritable(ctx context.Context, s logical.Storage) error {
	if !b.writable() {
		return logical.ErrReadOnly
	}
	err := s.Put(ctx, &logical.StorageEntry{Key: writeProbeKey, Value: []byte(b.now().UTC().Format(time.RFC3339))})
	switch {
	case err == nil:
		return nil
	case isReadOnly(err):
		return logical.ErrReadOnly
	default:
		return storageError("checking that storage takes writes before a token refresh", err)
	}
}

// Attempts and first wait of the storage write of an issued token.
const (
	storeAttempts = 3
	storeBackoff  = 50 * time.Millisecond
)

// storeIssued stores a token obtained for version id of a credential, under
// the credential's write lock, if the credential is still at that version
// (else errVersionChanged). When storage fails, after a few attempts, the
// token is held in memory for the version (outcome held) and written on the
// next read, refresh or periodic run: the provider may have consumed the
// refresh token it replaced, so the issued one must not be lost.
func (b *backend) storeIssued(ctx context.Context, s logical.Storage, requested *credential, issued *issuedToken) (*refreshOutcome, error) {
	name, id := requested.Name, requested.ID
	lock := b.lock(name)
	lock.Lock()
	defer lock.Unlock()
	c, sv, err := loadCurrent(ctx, s, name)
	if err == nil && c.ID != id {
		err = errVersionChanged
	}
	if err != nil {
		if ErrorKind(err) == KindNotFound {
			err = errVersionChanged // deleted meanwhile; the next attempt says not_found
		}
		if !errors.Is(err, errVersionChanged) {
			// The version could not be read back: keep the token.
			b.held.put(name, id, issued)
			b.logger.Warn("could not store a new token; holding it in memory until storage takes it", "credential", name, "error", err)
			return &refreshOutcome{c: requested, token: issued, held: true}, nil
		}
		return nil, err
	}
	if err := b.putToken(ctx, s, c, sv, issued); err != nil {
		if isReadOnly(err) {
			// Lost leadership during the request: keep the token here too,
			// for a node that becomes active again; the request is forwarded.
			b.held.put(name, id, issued)
			return nil, logical.ErrReadOnly
		}
		b.held.put(name, id, issued)
		b.logger.Warn("could not store a new token; holding it in memory until storage takes it", "credential", name, "error", err)
		return &refreshOutcome{c: c, token: issued, held: true}, nil
	}
	return &refreshOutcome{c: c, token: issued}, nil
}

// putToken writes issued as the token of version sv, retrying a failed
// write a few times, and does what follows a stored token (expiry index,
// error status, mirrors). The caller holds the credential's write lock.
func (b *backend) putToken(ctx context.Context, s logical.Storage, c *credential, sv *secretVersion, issued *issuedToken) error {
	previous := sv.Token
	sv.Token = issued
	entry, err := jsonEntry(secretKey(c.Name, sv.ID), sv, true)
	if err != nil {
		return fmt.Errorf("encoding secret version: %w", err)
	}
	wait := storeBackoff
	for attempt := 1; ; attempt++ {
		err = s.Put(ctx, entry)
		if err == nil || isReadOnly(err) || attempt == storeAttempts || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		wait *= 2
	}
	if err != nil {
		return storageError("storing the new token", err)
	}
	b.held.drop(c.Name, sv.ID)
	b.indexExpiry(ctx, s, c.Name, previous, issued)
	if c.LastError != "" || c.RefreshFailures != 0 || !c.RefreshRetryAt.IsZero() || c.Reconnect != nil {
		b.noteRecovered(ctx, s, c) // dead mark dropped, recovered sent
		c.LastError, c.RefreshFailures, c.RefreshRetryAt = "", 0, time.Time{}
		b.saveMeta(ctx, s, c)
	}
	if c.MirrorContent == "token" && len(c.Mirror) > 0 {
		b.markMirrorPending(ctx, s, c)
	}
	return nil
}

// storeHeld writes the token held in memory for a credential, when the
// credential is still at the version it was obtained for (else the held
// token is dropped: that version is retired). It reports whether nothing
// is held for the name any more.
func (b *backend) storeHeld(ctx context.Context, s logical.Storage, name string) bool {
	lock := b.lock(name)
	lock.Lock()
	defer lock.Unlock()
	id, issued := b.held.lookup(name)
	if issued == nil {
		return true
	}
	c, err := loadCredential(ctx, s, name)
	if err != nil {
		return false
	}
	if c == nil || c.ID != id {
		b.held.drop(name, id)
		return true
	}
	sv, err := loadSecret(ctx, s, name, id)
	if err != nil {
		return false
	}
	if sv.Token != nil && sv.Token.IssuedAt.After(issued.IssuedAt) {
		b.held.drop(name, id) // storage has a newer one
		return true
	}
	if err := b.putToken(ctx, s, c, sv, issued); err != nil {
		b.logger.Warn("could not store a held token yet", "credential", name, "error", err)
		return false
	}
	b.dropCached(name)
	return true
}

// storeHeldTokens writes every held token (the periodic run).
func (b *backend) storeHeldTokens(ctx context.Context, s logical.Storage) error {
	var failed int
	for _, name := range b.held.names() {
		if ctx.Err() != nil {
			break
		}
		if !b.storeHeld(ctx, s, name) {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d issued tokens could not be stored yet; they are held in memory", failed)
	}
	return nil
}

// recordErrorFor notes a refresh failure on a credential still at version
// id, under its write lock: the error, one more consecutive failure and
// when background refresh tries again (refreshBackoff: one minute,
// doubling, at most an hour, with jitter). Token reads are not held back by
// it.
func (b *backend) recordErrorFor(ctx context.Context, s logical.Storage, name, id string, cause error) {
	lock := b.lock(name)
	lock.Lock()
	defer lock.Unlock()
	c, err := loadCredential(ctx, s, name)
	if err != nil || c == nil || c.ID != id {
		return
	}
	b.noteRefreshFailure(ctx, s, c, cause) // dead grants, notifications
	c.RefreshFailures++
	c.RefreshRetryAt = b.now().UTC().Add(refreshBackoff(name, c.RefreshFailures))
	b.recordError(ctx, s, c, cause)
}

// heldTokens keeps issued tokens that storage did not take, by credential
// name, with the version id they were obtained for. There is at most one
// per name; an entry goes when its token is stored or its version retired.
type heldTokens struct {
	mu     sync.Mutex
	tokens map[string]heldToken // guarded by mu
}

type heldToken struct {
	id    string
	token *issuedToken
}

func (h *heldTokens) put(name, id string, t *issuedToken) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.tokens == nil {
		h.tokens = map[string]heldToken{}
	}
	h.tokens[name] = heldToken{id: id, token: t}
}

// get returns the token held for version id of name; nil when none.
func (h *heldTokens) get(name, id string) *issuedToken {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t, ok := h.tokens[name]; ok && t.id == id {
		return t.token
	}
	return nil
}

// lookup returns the token held for name and its version id.
func (h *heldTokens) lookup(name string) (string, *issuedToken) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.tokens[name]
	return t.id, t.token
}

// drop forgets the token held for version id of name.
func (h *heldTokens) drop(name, id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t, ok := h.tokens[name]; ok && t.id == id {
		delete(h.tokens, name)
	}
}

func (h *heldTokens) names() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	names := make([]string, 0, len(h.tokens))
	for name := range h.tokens {
		names = append(names, name)
	}
	return names
}

// liveTokens adds the tokens held in memory for name to live.
func (h *heldTokens) liveTokens(name string, live map[string]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t, ok := h.tokens[name]; ok {
		live[t.token.AccessToken] = true
		live[t.token.RefreshToken] = true
	}
}

// nameLocks are mutexes by name, created on first use and deleted when no
// one holds or waits for them, so their number is bounded by the names in
// use at once. Waiting for one ends with the waiter's context.
type nameLocks struct {
	mu    sync.Mutex
	locks map[string]*nameLock // guarded by mu
}

type nameLock struct {
	ch   chan struct{} // holds a value while locked
	refs int           // guarded by nameLocks.mu: holders and waiters
}

// lock takes name's lock and returns its release.
func (l *nameLocks) lock(ctx context.Context, name string) (func(), error) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*nameLock{}
	}
	nl := l.locks[name]
	if nl == nil {
		nl = &nameLock{ch: make(chan struct{}, 1)}
		l.locks[name] = nl
	}
	nl.refs++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		if nl.refs--; nl.refs == 0 {
			delete(l.locks, name)
		}
		l.mu.Unlock()
	}
	select {
	case nl.ch <- struct{}{}:
		return func() { <-nl.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
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
	if !b.writable() {
		// A standby must not use (and, with rotating refresh tokens,
		// consume) a grant whose next token it cannot store.
		return nil, logical.ErrReadOnly
	}
	if err := upstream.CheckURL(cfg.HostAllowed, req.TokenURL); err != nil {
		return nil, &CredentialError{Kind: KindRefreshFailed, Msg: fmt.Sprintf("credential %q: token_url %v", c.Name, err), Err: err}
	}

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
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
	switch secs := tokenExpiresIn(tok); {
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
	b.saveMeta(ctx, s, c)
}

func (b *backend) saveMeta(ctx context.Context, s logical.Storage, c *credential) {
	entry, err := jsonEntry(credKey(c.Name), c, false)
	if err == nil {
		err = s.Put(ctx, entry)
	}
	b.summary.noteCred(c, err)
	if err != nil {
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

// cacheGenEntries is the number of per-name cache generations kept.
func (b *backend) cacheGenEntries() int { return len(b.nameGens) }

// upstreamClient returns the client for the config's host policy.
func (b *backend) upstream(cfg *Config) *upstream.Client {
	b.upstreamMu.Lock()
	defer b.upstreamMu.Unlock()
	if b.upstreamClient == nil || b.upstreamCfg != cfg {
		b.upstreamClient = upstream.New(cfg, b.upstreamRoots)
		b.upstreamClient.Attempts = b.upstreamAttempts
		b.upstreamClient.Backoff = b.upstreamBackoff
		// One set of per-host slots and pauses whatever the config: a
		// client built for a new config must not get fresh slots.
		b.upstreamClient.SetHostLimiter(b.hostLimits)
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
