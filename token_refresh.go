package nebula

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

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
		c, sv, err := loadCredentialWithCurrent(ctx, s, name)
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
	if err := b.onActiveNode(); err != nil {
		return err
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
	c, sv, err := loadCredentialWithCurrent(ctx, s, name)
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
		if err := b.writeMeta(ctx, s, c); err != nil {
			b.logger.Warn("could not store credential status", "credential", c.Name, "error", err)
		}
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
