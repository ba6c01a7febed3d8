package nebula

import (
	"container/heap"
	"context"
	"strings"
	"sync"
	"time"
)

// Operator-read summaries. health and metrics answer from an in-memory
// summary of every credential's metadata and of every mirror state, kept
// up to date by the writers of that metadata (noteCred, noteCredDeleted,
// noteMirror) and by Invalidate (keys changed by another node are re-read
// on the next operator read), instead of scanning storage per read.
//
// Like the expiry index, the summary is built from storage once per node,
// on the first operator read. The build reads storage without holding the
// lock the writers' hooks take, so it never stalls token reads or writes:
// writes that land while it runs are applied as they come, and the build
// drops what it read of a key written meanwhile (its read may be older).
//
// A credential's issues change with time (a bearer token expires, a
// rotation enters its warning period, then becomes overdue). When its
// metadata is written, the summary computes its issues for each interval
// between those instants (credentialIssues at each), and keeps the
// credentials whose issues change later in a heap ordered by the next
// change. A read moves the credentials whose change has come to their next
// interval: its cost follows what changed and what it answers, not what is
// stored.

// summaries is the in-memory summary of the mount's credentials and mirror
// states. mu guards the state and is only held for in-memory work;
// buildMu serialises the storage reads that build or refresh it (held
// without mu).
type summaries struct {
	buildMu sync.Mutex

	mu sync.Mutex
	// active: the maps below are built (or being built) and writes are
	// applied to them; false means "build from storage on the next read".
	active bool
	// built: the build from storage finished.
	built bool
	// epoch changes on reset, so a build that started before drops its
	// result.
	epoch uint64
	// building is the build in progress; nil when none runs.
	building *summaryBuild
	// touched collects the storage keys written while a build or re-read
	// is reading storage; nil when none runs.
	touched map[string]struct{}
	// dirty are the storage keys (creds/, mirrorstate/) to re-read on the
	// next operator read: changed by another node, or written with an
	// outcome unknown (a failed write).
	dirty map[string]struct{}

	creds  map[string]*credSummary
	byType map[string]int
	// byStatus counts the credentials by {type, status} at evalAt.
	byStatus map[[2]string]int
	// issued are the names of the credentials with issues at evalAt;
	// sorted caches them in name order (nil: rebuild).
	issued map[string]struct{}
	sorted []string
	heap   changeHeap
	evalAt time.Time

	// mirrorErrors are the mirror states with an error, by storage key
	// suffix "<name>/<target>"; mirrorSorted caches the keys in order.
	mirrorErrors map[string]string
	mirrorSorted []string
	// mirrorSync is every mirror state's sync status by the same key;
	// mirrorCounts counts them by {target, sync status}.
	mirrorSync   map[string]string
	mirrorCounts map[[2]string]int
}

// summaryBuild is one run of build: done is closed when it ended, with
// err its outcome; cancel stops it (reset).
type summaryBuild struct {
	done   chan struct{}
	err    error
	cancel context.CancelFunc
}

// reset drops the summary and stops a build in progress; the next
// operator read rebuilds it.
func (x *summaries) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.building != nil {
		x.building.cancel()
	}
	x.epoch++
	x.active, x.built = false, false
	x.clearLocked()
}

func (x *summaries) clearLocked() {
	x.touched, x.dirty = nil, nil
	x.creds, x.byType, x.issued, x.sorted, x.heap = nil, nil, nil, nil, nil
	x.mirrorErrors, x.mirrorSorted, x.mirrorSync, x.mirrorCounts = nil, nil, nil, nil
	x.byStatus = nil
	x.evalAt = time.Time{}
}

// touchLocked notes a write of key for a build or re-read in progress.
func (x *summaries) touchLocked(key string) {
	if x.touched != nil {
		x.touched[key] = struct{}{}
	}
}

// markDirtyLocked makes the next read re-read key from storage.
func (x *summaries) markDirtyLocked(key string) {
	if x.dirty == nil {
		x.dirty = map[string]struct{}{}
	}
	x.dirty[key] = struct{}{}
}

// noteCred records a write of c's metadata: err is the write's outcome (a
// failed write may have landed or not: the key is re-read).
func (x *summaries) noteCred(c *credential, err error) {
	if err != nil {
		x.noteUnknown(credKey(c.Name))
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.active {
		return
	}
	x.touchLocked(credKey(c.Name))
	x.setCredLocked(c.Name, summarize(c))
}

// noteCredDeleted records the delete of a credential's metadata.
func (x *summaries) noteCredDeleted(name string, err error) {
	if err != nil {
		x.noteUnknown(credKey(name))
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.active {
		return
	}
	x.touchLocked(credKey(name))
	x.setCredLocked(name, nil)
}

// noteMirror records a write (st) or delete (st nil) of a mirror state.
func (x *summaries) noteMirror(name, target string, st *mirrorState, err error) {
	key := mirrorStateKey(name, target)
	if err != nil {
		x.noteUnknown(key)
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.active {
		return
	}
	x.touchLocked(key)
	x.setMirrorLocked(name+"/"+target, st)
}

// noteUnknown makes the next read re-read a key whose state is not known
// here: a write that failed, or a change on another node (Invalidate).
func (x *summaries) noteUnknown(key string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.active {
		x.touchLocked(key)
		x.markDirtyLocked(key)
	}
}

// invalidate handles Invalidate of a storage key.
func (x *summaries) invalidate(key string) {
	if strings.HasPrefix(key, credsPrefix) || strings.HasPrefix(key, mirrorStatePrefix) {
		x.noteUnknown(key)
	}
}

// setCredLocked replaces (cs nil: removes) a credential's summary.
func (x *summaries) setCredLocked(name string, cs *credSummary) {
	if old := x.creds[name]; old != nil {
		if x.byType[old.typ]--; x.byType[old.typ] == 0 {
			delete(x.byType, old.typ)
		}
		x.countStatusLocked(old, -1)
		if old.hidx >= 0 {
			heap.Remove(&x.heap, old.hidx)
		}
		delete(x.creds, name)
	}
	if cs != nil {
		x.creds[name] = cs
		x.byType[cs.typ]++
		cs.cur = spanAt(cs.spans, x.evalAt)
		x.countStatusLocked(cs, 1)
		if _, ok := cs.nextChange(); ok {
			heap.Push(&x.heap, cs)
		}
	}
	x.markIssuedLocked(name, cs)
}

// countStatusLocked adds n to the count of cs's type and status.
func (x *summaries) countStatusLocked(cs *credSummary, n int) {
	key := [2]string{cs.typ, cs.status()}
	if x.byStatus[key] += n; x.byStatus[key] == 0 {
		delete(x.byStatus, key)
	}
}

// markIssuedLocked keeps issued in step with a credential's issues.
func (x *summaries) markIssuedLocked(name string, cs *credSummary) {
	has := cs != nil && len(cs.issues()) > 0
	if _, had := x.issued[name]; had != has {
		if has {
			x.issued[name] = struct{}{}
		} else {
			delete(x.issued, name)
		}
		x.sorted = nil
	}
}

// setMirrorLocked replaces (st nil: removes) a mirror state.
func (x *summaries) setMirrorLocked(key string, st *mirrorState) {
	_, target, _ := strings.Cut(key, "/")
	if old, ok := x.mirrorSync[key]; ok {
		if x.mirrorCounts[[2]string{target, old}]--; x.mirrorCounts[[2]string{target, old}] == 0 {
			delete(x.mirrorCounts, [2]string{target, old})
		}
		delete(x.mirrorSync, key)
	}
	if st != nil {
		x.mirrorSync[key] = st.SyncStatus
		x.mirrorCounts[[2]string{target, st.SyncStatus}]++
	}
	_, had := x.mirrorErrors[key]
	if st != nil && st.LastError != "" {
		x.mirrorErrors[key] = st.LastError
		if !had {
			x.mirrorSorted = nil
		}
		return
	}
	if had {
		delete(x.mirrorErrors, key)
		x.mirrorSorted = nil
	}
}

// advanceLocked moves every credential to its issues at now.
func (x *summaries) advanceLocked(now time.Time) {
	if now.Before(x.evalAt) { // the clock went back: rare, re-evaluate all
		x.evalAt = now
		x.heap = x.heap[:0]
		for name, cs := range x.creds {
			x.countStatusLocked(cs, -1)
			cs.cur, cs.hidx = spanAt(cs.spans, now), -1
			x.countStatusLocked(cs, 1)
			if _, ok := cs.nextChange(); ok {
				x.heap = append(x.heap, cs)
				cs.hidx = len(x.heap) - 1
			}
			x.markIssuedLocked(name, cs)
		}
		heap.Init(&x.heap)
		return
	}
	x.evalAt = now
	for len(x.heap) > 0 {
		cs := x.heap[0]
		if at, _ := cs.nextChange(); now.Before(at) {
			break
		}
		x.countStatusLocked(cs, -1)
		cs.cur = spanAt(cs.spans, now)
		x.countStatusLocked(cs, 1)
		if _, ok := cs.nextChange(); ok {
			heap.Fix(&x.heap, 0)
		} else {
			heap.Pop(&x.heap)
		}
		x.markIssuedLocked(cs.name, cs)
	}
}
