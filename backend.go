// Package nebula is the nebula-credential secrets engine: a Vault plugin
// backend that manages third-party credentials (API keys, basic auth, bearer
// tokens, OAuth2 clients) and serves ready-to-use tokens.
package nebula

import (
	"context"
	"crypto/x509"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
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
	// cacheGen changes whenever cached tokens are dropped; a load that
	// started before a drop does not cache what it read.
	cacheGen atomic.Uint64
	// loads makes concurrent cache misses of one name share one load.
	loads singleflight.Group

	stats engineStats

	// expiry orders refreshable tokens by expiry for refresh-ahead.
	expiry timeIndex
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
}

// Factory creates and sets up the backend; it is the plugin's
// logical.Factory.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend(conf)
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

func newBackend(conf *logical.BackendConfig) *backend {
	cache, _ := lru.New[string, *servedToken](DefaultConfig().CacheMaxSize)
	b := &backend{
		locks:            locksutil.CreateLocks(),
		now:              time.Now,
		cache:            cache,
		upstreamAttempts: upstream.DefaultAttempts,
		upstreamBackoff:  upstream.DefaultBackoff,
		webhookTimeout:   webhookTimeout,
		expiry:           timeIndex{prefix: expiryPrefix},
		sched:            timeIndex{prefix: schedPrefix},
	}
	b.tasks = []periodicTask{
		{name: "refresh-ahead", run: b.periodicRefresh},
		{name: "rotation", run: b.periodicRotation},
	}
	b.logger = conf.Logger
	if b.logger == nil {
		b.logger = hclog.NewNullLogger()
	}
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{secretPrefix, saltKey},
		},
		Paths: framework.PathAppend(
			[]*framework.Path{pathConfig(b)},
			pathTypes(b),
			pathCredentials(b),
			pathTokens(b),
			pathRotate(b),
			pathProviders(b),
		),
		PeriodicFunc: b.periodic,
		WALRollback:  b.walRollback,
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
	if err == nil && resp != nil && resp.IsError() {
		if msg := resp.Error().Error(); strings.HasPrefix(msg, "Field validation failed") {
			return nil, fieldTypeError(msg)
		}
	}
	return resp, err
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

// writable reports whether this node may write storage and run background
// work (not a performance standby or a secondary).
func (b *backend) writable() bool {
	state := b.System().ReplicationState()
	if b.System().LocalMount() {
		return !state.HasState(consts.ReplicationDRSecondary)
	}
	return !state.HasState(consts.ReplicationPerformanceSecondary | consts.ReplicationPerformanceStandby | consts.ReplicationDRSecondary)
}

// periodic runs the background tasks. Vault calls it about once a minute on
// every node; only a writable node acts. A failing task does not stop the
// others.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	if !b.writable() {
		return nil
	}
	for _, task := range b.tasks {
		if err := task.run(ctx, req.Storage); err != nil {
			b.logger.Warn("periodic task failed", "task", task.name, "error", err)
		}
	}
	return nil
}

// invalidate drops in-memory state fed by a storage key that changed on
// another node (replication) or underneath us.
func (b *backend) invalidate(_ context.Context, key string) {
	switch {
	case key == configKey:
		b.configMu.Lock()
		b.config = nil
		b.configMu.Unlock()
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
	}
}

// clean releases in-memory state when the mount is unmounted or the plugin
// is reloaded.
func (b *backend) clean(ctx context.Context) {
	b.invalidate(ctx, configKey)
	b.invalidate(ctx, saltKey)
	b.purgeCache()
	b.expiry.reset()
	b.sched.reset()
}

const backendHelp = `
The nebula-credential secrets engine manages third-party credentials (API
keys, basic auth, bearer tokens, OAuth2 clients) and serves ready-to-use
tokens. Create a credential once under creds/<name>; read its token from
token/<name>. Secret fields are never returned by creds/ reads.
`
