package nebula

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/types"
)

// Credential statuses shown by creds/<name> reads.
const (
	statusActive  = "active"
	statusExpired = "expired"
	statusError   = "error"
)

// credential is the non-secret part of a credential, stored at
// "creds/<name>". Its secret fields live in a secretVersion.
type credential struct {
	// ID is the id (UUID) of the current version.
	ID      string `json:"id"`
	Name    string `json:"name"`
	Type    string `json:"type"`
	Version int    `json:"version"` // current version number, from 1

	Description string            `json:"description,omitempty"`
	Tags        []string          `json:"tags,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// Fields holds the type's non-secret field values.
	Fields types.Values `json:"fields"`
	// ProviderEndpoints holds the endpoint URLs (by field name: token_url,
	// auth_url, device_url, revocation_url) of the provider preset the
	// credential names, resolved when the credential was written, so that a
	// later providers/ write cannot move its secrets. Explicit URL fields
	// take precedence. Nil when it names no preset, or for credentials
	// stored before snapshots existed (those resolve the preset as it is,
	// until a write or a change of the preset snapshots them).
	ProviderEndpoints map[string]string `json:"provider_endpoints,omitempty"`

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// LastError is the last failure of a background operation; empty when
	// the last one succeeded. It never holds secret material.
	LastError string `json:"last_error,omitempty"`
	// Reconnect marks a version whose grant the token endpoint declared
	// dead (reconnect.go); nil when none.
	Reconnect *reconnectState `json:"reconnect,omitempty"`
	// RefreshFailures counts consecutive failed token refreshes, and
	// RefreshRetryAt is when background refresh tries again (backoff);
	// both are reset by a stored token.
	RefreshFailures int       `json:"refresh_failures,omitempty"`
	RefreshRetryAt  time.Time `json:"refresh_retry_at,omitempty"`
	// IdempotencyKeys lists the idempotency keys used on this credential,
	// oldest first, so replays find them and delete can drop them; bounded
	// by idempotencyKeyTTL and maxIdempotencyKeys.
	IdempotencyKeys []idemKeyRef `json:"idempotency_keys,omitempty"`

	// Mirror lists the targets the credential is copied to; MirrorContent
	// is "secret" (default: the secret fields) or "token".
	Mirror        []string `json:"mirror,omitempty"`
	MirrorContent string   `json:"mirror_content,omitempty"`

	// Previous is the version before the current one, kept readable by a
	// blue/green rotation until its grace period ends; nil when none.
	Previous *versionRef `json:"previous,omitempty"`
	// Rotation is the rotation policy; nil when none.
	Rotation      *rotationPolicy `json:"rotation,omitempty"`
	RotationState rotationState   `json:"rotation_state"`
}

// secretVersion is one version of a credential's secret fields, stored
// seal-wrapped at "secret/<name>/<id>".
type secretVersion struct {
	ID        string       `json:"id"`
	Version   int          `json:"version"`
	CreatedAt time.Time    `json:"created_at"`
	Fields    types.Values `json:"fields"`
	// Token is the token last issued by the upstream for this version
	// (oauth2); nil before the first token read.
	Token *issuedToken `json:"token,omitempty"`
}

// Idempotency keys are kept per credential as Stripe does: those used in
// the last idempotencyKeyTTL, at most maxIdempotencyKeys of them (the most
// recent). A key dropped from the list behaves like a new key.
const (
	idempotencyKeyTTL  = 24 * time.Hour
	maxIdempotencyKeys = 100
)

// idemKeyRef is an idempotency key used on a credential: the storage id of
// its record and when it was first used.
type idemKeyRef struct {
	ID     string    `json:"id"`
	UsedAt time.Time `json:"used_at"`
}

// UnmarshalJSON also reads the older form, a bare storage id, which counts
// as used long ago (the next write drops it).
func (r *idemKeyRef) UnmarshalJSON(data []byte) error {
	var id string
	if err := json.Unmarshal(data, &id); err == nil {
		*r = idemKeyRef{ID: id}
		return nil
	}
	type plain idemKeyRef
	return json.Unmarshal(data, (*plain)(r))
}

// idempotencyKey reports whether a key is live on the credential at now:
// listed, and younger than idempotencyKeyTTL.
func (c *credential) idempotencyKey(storageID string, now time.Time) bool {
	for _, ref := range c.IdempotencyKeys {
		if ref.ID == storageID {
			return now.Sub(ref.UsedAt) < idempotencyKeyTTL
		}
	}
	return false
}

// useIdempotencyKey records a key (storageID, "" for none) as used at now,
// unless it is live already, and trims the list to the keys younger than
// idempotencyKeyTTL, at most maxIdempotencyKeys of the most recent. It
// returns the storage ids of the keys it dropped, whose records the caller
// deletes.
func (c *credential) useIdempotencyKey(storageID string, now time.Time) (dropped []string) {
	keys := make([]idemKeyRef, 0, len(c.IdempotencyKeys)+1)
	for _, ref := range c.IdempotencyKeys {
		if ref.ID == storageID && now.Sub(ref.UsedAt) >= idempotencyKeyTTL {
			continue // expired: used again as a new key below
		}
		if ref.ID == storageID {
			storageID = ""
		}
		keys = append(keys, ref)
	}
	if storageID != "" {
		keys = append(keys, idemKeyRef{ID: storageID, UsedAt: now})
	}
	var kept []idemKeyRef
	for i, ref := range keys {
		if now.Sub(ref.UsedAt) >= idempotencyKeyTTL || len(keys)-i > maxIdempotencyKeys {
			dropped = append(dropped, ref.ID)
			continue
		}
		kept = append(kept, ref)
	}
	c.IdempotencyKeys = kept
	return dropped
}

// idemRecord remembers the request an idempotency key was first used with,
// stored at "idem/<sha256 of key>".
type idemRecord struct {
	Name string `json:"name"`
	ID   string `json:"id"`
	// Fingerprint is an HMAC of the request's input (secret fields
	// included) under the mount's salt; it reveals nothing of the input.
	Fingerprint string `json:"fingerprint"`
}

func credKey(name string) string                           { return credsPrefix + name }
func secretKey(name, id string) string                     { return secretPrefix + name + "/" + id }
func idemKey(storageID string) string                      { return idemPrefix + storageID }
func idemStorageID(key string) string                      { return hexSHA256([]byte(key)) }
func hexSHA256(b []byte) string                            { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
func (c *credential) typ() *types.Type                     { t, _ := types.Lookup(c.Type); return t }
func (s *secretVersion) merged(c *credential) types.Values { return c.Fields.Merge(s.Fields) }

// upstreamValues are the values requests to the credential's upstream use:
// merged, with the provider endpoints the credential was written with where
// it sets no URL of its own.
func (s *secretVersion) upstreamValues(c *credential) types.Values {
	v := s.merged(c)
	for field, u := range c.ProviderEndpoints {
		if v.String(field) == "" {
			v[field] = u
		}
	}
	return v
}

// upstreamValues are a flow's values with the provider endpoints it
// started with where it sets no URL of its own.
func (f *flow) upstreamValues() types.Values {
	v := f.Values.Merge(nil)
	for field, u := range f.ProviderEndpoints {
		if v.String(field) == "" {
			v[field] = u
		}
	}
	return v
}

// maxNameLength bounds credential names.
const maxNameLength = 128

var nameRe = regexp.MustCompile(`^\w(([\w.-]+)?\w)?$`) // framework.GenericNameRegex

func validateName(name string) error {
	if len(name) > maxNameLength {
		return fmt.Errorf("name is %d characters long; at most %d are allowed", len(name), maxNameLength)
	}
	if !nameRe.MatchString(name) {
		return fmt.Errorf("name %q is invalid: use letters, digits, '_', '-' and '.', starting and ending with a letter, digit or '_'", name)
	}
	return nil
}

// status derives the credential's status at time now.
func (c *credential) status(now time.Time) string {
	if exp := types.ExpiresAt(c.Fields); !exp.IsZero() && !now.Before(exp) {
		return statusExpired
	}
	if c.needsReconnect() {
		return statusNeedsReconnect
	}
	if c.LastError != "" {
		return statusError
	}
	return statusActive
}

// responseData is what creds/<name> reads answer: everything but secret
// fields.
func (c *credential) responseData(now time.Time) map[string]any {
	data := map[string]any{}
	for name, value := range c.Fields {
		data[name] = value
	}
	var expires any
	if exp := types.ExpiresAt(c.Fields); !exp.IsZero() {
		expires = exp.UTC().Format(time.RFC3339)
	}
	for k, v := range map[string]any{
		"id":                      c.ID,
		"name":                    c.Name,
		"type":                    c.Type,
		"version":                 c.Version,
		"description":             c.Description,
		"tags":                    nonNil(c.Tags),
		"metadata":                nonNilMap(c.Metadata),
		"created_at":              c.CreatedAt.UTC().Format(time.RFC3339Nano),
		"updated_at":              c.UpdatedAt.UTC().Format(time.RFC3339Nano),
		"expires_at":              expires,
		"status":                  c.status(now),
		"last_error":              c.LastError,
		"refresh_failures":        c.RefreshFailures,
		"next_refresh_attempt_at": formatTime(c.RefreshRetryAt),
		"reconnect":               c.reconnectData(),
		"rotation":                c.rotationData(now),
		"mirror":                  nonNil(c.Mirror),
		"mirror_content":          firstNonEmpty(c.MirrorContent, "secret"),
	} {
		data[k] = v
	}
	return data
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// loadCredential reads a credential's metadata; nil (and no error) when it
// does not exist. See loadCredentialRequired for reads that need one.
func loadCredential(ctx context.Context, s logical.Storage, name string) (*credential, error) {
	entry, err := s.Get(ctx, credKey(name))
	if err != nil {
		return nil, storageError("reading credential", err)
	}
	if entry == nil {
		return nil, nil
	}
	c := &credential{}
	if err := entry.DecodeJSON(c); err != nil {
		return nil, storageError("decoding credential", err)
	}
	if c.typ() == nil {
		return nil, storageError("decoding credential", fmt.Errorf("unknown stored type %q", c.Type))
	}
	return c, nil
}

// loadCredentialRequired loads a credential that must exist: invalid_input
// for a bad name, not_found for a missing one; never nil without an error.
func loadCredentialRequired(ctx context.Context, s logical.Storage, name string) (*credential, error) {
	if err := validateName(name); err != nil {
		return nil, invalidInput(err)
	}
	c, err := loadCredential(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, newError(KindNotFound, "credential %q does not exist", name)
	}
	return c, nil
}

// loadSecret reads one secret version of a credential.
func loadSecret(ctx context.Context, s logical.Storage, name, id string) (*secretVersion, error) {
	entry, err := s.Get(ctx, secretKey(name, id))
	if err != nil {
		return nil, storageError("reading secret version", err)
	}
	if entry == nil {
		return nil, storageError("reading secret version", fmt.Errorf("version %s of %q is missing", id, name))
	}
	sv := &secretVersion{}
	if err := entry.DecodeJSON(sv); err != nil {
		return nil, storageError("decoding secret version", err)
	}
	return sv, nil
}

// secretsEqual reports whether every supplied secret field equals the
// stored one, comparing in constant time.
func secretsEqual(stored, supplied types.Values) bool {
	for name, value := range supplied {
		a, _ := json.Marshal(stored[name])
		b, _ := json.Marshal(value)
		if subtle.ConstantTimeCompare(a, b) != 1 {
			return false
		}
	}
	return true
}

// fingerprint is an HMAC-SHA256 of the canonical JSON of v under the
// mount's salt.
func (b *backend) fingerprint(ctx context.Context, s logical.Storage, v any) (string, error) {
	key, err := b.getSalt(ctx, s)
	if err != nil {
		return "", err
	}
	canonical, err := json.Marshal(v) // maps marshal with sorted keys
	if err != nil {
		return "", fmt.Errorf("encoding fingerprint input: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(canonical)
	return hex.EncodeToString(mac.Sum(nil)), nil
}

// getSalt returns the mount's HMAC key, creating it on first use.
func (b *backend) getSalt(ctx context.Context, s logical.Storage) ([]byte, error) {
	b.saltMu.Lock()
	defer b.saltMu.Unlock()
	if b.salt != nil {
		return b.salt, nil
	}
	entry, err := s.Get(ctx, saltKey)
	if err != nil {
		return nil, storageError("reading salt", err)
	}
	if entry != nil {
		b.salt = entry.Value
		return b.salt, nil
	}
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("generating salt: %w", err)
	}
	if err := s.Put(ctx, &logical.StorageEntry{Key: saltKey, Value: salt, SealWrap: true}); err != nil {
		return nil, storageError("writing salt", err)
	}
	b.salt = salt
	return salt, nil
}

// loadIdem reads the record of an idempotency key. A record whose
// credential no longer exists (or has another id lineage) is stale and
// reported as absent, as is one older than idempotencyKeyTTL.
func loadIdem(ctx context.Context, s logical.Storage, storageID string, now time.Time) (*idemRecord, error) {
	entry, err := s.Get(ctx, idemKey(storageID))
	if err != nil {
		return nil, storageError("reading idempotency key", err)
	}
	if entry == nil {
		return nil, nil
	}
	rec := &idemRecord{}
	if err := entry.DecodeJSON(rec); err != nil {
		return nil, storageError("decoding idempotency key", err)
	}
	c, err := loadCredential(ctx, s, rec.Name)
	if err != nil {
		return nil, err
	}
	if c == nil || !c.idempotencyKey(storageID, now) {
		return nil, nil
	}
	return rec, nil
}

// commitEntries writes staged entries (new keys nothing points to yet),
// then the commit entry that makes them live. When a write fails, the staged
// entries written so far are deleted: a failed request leaves the old state
// in force, and at worst unreferenced entries that nothing reads.
func commitEntries(ctx context.Context, s logical.Storage, staged []*logical.StorageEntry, commit *logical.StorageEntry) error {
	var written []string
	undo := func() error {
		var errs []error
		for _, key := range written {
			errs = append(errs, s.Delete(ctx, key))
		}
		return errors.Join(errs...)
	}
	for _, entry := range append(staged, commit) {
		if err := s.Put(ctx, entry); err != nil {
			return errors.Join(err, undo())
		}
		written = append(written, entry.Key)
	}
	return nil
}

func jsonEntry(key string, v any, sealWrap bool) (*logical.StorageEntry, error) {
	entry, err := logical.StorageEntryJSON(key, v)
	if err != nil {
		return nil, err
	}
	entry.SealWrap = sealWrap
	return entry, nil
}

// providerKey is the storage key of a custom OAuth2 provider preset.
func providerKey(name string) string { return providersPrefix + name }

// loadCredentialWithCurrent loads a credential that must exist (as
// loadCredentialRequired) and its current secret version.
func loadCredentialWithCurrent(ctx context.Context, s logical.Storage, name string) (*credential, *secretVersion, error) {
	c, err := loadCredentialRequired(ctx, s, name)
	if err != nil {
		return nil, nil, err
	}
	sv, err := loadSecret(ctx, s, name, c.ID)
	if err != nil {
		return nil, nil, err
	}
	return c, sv, nil
}
