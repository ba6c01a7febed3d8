// Package nebula is the nebula-credential secrets engine: a Vault plugin
// backend that manages third-party credentials (API keys, basic auth, bearer
// tokens, OAuth2 clients) and serves ready-to-use tokens.
package nebula

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/sync/singleflight"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
)

// Version is the plugin's version, reported to Vault as RunningVersion. The
// plugin's main package sets it from -ldflags.
var Version = "v0.0.0-dev"

// Storage prefixes. Everything under secretPrefix and the salt are secret
// material and are seal-wrapped (PathsSpecial.SealWrapStorage).
const (
	configKey    = "config"
	credsPrefix  = "creds/"
	secretPrefix = "secret/"
	idemPrefix   = "idem/"
	saltKey      = "salt"
)

// Budgets of the background work. Vault bounds a whole periodic call
// (DefaultMaxRequestDuration, 90 s, shared with its WAL rollback, which runs
// after); each task gets at most periodicTaskBudget of it (taskTimeout), and
// each credential or flow a task works on at most periodicItemBudget (one
// upstream attempt: upstream.DefaultTimeout, webhookTimeout), so one hanging
// upstream cannot starve the other tasks, or the other credentials of a
// task.
const (
	periodicTaskBudget = 30 * time.Second
	periodicItemBudget = 10 * time.Second
)

// periodicTask is one piece of background work run from Vault's periodic
// calls on a node that may write.
type periodicTask struct {
	name string
	run  func(ctx context.Context, s logical.Storage) error
}

// backend is the nebula-credential secrets engine.
type backend struct {
	*framework.Backend

	logger hclog.Logger

	// locks serialise writes per credential name (locksutil.LockForKey).
	locks []*locksutil.LockEntry

	// now is the clock; tests replace it.
	now func() time.Time

	configMu sync.RWMutex
	config   *Config // guarded by configMu; nil means "load from storage"

	saltMu sync.Mutex
	salt   []byte // guarded by saltMu; HMAC key for idempotency fingerprints

	// tasks is the periodic work; set at construction, read-only after.
	tasks []periodicTask

	// cache holds served tokens by credential name (LRU, bounded by
	// config's cache_max_size).
	cache *lru.Cache[string, *servedToken]
	// cacheGen changes whenever the whole cache is dropped, and one of
	// nameGens (a fixed array indexed by a hash of the credential name, so
	// its size does not grow with the names read) when one entry is; a load
	// that started before a drop does not cache what it read.
	cacheGen atomic.Uint64
	nameGens [nameGenSlots]atomic.Uint64
	// loads makes concurrent cache misses of one name share one load.
	loads singleflight.Group
	// upstreamLocks serialise the upstream token requests of one credential
	// name (and only of that name), so no shard of locks is held across a
	// network call.
	upstreamLocks nameLocks
	// held keeps issued tokens that could not be stored yet (token.go).
	held heldTokens

	stats engineStats
	// notifier delivers notification events (notify.go).
	notifier notifier
	// summary keeps what health and metrics answer (summary.go).
	summary summaries

	// auditLog buffers the engine's audit events until they are flushed.
	auditLog auditLog
	// flusher stops the audit flusher goroutine (Clean); nil when none runs.
	flusherMu sync.Mutex
	flusher   context.CancelFunc // guarded by flusherMu
	flushDone chan struct{}      // guarded by flusherMu; closed when the flusher ends
	// storage is the mount's storage view, for background work.
	storage logical.Storage

	// healthSources add issues of other parts (mirrors) to health reads.
	healthSources []func(context.Context, logical.Storage) []healthIssue

	// mirrors caches the built mirror targets.
	mirrors mirrorSet
	// mirrorFactory builds a target from its config (tests reach loopback
	// servers through it).
	mirrorFactory targetFactory

	// expiry orders refreshable tokens by expiry for refresh-ahead.
	expiry timeIndex
	// backoff names the credentials whose expiry entry sits at the end of
	// a failed refresh's backoff (refresh.go).
	backoff backedOff
	// continuing is set while a background refresh goes on past its
	// periodic budget (continueRefresh); continueStop ends it.
	// continueBudget is refreshContinueBudget (tests may change it).
	continuing     atomic.Bool
	continueMu     sync.Mutex
	continueStop   context.CancelFunc // guarded by continueMu
	continueBudget time.Duration
	// sched orders credentials by their next rotation work.
	sched timeIndex
	// inRotation marks rotations in progress on this node.
	inRotation rotating
	// rotationHook, when set (tests), runs after each rotation step; an
	// error stops the rotation there, as a crash would.
	rotationHook func(step string) error

	upstreamMu       sync.Mutex
	upstreamClient   *upstream.Client // guarded by upstreamMu; built for upstreamCfg
	upstreamCfg      *Config          // guarded by upstreamMu
	upstreamAttempts int              // attempts per upstream request
	upstreamBackoff  time.Duration    // first retry wait
	upstreamRoots    *x509.CertPool   // trusted CAs for upstreams; nil means the system's
	webhookTimeout   time.Duration    // bound of one rotation webhook call
	// hostLimits bounds the requests in flight to each upstream host and
	// keeps Retry-After pauses; one per backend, shared by every
	// upstreamClient it builds (and so by token requests, revocations,
	// device flows, webhooks and mirrors).
	hostLimits *upstream.HostLimiter

	// taskBudget bounds each periodic task, itemBudget each credential or
	// flow a task works on (periodicTaskBudget, periodicItemBudget; tests
	// shorten them).
	taskBudget time.Duration
	// writableTTL is how long writable's answer is kept (tests: 0, ask
	// every time); writableVal/writableUntil hold it (until: unix nanos on
	// the real clock).
	writableTTL   time.Duration
	writableVal   atomic.Bool
	writableUntil atomic.Int64
	itemBudget    time.Duration
}

// Factory creates and sets up the backend; it is the plugin's
// logical.Factory.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend(conf)
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return &vaultBackend{b}, nil
}

// vaultBackend is the backend as Vault sees it: it answers CredentialErrors
// with their status and a body of the usual {"errors": [...]} shape whose
// message starts with the code. (Vault wraps errors a plugin returns as
// "1 error occurred: ...", which would hide the code prefix.)
type vaultBackend struct{ *backend }

// HandleRequest implements logical.Backend.
func (v *vaultBackend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	if forwardWrite(req) && !v.writable() {
		// A standby serving reads (OpenBao) sees a stale copy of storage:
		// a write handler must not decide on it (not_found, idempotency,
		// version checks), so every write goes to the active node at once.
		return nil, logical.ErrReadOnly
	}
	resp, err := v.backend.HandleRequest(ctx, req)
	if isReadOnly(err) || err == nil && resp != nil && resp.IsError() && isReadOnly(resp.Error()) {
		// A standby (Vault performance standby, OpenBao standby reads)
		// forwards the request to the active node when the handler's error
		// is logical.ErrReadOnly; a coded response would end it here.
		return nil, logical.ErrReadOnly
	}
	var ce *CredentialError
	if err != nil && errors.As(err, &ce) && req.Operation != logical.RollbackOperation {
		return codedResponse(ce), nil
	}
	return resp, err
}

// codedResponse is a raw HTTP answer carrying a CredentialError.
func codedResponse(ce *CredentialError) *logical.Response {
	body, _ := json.Marshal(map[string][]string{"errors": {ce.Error()}})
	return &logical.Response{Data: map[string]any{
		logical.HTTPStatusCode:  ce.Code(),
		logical.HTTPContentType: "application/json",
		logical.HTTPRawBody:     body,
	}}
}

func newBackend(conf *logical.BackendConfig) *backend {
	cache, _ := lru.New[string, *servedToken](DefaultConfig().CacheMaxSize)
	b := &backend{
		locks:            locksutil.CreateLocks(),
		now:              time.Now,
		cache:            cache,
		upstreamAttempts: upstream.DefaultAttempts,
		upstreamBackoff:  upstream.DefaultBackoff,
		hostLimits:       upstream.NewHostLimiter(upstream.DefaultConcurrencyPerHost),
		webhookTimeout:   webhookTimeout,
		taskBudget:       periodicTaskBudget,
		writableTTL:      writableCacheTTL,
		itemBudget:       periodicItemBudget,
		continueBudget:   refreshContinueBudget,
		mirrorFactory:    newTarget,
		expiry:           timeIndex{prefix: expiryPrefix},
		sched:            timeIndex{prefix: schedPrefix},
	}
	b.healthSources = append(b.healthSources, b.mirrorHealth)
	b.notifier.init()
	b.tasks = []periodicTask{
		{name: "refresh-ahead", run: b.periodicRefresh},
		{name: "rotation", run: b.periodicRotation},
		{name: "audit-retention", run: b.pruneAudit},
		{name: "flows", run: b.periodicFlows},
		{name: "mirror", run: b.periodicMirror},
	}
	b.storage = conf.StorageView
	b.logger = conf.Logger
	if b.logger == nil {
		b.logger = hclog.NewNullLogger()
	}
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{secretPrefix, saltKey, flowPrefix, mirrorCfgPrefix, notifyPrefix},
			Unauthenticated: []string{"callback"},
		},
		Paths: framework.PathAppend(
			[]*framework.Path{pathConfig(b)},
			pathTypes(b),
			pathCredentials(b),
			pathTokens(b),
			pathRotate(b),
			pathAudit(b),
			pathHealth(b),
			pathBatch(b),
			pathMirror(b),
			pathProviders(b),
			pathFlows(b),
		),
		PeriodicFunc:   b.periodic,
		InitializeFunc: b.initialize,
		WALRollback:    b.walRollback,
		// Rotations finish within a minute; an older WAL entry is from an
		// interrupted one.
		WALRollbackMinAge: 2 * time.Minute,
		Invalidate:        b.invalidate,
		Clean:             b.clean,
		RunningVersion:    Version,
	}
	return b
}

// HandleRequest runs the framework's routing and turns its field validation
// failures into invalid_input errors that name the field without echoing the
// value (which may be secret).
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	resp, err := b.Backend.HandleRequest(ctx, req)
	if req.Operation == logical.HelpOperation && err == nil {
		inlineOpenAPISchemas(resp) // for sys/internal/specs/openapi (openapi.go)
	}
	if err == nil && resp != nil && resp.IsError() {
		if msg := resp.Error().Error(); strings.HasPrefix(msg, "Field validation failed") {
			return nil, fieldTypeError(msg)
		}
	}
	return resp, err
}

// HandleExistenceCheck runs the framework's existence check, which
// validates field types before HandleRequest sees the request. Vault keeps
// only a UserError from it (anything else becomes a 500), so conversion
// errors become a UserError that names the field without echoing the value.
func (b *backend) HandleExistenceCheck(ctx context.Context, req *logical.Request) (bool, bool, error) {
	found, exists, err := b.Backend.HandleExistenceCheck(ctx, req)
	if err != nil && strings.Contains(err.Error(), "error converting input") {
		return false, false, errutil.UserError{Err: fieldTypeError(err.Error()).Error()}
	}
	return found, exists, err
}

var fieldNameRe = regexp.MustCompile(`for field "([^"]+)"`)

func fieldTypeError(msg string) error {
	if m := fieldNameRe.FindStringSubmatch(msg); m != nil {
		return newError(KindInvalidInput, "field %q has the wrong type", m[1])
	}
	return newError(KindInvalidInput, "a field has the wrong type")
}

// lock returns the lock of one credential name.
func (b *backend) lock(name string) *locksutil.LockEntry {
	return locksutil.LockForKey(b.locks, name)
}

// periodic runs the background tasks. Vault calls it about once a minute on
// every node; only a writable node acts. A failing task does not stop the
// others, and each runs on its own budget (taskBudget), so one that hangs
// does not starve the rest.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	if !b.writable() {
		return nil
	}
	for i, task := range b.tasks {
		taskCtx, cancel := context.WithTimeout(ctx, b.taskTimeout(ctx, len(b.tasks)-i))
		err := task.run(taskCtx, req.Storage)
		cancel()
		if err != nil {
			b.logger.Warn("periodic task failed", "task", task.name, "error", err)
		}
	}
	return nil
}

// taskTimeout is the budget of the next periodic task, with left tasks to
// run: taskBudget, or less when ctx's deadline is nearer (an equal share of
// the time that remains, one share kept for the WAL rollback Vault runs
// after the periodic function).
func (b *backend) taskTimeout(ctx context.Context, left int) time.Duration {
	budget := b.taskBudget
	if deadline, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(deadline)/time.Duration(left+1))
	}
	return budget
}

// invalidate drops in-memory state fed by a storage key that changed on
// another node (replication) or underneath us.
func (b *backend) invalidate(_ context.Context, key string) {
	b.summary.invalidate(key)
	switch {
	case key == configKey:
		b.configMu.Lock()
		b.config = nil
		b.configMu.Unlock()
	case key == notifySecretKey:
		b.notifier.forgetSecret()
	case key == saltKey:
		b.saltMu.Lock()
		b.salt = nil
		b.saltMu.Unlock()
	case strings.HasPrefix(key, credsPrefix):
		b.dropCached(strings.TrimPrefix(key, credsPrefix))
	case strings.HasPrefix(key, secretPrefix):
		name, _, _ := strings.Cut(strings.TrimPrefix(key, secretPrefix), "/")
		b.dropCached(name)
	case strings.HasPrefix(key, providersPrefix):
		b.purgeCache()
	case strings.HasPrefix(key, expiryPrefix):
		b.expiry.reset()
	case strings.HasPrefix(key, schedPrefix):
		b.sched.reset()
	case strings.HasPrefix(key, mirrorCfgPrefix):
		b.mirrors.reset()
	}
}

// initialize starts the background audit flusher. Vault calls it once the
// mount is set up (and again after a reload).
func (b *backend) initialize(_ context.Context, req *logical.InitializationRequest) error {
	s := b.storage
	if req != nil && req.Storage != nil {
		s = req.Storage
	}
	b.startNotifier(s)
	b.flusherMu.Lock()
	defer b.flusherMu.Unlock()
	if b.flusher != nil || s == nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.flusher, b.flushDone = cancel, done
	go func() {
		defer close(done)
		b.runAuditFlusher(ctx, s)
	}()
	return nil
}

// stopFlusher stops the audit flusher after its final flush.
func (b *backend) stopFlusher() {
	b.flusherMu.Lock()
	cancel, done := b.flusher, b.flushDone
	b.flusher, b.flushDone = nil, nil
	b.flusherMu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// clean releases in-memory state when the mount is unmounted or the plugin
// is reloaded.
func (b *backend) clean(ctx context.Context) {
	b.stopContinuedRefresh()
	b.stopFlusher()
	b.stopNotifier()
	b.invalidate(ctx, configKey)
	b.invalidate(ctx, saltKey)
	b.purgeCache()
	b.expiry.reset()
	b.sched.reset()
	b.summary.reset()
}

const backendHelp = `
The nebula-credential secrets engine manages third-party credentials (API
keys, basic auth, bearer tokens, OAuth2 clients) and serves ready-to-use
tokens. Create a credential once under creds/<name>; read its token from
token/<name>. Secret fields are never returned by creds/ reads.
`
