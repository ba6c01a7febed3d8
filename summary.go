package nebula

import (
	"container/heap"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/sync/errgroup"

	"github.com/nebula-credential/nebula-credential/types"
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

// healthProbeKey names the storage entry (never written) that operator
// reads probe, so that failing storage still makes health unhealthy.
const healthProbeKey = "health-probe"

// probeStorage makes one list and one get, whose cost does not depend on
// what is stored.
func probeStorage(ctx context.Context, s logical.Storage) error {
	if _, err := s.List(ctx, healthProbeKey+"/"); err != nil {
		return storageError("checking storage", err)
	}
	if _, err := s.Get(ctx, healthProbeKey); err != nil {
		return storageError("checking storage", err)
	}
	return nil
}

// issueSpan is a credential's issues and status from a time on, until the
// next span.
type issueSpan struct {
	from   time.Time // the first span's is unused: it holds since ever
	issues []healthIssue
	status string
}

// credSummary is what operator reads need of one credential.
type credSummary struct {
	name  string
	typ   string
	spans []issueSpan // nil: no issue at any time
	cur   int         // the span in force at the summary's evalAt
	hidx  int         // index in the change heap; -1 when not in it
}

// issues are the credential's issues at the summary's evalAt.
func (cs *credSummary) issues() []healthIssue {
	if len(cs.spans) == 0 {
		return nil
	}
	return cs.spans[cs.cur].issues
}

// status is the credential's status at the summary's evalAt: a credential
// without issues at any time is active at every time (an expired token and
// a last error are issues).
func (cs *credSummary) status() string {
	if len(cs.spans) == 0 {
		return statusActive
	}
	return cs.spans[cs.cur].status
}

// nextChange is when the issues change next; ok false when never.
func (cs *credSummary) nextChange() (time.Time, bool) {
	if cs.cur+1 < len(cs.spans) {
		return cs.spans[cs.cur+1].from, true
	}
	return time.Time{}, false
}

// spanAt is the index of the span in force at t.
func spanAt(spans []issueSpan, t time.Time) int {
	i := 0
	for i+1 < len(spans) && !t.Before(spans[i+1].from) {
		i++
	}
	return i
}

// summarize computes a credential's summary: its issues (credentialIssues)
// in each interval between the instants they depend on time at: the start
// of the rotation warning period, the next rotation, the token's expiry.
func summarize(c *credential) *credSummary {
	cs := &credSummary{name: c.Name, typ: c.Type, hidx: -1}
	if t := c.typ(); t != nil {
		cs.typ = t.Name // shared, not one string per credential
	}
	var points []time.Time
	if next := c.nextRotation(); !next.IsZero() {
		points = append(points, next.Add(-c.Rotation.WarningPeriod), next)
	}
	if exp := types.ExpiresAt(c.Fields); !exp.IsZero() {
		points = append(points, exp)
	}
	slices.SortFunc(points, func(a, b time.Time) int { return a.Compare(b) })
	points = slices.CompactFunc(points, time.Time.Equal)
	before := time.Time{}
	if len(points) > 0 {
		before = points[0].Add(-time.Nanosecond)
	}
	spans := []issueSpan{{issues: credentialIssues(c, before), status: c.status(before)}}
	some := len(spans[0].issues) > 0
	for _, p := range points {
		span := issueSpan{from: p, issues: credentialIssues(c, p), status: c.status(p)}
		if last := spans[len(spans)-1]; span.status == last.status && slices.Equal(span.issues, last.issues) {
			continue
		}
		spans = append(spans, span)
		some = some || len(span.issues) > 0
	}
	if some {
		cs.spans = spans
	}
	return cs
}

// changeHeap orders credentials by their next change of issues.
type changeHeap []*credSummary

func (h changeHeap) Len() int { return len(h) }
func (h changeHeap) Less(i, j int) bool {
	a, _ := h[i].nextChange()
	b, _ := h[j].nextChange()
	return a.Before(b)
}
func (h changeHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *changeHeap) Push(x any) {
	cs := x.(*credSummary)
	cs.hidx = len(*h)
	*h = append(*h, cs)
}
func (h *changeHeap) Pop() any {
	old := *h
	cs := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	cs.hidx = -1
	return cs
}

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

// mirrorVisitor visits every mirror state (backend.eachMirrorState).
type mirrorVisitor func(ctx context.Context, s logical.Storage, visit func(name, target string, st *mirrorState)) error

// prepare builds the summary on first use (reading mirror states with
// each), re-reads the keys marked dirty and probes storage. On success it
// returns with x.mu held.
func (x *summaries) prepare(ctx context.Context, s logical.Storage, each mirrorVisitor) error {
	if err := x.waitBuilt(ctx, s, each); err != nil {
		return err
	}
	x.buildMu.Lock()
	defer x.buildMu.Unlock()
	if err := x.reread(ctx, s); err != nil {
		return err
	}
	if err := probeStorage(ctx, s); err != nil {
		return err
	}
	x.mu.Lock()
	return nil
}

// waitBuilt starts the build when none is done or running, and waits for
// it until ctx ends. The build runs on its own: a caller that gives up (a
// monitoring poll with a short timeout while 100,000 credentials load) does
// not stop it, so a later read finds it done.
func (x *summaries) waitBuilt(ctx context.Context, s logical.Storage, each mirrorVisitor) error {
	x.mu.Lock()
	if x.built {
		x.mu.Unlock()
		return nil
	}
	run := x.building
	if run == nil {
		buildCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		run = &summaryBuild{done: make(chan struct{}), cancel: cancel}
		x.building = run
		go func() {
			defer cancel()
			x.buildMu.Lock()
			run.err = x.build(buildCtx, s, each)
			x.buildMu.Unlock()
			x.mu.Lock()
			if x.building == run {
				x.building = nil
			}
			x.mu.Unlock()
			close(run.done)
		}()
	}
	x.mu.Unlock()
	select {
	case <-run.done:
	case <-ctx.Done():
		return storageError("building the credential summary", ctx.Err())
	}
	if run.err != nil {
		return run.err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.built {
		return storageError("building the credential summary", errors.New("the summary was reset meanwhile; read again"))
	}
	return nil
}

// build reads every credential's metadata and every mirror state. The
// caller holds buildMu.
func (x *summaries) build(ctx context.Context, s logical.Storage, each mirrorVisitor) error {
	x.mu.Lock()
	epoch := x.epoch + 1
	x.epoch = epoch
	x.clearLocked()
	x.active = true
	x.touched = map[string]struct{}{}
	x.creds, x.byType, x.issued = map[string]*credSummary{}, map[string]int{}, map[string]struct{}{}
	x.byStatus = map[[2]string]int{}
	x.mirrorErrors, x.mirrorSync, x.mirrorCounts = map[string]string{}, map[string]string{}, map[[2]string]int{}
	x.mu.Unlock()
	err := x.readAll(ctx, s, each, epoch)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.epoch != epoch {
		return nil // reset meanwhile: the next read builds again
	}
	if err != nil {
		x.active = false
		x.clearLocked()
		return err
	}
	x.built, x.touched = true, nil
	return nil
}

// summaryReaders bounds the storage reads a build makes at once.
const summaryReaders = 8

// readAll is build's storage part: summaryReaders reads at a time, which
// land in any order (each key's summary depends on its own entry only).
func (x *summaries) readAll(ctx context.Context, s logical.Storage, each mirrorVisitor, epoch uint64) error {
	names, err := s.List(ctx, credsPrefix)
	if err != nil {
		return storageError("listing credentials", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(summaryReaders)
	for _, name := range names {
		g.Go(func() error {
			c, err := loadCredential(gctx, s, name)
			if err != nil {
				return err
			}
			var cs *credSummary
			if c != nil {
				cs = summarize(c)
			}
			x.mu.Lock()
			defer x.mu.Unlock()
			if _, written := x.touched[credKey(name)]; !written && x.epoch == epoch {
				x.setCredLocked(name, cs)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return each(ctx, s, func(name, target string, st *mirrorState) {
		x.mu.Lock()
		if _, written := x.touched[mirrorStateKey(name, target)]; !written && x.epoch == epoch {
			x.setMirrorLocked(name+"/"+target, st)
		}
		x.mu.Unlock()
	})
}

// reread re-reads the dirty keys. The caller holds buildMu.
func (x *summaries) reread(ctx context.Context, s logical.Storage) error {
	x.mu.Lock()
	if len(x.dirty) == 0 {
		x.mu.Unlock()
		return nil
	}
	keys := x.dirty
	x.dirty, x.touched = nil, map[string]struct{}{}
	epoch := x.epoch
	x.mu.Unlock()
	var err error
	done := map[string]struct{}{}
	for key := range keys {
		if err = x.rereadOne(ctx, s, key, epoch); err != nil {
			break
		}
		done[key] = struct{}{}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.touched = nil
	if err != nil && x.epoch == epoch {
		for key := range keys {
			if _, ok := done[key]; !ok {
				x.markDirtyLocked(key)
			}
		}
	}
	return err
}

func (x *summaries) rereadOne(ctx context.Context, s logical.Storage, key string, epoch uint64) error {
	if name, ok := strings.CutPrefix(key, credsPrefix); ok {
		c, err := loadCredential(ctx, s, name)
		if err != nil {
			return err
		}
		var cs *credSummary
		if c != nil {
			cs = summarize(c)
		}
		x.mu.Lock()
		defer x.mu.Unlock()
		if _, written := x.touched[key]; !written && x.epoch == epoch {
			x.setCredLocked(name, cs)
		}
		return nil
	}
	name, target, ok := strings.Cut(strings.TrimPrefix(key, mirrorStatePrefix), "/")
	if !ok {
		return nil
	}
	st, err := loadMirrorState(ctx, s, name, target)
	if err != nil {
		return storageError("reading mirror state", err)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, written := x.touched[key]; !written && x.epoch == epoch {
		x.setMirrorLocked(name+"/"+target, st)
	}
	return nil
}

// issuesAt are the issues of every credential at now, in name order (the
// order of a storage list) and per credential in credentialIssues' order.
func (x *summaries) issuesAt(ctx context.Context, s logical.Storage, each mirrorVisitor, now time.Time) ([]healthIssue, error) {
	if err := x.prepare(ctx, s, each); err != nil {
		return nil, err
	}
	defer x.mu.Unlock()
	x.advanceLocked(now)
	if x.sorted == nil {
		x.sorted = make([]string, 0, len(x.issued))
		for name := range x.issued {
			x.sorted = append(x.sorted, name)
		}
		slices.Sort(x.sorted)
	}
	issues := []healthIssue{}
	for _, name := range x.sorted {
		issues = append(issues, x.creds[name].issues()...)
	}
	return issues, nil
}

// mirrorIssues are the mirror states with an error, in the order of
// backend.eachMirrorState (credential name, then target). It reads what
// issuesAt prepared, and nothing before the summary is built.
func (x *summaries) mirrorIssues() []healthIssue {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.built {
		return nil
	}
	if x.mirrorSorted == nil {
		x.mirrorSorted = make([]string, 0, len(x.mirrorErrors))
		for key := range x.mirrorErrors {
			x.mirrorSorted = append(x.mirrorSorted, key)
		}
		// "<name>/<target>" sorts as the storage lists "<name>/", then
		// "<target>": names hold no "/".
		slices.Sort(x.mirrorSorted)
	}
	issues := make([]healthIssue, 0, len(x.mirrorSorted))
	for _, key := range x.mirrorSorted {
		name, target, _ := strings.Cut(key, "/")
		issues = append(issues, healthIssue{Credential: name, Target: target, Kind: "mirror_error", Message: x.mirrorErrors[key]})
	}
	return issues
}

// totals are the number of credentials, and by type.
func (x *summaries) totals(ctx context.Context, s logical.Storage, each mirrorVisitor) (int, map[string]int, error) {
	if err := x.prepare(ctx, s, each); err != nil {
		return 0, nil, err
	}
	defer x.mu.Unlock()
	byType := make(map[string]int, len(x.byType))
	for t, n := range x.byType {
		byType[t] = n
	}
	return len(x.creds), byType, nil
}

// storedCounts are the credentials by {type, status} at now and the mirror
// states by {target, sync status}, for metrics?format=prometheus.
func (x *summaries) storedCounts(ctx context.Context, s logical.Storage, each mirrorVisitor, now time.Time) (creds, mirrors map[[2]string]int, err error) {
	if err := x.prepare(ctx, s, each); err != nil {
		return nil, nil, err
	}
	defer x.mu.Unlock()
	x.advanceLocked(now)
	creds = make(map[[2]string]int, len(x.byStatus))
	for k, n := range x.byStatus {
		creds[k] = n
	}
	mirrors = make(map[[2]string]int, len(x.mirrorCounts))
	for k, n := range x.mirrorCounts {
		mirrors[k] = n
	}
	return creds, mirrors, nil
}
