package upstream

import "time"

// SetClock replaces the limiter's clock (tests outside this package): now
// is the time Retry-After pauses are measured on, and newTimer returns a
// channel that receives when d has passed, with a stop function. Call it
// before the limiter is used.
func (l *HostLimiter) SetClock(now func() time.Time, newTimer func(d time.Duration) (<-chan time.Time, func() bool)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.now, l.newTimer = now, newTimer
}
