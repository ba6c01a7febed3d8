package nebula

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// The expiry index lists credentials by the minute their token expires:
// "expiry/<unix minute, 12 digits>/<name>". Finding what is due lists the
// minute buckets, then only the due buckets' names, so the cost grows with
// the number due, not with the number stored. Entries are hints: a stale one
// (refreshed or deleted credential) is dropped when found.
const expiryPrefix = "expiry/"

func expiryBucket(t time.Time) string {
	return fmt.Sprintf("%012d", t.Unix()/60)
}

func expiryKey(t time.Time, name string) string {
	return expiryPrefix + expiryBucket(t) + "/" + name
}

// indexExpiry moves a credential's index entry from the previous token's
// expiry to the new one's. Failures are logged: the index is a hint, and a
// missing entry only delays a background refresh until the next read.
func (b *backend) indexExpiry(ctx context.Context, s logical.Storage, name string, previous, next *issuedToken) {
	if next != nil {
		if err := s.Put(ctx, &logical.StorageEntry{Key: expiryKey(next.Expiry, name)}); err != nil {
			b.logger.Warn("could not index token expiry", "credential", name, "error", err)
		}
	}
	if previous != nil && (next == nil || expiryBucket(previous.Expiry) != expiryBucket(next.Expiry)) {
		if err := s.Delete(ctx, expiryKey(previous.Expiry, name)); err != nil {
			b.logger.Warn("could not drop old expiry index entry", "credential", name, "error", err)
		}
	}
}

// dueCredentials lists the names whose tokens expire before horizon, in
// expiry order.
func dueCredentials(ctx context.Context, s logical.Storage, horizon time.Time) ([]dueEntry, error) {
	buckets, err := s.List(ctx, expiryPrefix)
	if err != nil {
		return nil, storageError("listing the expiry index", err)
	}
	sort.Strings(buckets)
	limit := horizon.Unix() / 60
	var due []dueEntry
	for _, bucket := range buckets {
		minute, err := strconv.ParseInt(bucket[:len(bucket)-1], 10, 64)
		if err != nil {
			continue
		}
		if minute > limit {
			break
		}
		names, err := s.List(ctx, expiryPrefix+bucket)
		if err != nil {
			return nil, storageError("listing the expiry index", err)
		}
		for _, name := range names {
			due = append(due, dueEntry{name: name, key: expiryPrefix + bucket + name})
		}
	}
	return due, nil
}

type dueEntry struct {
	name string
	key  string // the index entry
}

// refreshResult is the outcome of refreshing what is due.
type refreshResult struct {
	Refreshed []string
	Failed    map[string]string // name -> error message
}

// refreshDue refreshes every credential whose token expires within
// refresh_ahead of now.
func (b *backend) refreshDue(ctx context.Context, s logical.Storage) (*refreshResult, error) {
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	due, err := dueCredentials(ctx, s, b.now().Add(cfg.RefreshAhead))
	if err != nil {
		return nil, err
	}
	res := &refreshResult{Refreshed: []string{}, Failed: map[string]string{}}
	for _, d := range due {
		if ctx.Err() != nil {
			break
		}
		refreshed, err := b.refreshIfDue(ctx, s, cfg, d.name)
		switch {
		case err != nil && ErrorKind(err) == KindNotFound:
			b.dropIndexEntry(ctx, s, d.key)
		case err != nil:
			res.Failed[d.name] = err.Error()
		case refreshed:
			res.Refreshed = append(res.Refreshed, d.name)
		default: // refreshed by someone else since it was indexed
			b.dropIndexEntry(ctx, s, d.key)
		}
	}
	return res, nil
}

func (b *backend) dropIndexEntry(ctx context.Context, s logical.Storage, key string) {
	if err := s.Delete(ctx, key); err != nil {
		b.logger.Warn("could not drop stale expiry index entry", "error", err)
	}
}

// refreshIfDue refreshes one credential when its token is expiring, sharing
// the work with concurrent token reads of the same name.
func (b *backend) refreshIfDue(ctx context.Context, s logical.Storage, cfg *Config, name string) (bool, error) {
	lock := b.lock(name)
	lock.Lock()
	defer lock.Unlock()
	c, sv, err := loadCurrent(ctx, s, name)
	if err != nil {
		return false, err
	}
	if !c.typ().Refreshable || !sv.Token.expiring(b.now(), cfg.RefreshAhead) {
		return false, nil
	}
	if _, err := b.refreshLocked(ctx, s, cfg, c, sv); err != nil {
		return false, err
	}
	return true, nil
}
