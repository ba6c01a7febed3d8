package nebula

import (
	"context"
	"sync"
)

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

// withCredentialLock runs fn under name's credential write lock (b.lock),
// released when fn returns. Paths that release the lock part-way (refresh,
// verify=true writes, rotation) take it themselves.
func (b *backend) withCredentialLock(name string, fn func() error) error {
	lock := b.lock(name)
	lock.Lock()
	defer lock.Unlock()
	return fn()
}

// withCredentialRLock runs fn under name's credential read lock, released
// when fn returns.
func (b *backend) withCredentialRLock(name string, fn func() error) error {
	lock := b.lock(name)
	lock.RLock()
	defer lock.RUnlock()
	return fn()
}
