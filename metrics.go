package nebula

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// refreshSamples bounds the window of refresh durations kept for p99.
const refreshSamples = 1024

// engineStats are the engine's in-memory counters. They are per node and
// start at zero when the plugin starts (as Vault's own telemetry does).
type engineStats struct {
	tokenReads       atomic.Int64
	cacheHits        atomic.Int64
	cacheMisses      atomic.Int64
	refreshCount     atomic.Int64
	refreshFailures  atomic.Int64
	rotations        atomic.Int64
	rotationFailures atomic.Int64

	mu           sync.Mutex
	refreshTotal time.Duration   // guarded by mu; sum of refresh durations
	samples      []time.Duration // guarded by mu; ring of recent refresh durations
	next         int             // guarded by mu; next ring slot

	perCred sync.Map // credential name -> *credStats

	// Counters by outcome, for metrics?format=prometheus. Keys are bounded:
	// an error kind's code, a registered OAuth2 error code.
	readFailures   sync.Map                             // error code -> *atomic.Int64
	refreshes      sync.Map                             // refreshLabels -> *atomic.Int64
	refreshBuckets [len(refreshBucketBounds) + 1]uint64 // guarded by mu; refresh durations per bucket, the last one +Inf
}

// refreshLabels keys the refresh counters by their labels; the zero value
// is success.
type refreshLabels struct {
	code     string // the engine's error code, e.g. refresh_failed
	upstream string // the token endpoint's OAuth2 error code, "other" or ""
}

// credStats are one credential's counters.
type credStats struct {
	usage        atomic.Int64
	lastUsed     atomic.Int64 // unix nanoseconds; 0 means never
	refreshCount atomic.Int64
	lastRefresh  atomic.Int64 // unix nanoseconds; 0 means never
}

func (s *engineStats) cred(name string) *credStats {
	if cs, ok := s.perCred.Load(name); ok {
		return cs.(*credStats)
	}
	cs, _ := s.perCred.LoadOrStore(name, &credStats{})
	return cs.(*credStats)
}

// observeRead records a served token.
func (s *engineStats) observeRead(name string, now time.Time) {
	s.tokenReads.Add(1)
	cs := s.cred(name)
	cs.usage.Add(1)
	cs.lastUsed.Store(now.UnixNano())
}

// observeReadFailure records a token read that failed.
func (s *engineStats) observeReadFailure(err error) {
	counter(&s.readFailures, errorCode(err)).Add(1)
}

// observeRefresh records one upstream token request.
func (s *engineStats) observeRefresh(name string, now time.Time, d time.Duration, err error) {
	s.refreshCount.Add(1)
	cs := s.cred(name)
	cs.refreshCount.Add(1)
	cs.lastRefresh.Store(now.UnixNano())
	outcome := refreshLabels{}
	if err != nil {
		s.refreshFailures.Add(1)
		outcome = refreshLabels{errorCode(err), upstreamErrorCode(err)}
	}
	counter(&s.refreshes, outcome).Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshTotal += d
	s.refreshBuckets[refreshBucket(d)]++
	if len(s.samples) < refreshSamples {
		s.samples = append(s.samples, d)
	} else {
		s.samples[s.next] = d
	}
	s.next = (s.next + 1) % refreshSamples
}

// refreshTimes are the mean and the 99th percentile of upstream token
// requests (the percentile over the last refreshSamples).
func (s *engineStats) refreshTimes() (avg, p99 time.Duration) {
	n := s.refreshCount.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	if n == 0 || len(s.samples) == 0 {
		return 0, 0
	}
	sorted := slices.Clone(s.samples)
	slices.Sort(sorted)
	idx := (len(sorted)*99 + 99) / 100
	return s.refreshTotal / time.Duration(n), sorted[min(idx, len(sorted))-1]
}

// forget drops a deleted credential's counters.
func (s *engineStats) forget(name string) { s.perCred.Delete(name) }

func unixNanoTime(n int64) any {
	if n == 0 {
		return nil
	}
	return time.Unix(0, n).UTC().Format(time.RFC3339Nano)
}
