package nebula

import (
	"sync"
	"sync/atomic"
	"time"
)

// engineStats are the engine's in-memory counters. They are per node and
// start at zero when the plugin starts.
type engineStats struct {
	cacheHits        atomic.Int64
	cacheMisses      atomic.Int64
	refreshCount     atomic.Int64
	refreshFailures  atomic.Int64
	rotations        atomic.Int64
	rotationFailures atomic.Int64

	mu           sync.Mutex
	refreshTotal time.Duration // guarded by mu; sum of refresh durations
}

// observeRefresh records one upstream token request.
func (s *engineStats) observeRefresh(d time.Duration, err error) {
	s.refreshCount.Add(1)
	if err != nil {
		s.refreshFailures.Add(1)
	}
	s.mu.Lock()
	s.refreshTotal += d
	s.mu.Unlock()
}

// avgRefresh is the mean duration of upstream token requests.
func (s *engineStats) avgRefresh() time.Duration {
	n := s.refreshCount.Load()
	if n == 0 {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshTotal / time.Duration(n)
}
