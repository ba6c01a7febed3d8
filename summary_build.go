package nebula

import (
	"context"
	"errors"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/sync/errgroup"
)

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
		g.Go(func() error { return x.rereadOne(gctx, s, credKey(name), epoch) })
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

// rereadOne reads one creds/ or mirror-state key and sets its summary,
// unless a write noted it since epoch began (the write's state wins).
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
