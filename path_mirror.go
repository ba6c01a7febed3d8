package nebula

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/mirror"
)

// Mirroring. A credential that lists targets in "mirror" has its content
// (its secret fields, or with mirror_content=token its ready-to-use token)
// copied to AWS Secrets Manager and/or Azure Key Vault after every change.
// Target configs (with their secrets) are stored seal-wrapped under
// "mirrorcfg/"; per credential and target, "mirrorstate/<name>/<target>"
// records the sync status. Writes that fail are retried from the periodic
// work with backoff; the targets order writes by version, so a retry never
// replaces newer content.
const (
	mirrorCfgPrefix   = "mirrorcfg/"
	mirrorStatePrefix = "mirrorstate/"
	mirrorRetryMin    = 30 * time.Second
	mirrorRetryMax    = 30 * time.Minute
)

// Sync statuses.
const (
	syncPending       = "pending"
	syncSynced        = "synced"
	syncError         = "error"
	syncDeletePending = "delete_pending"
)

// mirrorTargets are the names a credential's mirror field may list.
var mirrorTargets = []string{mirror.NameAWS, mirror.NameAzure}

// targetConfig is a stored target configuration: one of the two is set.
type targetConfig struct {
	AWS   *mirror.AWSConfig   `json:"aws,omitempty"`
	Azure *mirror.AzureConfig `json:"azure,omitempty"`
}

// mirrorState is one credential's sync status at one target.
type mirrorState struct {
	SyncStatus    string    `json:"sync_status"`
	LastSyncedAt  time.Time `json:"last_synced_at,omitempty"`
	LastError     string    `json:"last_error,omitempty"`
	Failures      int       `json:"failures,omitempty"`
	NextAttemptAt time.Time `json:"next_attempt_at,omitempty"`
}

func mirrorStateKey(name, target string) string { return mirrorStatePrefix + name + "/" + target }

// mirrorSet caches the built targets; guarded by mu.
type mirrorSet struct {
	mu      sync.Mutex
	targets map[string]mirror.Target
	cfg     *Config // the config whose host policy the targets were built with
}

func (m *mirrorSet) reset() {
	m.mu.Lock()
	m.targets = nil
	m.mu.Unlock()
}

// targetFactory builds a target from its stored config; client carries its
// requests under the engine's host policy.
type targetFactory func(name string, cfg *targetConfig, client *http.Client) (mirror.Target, error)

// newTarget builds a target from its stored config with the real SDK
// clients, whose requests all go through client (the engine's host policy:
// Secrets Manager, STS, Key Vault and Entra token requests of a service
// principal). Tests replace backend.mirrorFactory to reach loopback servers.
func newTarget(name string, cfg *targetConfig, client *http.Client) (mirror.Target, error) {
	switch {
	case name == mirror.NameAWS && cfg.AWS != nil:
		return mirror.NewAWS(*cfg.AWS, client)
	case name == mirror.NameAzure && cfg.Azure != nil:
		return mirror.NewAzure(*cfg.Azure, nil, &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: client}})
	}
	return nil, fmt.Errorf("mirror target %q is not configured", name)
}

// target returns the built target, building it from storage on first use
// and again after the config (its host policy) changed; nil when the target
// is not configured.
func (b *backend) target(ctx context.Context, s logical.Storage, name string) (mirror.Target, error) {
	conf, err := b.getConfig(ctx, s) // before mirrors.mu: putConfig holds configMu while it resets mirrors
	if err != nil {
		return nil, err
	}
	b.mirrors.mu.Lock()
	defer b.mirrors.mu.Unlock()
	if b.mirrors.cfg != conf {
		b.mirrors.targets, b.mirrors.cfg = nil, conf
	}
	if t, ok := b.mirrors.targets[name]; ok {
		return t, nil
	}
	cfg, err := loadTargetConfig(ctx, s, name)
	if err != nil || cfg == nil {
		return nil, err
	}
	t, err := b.mirrorFactory(name, cfg, b.upstream(conf).HTTPClient())
	if err != nil {
		return nil, fmt.Errorf("building mirror target %s: %w", name, err)
	}
	if b.mirrors.targets == nil {
		b.mirrors.targets = map[string]mirror.Target{}
	}
	b.mirrors.targets[name] = t
	return t, nil
}

func loadTargetConfig(ctx context.Context, s logical.Storage, name string) (*targetConfig, error) {
	entry, err := s.Get(ctx, mirrorCfgPrefix+name)
	if err != nil {
		return nil, storageError("reading mirror target", err)
	}
	if entry == nil {
		return nil, nil
	}
	cfg := &targetConfig{}
	if err := entry.DecodeJSON(cfg); err != nil {
		return nil, storageError("decoding mirror target", err)
	}
	return cfg, nil
}

// mirrorContent is the document mirrored for a credential, and its version
// (milliseconds of the content's issue time, so it grows with every change,
// token refreshes included).
func (b *backend) mirrorContent(ctx context.Context, s logical.Storage, c *credential) ([]byte, int, error) {
	if c.MirrorContent == "token" {
		t, err := b.tokenFor(ctx, s, c.Name)
		if err != nil {
			return nil, 0, err
		}
		doc := map[string]any{
			"name": c.Name, "type": c.Type, "version": t.Version,
			"access_token": t.AccessToken, "token_type": t.TokenType,
			"header_name": t.HeaderName, "header_value": t.HeaderValue,
			"expires_at": formatTime(t.ExpiresAt),
		}
		raw, err := json.Marshal(doc)
		return raw, int(t.IssuedAt.UnixMilli()), err
	}
	sv, err := loadSecret(ctx, s, c.Name, c.ID)
	if err != nil {
		return nil, 0, err
	}
	raw, err := json.Marshal(map[string]any{
		"name": c.Name, "type": c.Type, "version": c.Version, "id": c.ID,
		"fields": sv.merged(c),
	})
	return raw, int(sv.CreatedAt.UnixMilli()), err
}

// syncMirrors copies a credential to each of its targets now and records
// the outcome; failures are retried by the periodic work. It returns the
// first error for callers that report it.
func (b *backend) syncMirrors(ctx context.Context, s logical.Storage, name string) error {
	c, err := loadCredential(ctx, s, name)
	if err != nil || c == nil || len(c.Mirror) == 0 {
		return err
	}
	var errs []error
	for _, target := range c.Mirror {
		errs = append(errs, b.syncOne(ctx, s, c, target))
	}
	return errors.Join(errs...)
}

func (b *backend) syncOne(ctx context.Context, s logical.Storage, c *credential, target string) error {
	err := b.putMirror(ctx, s, c, target)
	b.recordMirror(ctx, s, c.Name, target, false, err)
	b.audit(ctx, nil, auditOutcome(auditEvent{Action: "mirror_" + target, Credential: c.Name, Version: c.Version}, err), nil)
	return err
}

func (b *backend) putMirror(ctx context.Context, s logical.Storage, c *credential, target string) error {
	t, err := b.target(ctx, s, target)
	if err != nil {
		return err
	}
	if t == nil {
		return fmt.Errorf("mirror target %s is not configured (mirror/%s)", target, target)
	}
	content, version, err := b.mirrorContent(ctx, s, c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return t.Put(ctx, c.Name, version, content)
}

// recordMirror stores the outcome of a mirror write (deleting=false) or
// delete (deleting=true). A successful delete drops the state; a failure
// keeps it for a retry after a backoff.
func (b *backend) recordMirror(ctx context.Context, s logical.Storage, name, target string, deleting bool, err error) {
	key := mirrorStateKey(name, target)
	if deleting && err == nil {
		derr := s.Delete(ctx, key)
		b.summary.noteMirror(name, target, nil, derr)
		if derr != nil {
			b.logger.Warn("could not drop a mirror state", "credential", name, "target", target, "error", derr)
		}
		return
	}
	now := b.now().UTC()
	st := mirrorState{SyncStatus: syncSynced, LastSyncedAt: now}
	if err != nil {
		prev, _ := loadMirrorState(ctx, s, name, target)
		if prev != nil {
			st = *prev
		}
		st.SyncStatus = syncError
		if deleting {
			st.SyncStatus = syncDeletePending
		}
		st.Failures++
		st.LastError = err.Error()
		st.NextAttemptAt = now.Add(mirrorBackoff(st.Failures))
	}
	entry, jerr := logical.StorageEntryJSON(key, &st)
	if jerr == nil {
		jerr = s.Put(ctx, entry)
	}
	b.summary.noteMirror(name, target, &st, jerr)
	if jerr != nil {
		b.logger.Warn("could not store a mirror state", "credential", name, "target", target, "error", jerr)
	}
}

func mirrorBackoff(failures int) time.Duration {
	d := mirrorRetryMin
	for i := 1; i < failures && d < mirrorRetryMax; i++ {
		d *= 2
	}
	return min(d, mirrorRetryMax)
}

// markMirrorPending notes that a credential's content changed where the
// mirror write cannot run inline (a token refresh on the read path); the
// periodic work syncs it.
func (b *backend) markMirrorPending(ctx context.Context, s logical.Storage, c *credential) {
	for _, target := range c.Mirror {
		entry, err := logical.StorageEntryJSON(mirrorStateKey(c.Name, target), &mirrorState{SyncStatus: syncPending})
		if err == nil {
			err = s.Put(ctx, entry)
		}
		b.summary.noteMirror(c.Name, target, &mirrorState{SyncStatus: syncPending}, err)
		if err != nil {
			b.logger.Warn("could not mark a mirror pending", "credential", c.Name, "target", target, "error", err)
		}
	}
}

// unmirror deletes a deleted credential's copies; failures stay as
// delete_pending and are retried.
func (b *backend) unmirror(ctx context.Context, s logical.Storage, name string, targets []string) {
	for _, target := range targets {
		err := b.deleteMirror(ctx, s, name, target)
		b.recordMirror(ctx, s, name, target, true, err)
		b.audit(ctx, nil, auditOutcome(auditEvent{Action: "mirror_delete_" + target, Credential: name}, err), nil)
	}
}

func (b *backend) deleteMirror(ctx context.Context, s logical.Storage, name, target string) error {
	t, err := b.target(ctx, s, target)
	if err != nil || t == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return t.Delete(ctx, name)
}

// periodicMirror retries pending and failed mirror writes and deletes whose
// backoff has passed. Its cost grows with the number of mirrored
// credentials.
func (b *backend) periodicMirror(ctx context.Context, s logical.Storage) error {
	type due struct {
		name, target string
		st           *mirrorState
	}
	now := b.now()
	var work []due
	if err := b.eachMirrorState(ctx, s, func(name, target string, st *mirrorState) {
		if st.SyncStatus != syncSynced && !now.Before(st.NextAttemptAt) {
			work = append(work, due{name, target, st})
		}
	}); err != nil {
		return err
	}
	var errs []error
	for _, w := range work {
		errs = append(errs, b.retryMirror(ctx, s, w.name, w.target, w.st))
	}
	return errors.Join(errs...)
}

func (b *backend) retryMirror(ctx context.Context, s logical.Storage, name, target string, st *mirrorState) error {
	lock := b.lock(name)
	lock.RLock()
	c, err := loadCredential(ctx, s, name)
	lock.RUnlock()
	if err != nil {
		return err
	}
	if c == nil || st.SyncStatus == syncDeletePending || !slices.Contains(c.Mirror, target) {
		err := b.deleteMirror(ctx, s, name, target)
		b.recordMirror(ctx, s, name, target, true, err)
		return err
	}
	return b.syncOne(ctx, s, c, target)
}

func loadMirrorState(ctx context.Context, s logical.Storage, name, target string) (*mirrorState, error) {
	entry, err := s.Get(ctx, mirrorStateKey(name, target))
	if err != nil || entry == nil {
		return nil, err
	}
	st := &mirrorState{}
	return st, entry.DecodeJSON(st)
}

// mirrorHealth reports mirror errors to health reads.
func (b *backend) mirrorHealth(ctx context.Context, s logical.Storage) []healthIssue {
	return b.summary.mirrorIssues() // summary.go: no scan per read
}

func (b *backend) eachMirrorState(ctx context.Context, s logical.Storage, visit func(name, target string, st *mirrorState)) error {
	names, err := s.List(ctx, mirrorStatePrefix)
	if err != nil {
		return storageError("listing mirror states", err)
	}
	for _, dir := range names {
		targets, err := s.List(ctx, mirrorStatePrefix+dir)
		if err != nil {
			return storageError("listing mirror states", err)
		}
		for _, target := range targets {
			st, err := loadMirrorState(ctx, s, dir[:len(dir)-1], target)
			if err != nil {
				return storageError("reading mirror state", err)
			}
			if st != nil {
				visit(dir[:len(dir)-1], target, st)
			}
		}
	}
	return nil
}

// checkMirrorInput validates a credential's mirror fields against the
// configured targets.
func (b *backend) checkMirrorInput(ctx context.Context, s logical.Storage, targets []string, content string) error {
	var errs []error
	for _, t := range targets {
		if !slices.Contains(mirrorTargets, t) {
			errs = append(errs, fmt.Errorf("field \"mirror\": %q is not a mirror target (aws, azure)", t))
			continue
		}
		cfg, err := loadTargetConfig(ctx, s, t)
		if err != nil {
			return err
		}
		if cfg == nil {
			errs = append(errs, fmt.Errorf("field \"mirror\": target %s is not configured (write mirror/%s first)", t, t))
		}
	}
	if content != "" && content != "token" && content != "secret" {
		errs = append(errs, errors.New("field \"mirror_content\" must be token or secret"))
	}
	if err := errors.Join(errs...); err != nil {
		return invalidInput(err)
	}
	return nil
}
