package nebula

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// The engine's audit trail. Events are recorded in memory on the request
// path (no storage write there, unless config audit_sync is on) and flushed
// in batches by a background goroutine about once a second, and before
// every audit query. A batch is one storage entry,
// "audit/<unix hour>/<first event id>", so queries read only the hours they
// cover and retention deletes whole hours.
const (
	auditPrefix       = "audit/"
	auditBatchSize    = 1000
	auditMaxBuffer    = 200_000 // events kept in memory when storage is failing
	auditFlushPeriod  = time.Second
	auditDefaultLimit = 100
	auditMaxLimit     = 10_000
	// auditMaxReads bounds the storage reads (lists and gets) of one audit
	// query and auditMaxScanned the events it decodes; a query that
	// reaches a bound answers a next cursor to continue from. Exports have
	// bounds of their own.
	auditMaxReads         = 1000
	auditMaxScanned       = 50_000
	auditExportMaxReads   = 4000
	auditExportMaxScanned = 250_000
	// auditDropWindow is how long health reports lost audit events after
	// the last loss.
	auditDropWindow = 24 * time.Hour
)

// Audit actions.
const (
	actionCreate         = "create"
	actionUpdate         = "update"
	actionDelete         = "delete"
	actionReadToken      = "read_token"
	actionRefresh        = "refresh"
	actionRotate         = "rotate"
	actionDestroyVersion = "destroy_version"
	actionConfig         = "config"
)

// auditEvent is one entry of the audit trail. It never holds secret values.
type auditEvent struct {
	// ID orders events: the time in nanoseconds, then a sequence number.
	ID         string    `json:"id"`
	Time       time.Time `json:"time"`
	Action     string    `json:"action"`
	Credential string    `json:"credential,omitempty"`
	Version    int       `json:"version,omitempty"`
	// Actor is who made the request as Vault authenticated it (the token's
	// display name), or engineUser for the engine's own work.
	Actor string `json:"actor,omitempty"`
	// EntityID is the request's Vault identity entity, if any.
	EntityID string `json:"entity_id,omitempty"`
	// RequestID is the Vault request id (request.id in Vault's audit
	// log), so an event can be matched with the audit device's entry.
	RequestID string `json:"request_id,omitempty"`
	// UserID is the end user the caller claims to act for (token/<name>
	// write field user_id). Vault does not verify it.
	UserID string `json:"user_id,omitempty"`
	// User is kept for clients of earlier versions: UserID when the caller
	// gave one, else Actor. Attribute events by Actor and EntityID.
	User        string `json:"user,omitempty"`
	ExecutionID string `json:"execution_id,omitempty"`
	WorkflowID  string `json:"workflow_id,omitempty"`
	Success     bool   `json:"success"`
	// Error is the CredentialError message (code prefix first).
	Error string `json:"error,omitempty"`
}

// auditLog buffers events until they are flushed to storage.
//
// The buffer holds at most auditMaxBuffer events at every moment, also
// while a flush is failing: a flush writes batches straight from the buffer
// and removes a batch only once it is stored, so nothing is put back. When
// the buffer is full, an append drops the oldest event (the trail keeps the
// most recent activity) and counts it in dropped.
type auditLog struct {
	mu  sync.Mutex
	buf []auditEvent // guarded by mu; oldest first
	seq uint64       // guarded by mu
	// base is the number of events ever removed from the front of buf
	// (written or dropped), so base+i numbers buf[i] for good.
	base uint64 // guarded by mu
	// inflightEnd numbers the event after the batch a flush is writing;
	// zero when no write is in progress.
	inflightEnd uint64 // guarded by mu
	// inflightDropped counts events of the batch being written that an
	// append dropped: lost only if that write fails.
	inflightDropped int64 // guarded by mu
	dropped         int64 // guarded by mu; events lost to a full buffer
	// lastDrop is when an event was last lost; zero means never.
	lastDrop time.Time // guarded by mu
	// flushFailed reports whether the last flush could not write.
	flushFailed bool // guarded by mu

	flushMu sync.Mutex // serialises flushes
}

// add appends an event, stamping its id. A full buffer drops the oldest
// event (and counts it) rather than block requests.
func (a *auditLog) add(ev auditEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seq++
	ev.ID = fmt.Sprintf("%019d-%08d", ev.Time.UnixNano(), a.seq%100_000_000)
	if len(a.buf) >= auditMaxBuffer {
		if a.base < a.inflightEnd {
			a.inflightDropped++ // counted if its write fails
		} else {
			a.dropped++
		}
		a.lastDrop = ev.Time
		a.buf[0] = auditEvent{}
		a.buf = a.buf[1:]
		a.base++
	}
	a.buf = append(a.buf, ev)
}

// pending is the number of buffered events.
func (a *auditLog) pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.buf)
}

// droppedStats returns how many events were lost to a full buffer since the
// plugin started, when the last one was lost (zero: never), and whether the
// last flush failed.
func (a *auditLog) droppedStats() (dropped int64, last time.Time, flushFailed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dropped, a.lastDrop, a.flushFailed
}

// nextBatch returns a copy of the oldest buffered events that share an
// hour (at most auditBatchSize, none numbered end or later), and the number
// after its last event. It marks the batch as in flight.
func (a *auditLog) nextBatch(end uint64) ([]auditEvent, uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if end <= a.base || len(a.buf) == 0 {
		return nil, 0
	}
	n := min(len(a.buf), auditBatchSize, int(end-a.base))
	// A batch stays within one hour so queries find it by hour.
	hour := a.buf[0].Time.Unix() / 3600
	for i := 1; i < n; i++ {
		if a.buf[i].Time.Unix()/3600 != hour {
			n = i
			break
		}
	}
	a.inflightEnd = a.base + uint64(n)
	a.inflightDropped = 0
	return slices.Clone(a.buf[:n]), a.inflightEnd
}

// batchDone ends the write of the in-flight batch: a stored batch leaves
// the buffer (what an append dropped meanwhile was stored, not lost); after
// a failed write, the batch stays and what was dropped of it is counted.
func (a *auditLog) batchDone(written uint64, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inflightEnd = 0
	a.flushFailed = err != nil
	if err != nil {
		a.dropped += a.inflightDropped
		a.inflightDropped = 0
		return
	}
	a.inflightDropped = 0
	if k := written - min(written, a.base); k > 0 {
		clear(a.buf[:k])
		a.buf = a.buf[k:]
		a.base += k
	}
	if len(a.buf) == 0 {
		a.buf = nil // let the backing array go
	}
}

// flush writes the events buffered when it starts to storage in batches,
// oldest first, and stops at the first batch that fails (it stays buffered
// for the next flush).
func (a *auditLog) flush(ctx context.Context, s logical.Storage) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	end := a.base + uint64(len(a.buf))
	a.mu.Unlock()
	for {
		events, written := a.nextBatch(end)
		if len(events) == 0 {
			return nil
		}
		hour := events[0].Time.Unix() / 3600
		entry, err := logical.StorageEntryJSON(fmt.Sprintf("%s%010d/%s", auditPrefix, hour, events[0].ID), events)
		if err == nil {
			err = s.Put(ctx, entry)
		}
		a.batchDone(written, err)
		if err != nil {
			return storageError("writing audit events", err)
		}
	}
}

// auditHealthIssues reports, on this node, that audit events were lost to
// a full buffer (for auditDropWindow after the last loss) and that the
// buffer cannot be written to storage (until a flush succeeds).
func (b *backend) auditHealthIssues(now time.Time) []healthIssue {
	var issues []healthIssue
	dropped, last, failing := b.auditLog.droppedStats()
	if failing {
		issues = append(issues, healthIssue{Kind: "audit_write_failed",
			Message: fmt.Sprintf("audit events cannot be written to storage; %d are buffered in memory (at most %d are kept)", b.auditLog.pending(), auditMaxBuffer)})
	}
	if dropped > 0 && now.Before(last.Add(auditDropWindow)) {
		issues = append(issues, healthIssue{Kind: "audit_dropped",
			Message: fmt.Sprintf("%d audit events were lost since the plugin started (buffer full while storage failed), the last at %s", dropped, last.UTC().Format(time.RFC3339))})
	}
	return issues
}

// engineUser is the user of events the engine causes on its own
// (background refresh, scheduled rotation, grace expiry).
const engineUser = "nebula-engine"

// audit records an event. req is nil for the engine's own work; callerCtx
// may be nil.
func (b *backend) audit(ctx context.Context, req *logical.Request, ev auditEvent, callerCtx *callerContext) {
	s := b.storage
	ev.Actor = engineUser
	if req != nil {
		s = req.Storage
		ev.Actor, ev.EntityID, ev.RequestID = req.DisplayName, req.EntityID, req.ID
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil || !cfg.AuditEnabled {
		return
	}
	if !ev.Success && strings.Contains(ev.Error, logical.ErrReadOnly.Error()) {
		// A write on a standby: the host forwards the request to the
		// active node, which records its event; this one could never be
		// stored here.
		return
	}
	ev.Time = b.now().UTC()
	if callerCtx != nil {
		ev.ExecutionID, ev.WorkflowID, ev.UserID = callerCtx.ExecutionID, callerCtx.WorkflowID, callerCtx.UserID
	}
	ev.User = firstNonEmpty(ev.UserID, ev.Actor)
	b.auditLog.add(ev)
	if cfg.AuditSync && s != nil && b.writable() {
		if err := b.auditLog.flush(ctx, s); err != nil {
			b.logger.Warn("could not write audit events", "error", err)
		}
	}
}

// auditOutcome fills Success and Error from a handler's error.
func auditOutcome(ev auditEvent, err error) auditEvent {
	ev.Success = err == nil
	if err != nil {
		ev.Error = err.Error()
	}
	return ev
}

// runAuditFlusher flushes the buffer every auditFlushPeriod until ctx ends,
// then once more.
func (b *backend) runAuditFlusher(ctx context.Context, s logical.Storage) {
	ticker := time.NewTicker(auditFlushPeriod)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			if b.writable() {
				final, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = b.auditLog.flush(final, s)
				cancel()
			}
			return
		case <-ticker.C:
			if b.auditLog.pending() == 0 || !b.writable() {
				continue
			}
			if err := b.auditLog.flush(ctx, s); err != nil {
				b.logger.Warn("could not flush audit events; will retry", "error", err)
			}
		}
	}
}

// auditFilter selects events of a query. User matches the Vault identity
// (actor), UserID the caller's claim.
type auditFilter struct {
	Credential, Action, User, UserID string
	Since, Until                     time.Time // zero: unbounded
	Limit                            int
	// Cursor continues a query: only events older than this id.
	Cursor string
	// MaxReads bounds the storage reads of the query and MaxScanned the
	// events it decodes; zero means auditMaxReads, auditMaxScanned.
	MaxReads, MaxScanned int
}

func (f *auditFilter) match(ev *auditEvent) bool {
	switch {
	case f.Credential != "" && ev.Credential != f.Credential,
		f.Action != "" && ev.Action != f.Action,
		f.User != "" && ev.actor() != f.User,
		f.UserID != "" && ev.UserID != f.UserID,
		!f.Since.IsZero() && ev.Time.Before(f.Since),
		!f.Until.IsZero() && ev.Time.After(f.Until),
		f.Cursor != "" && ev.ID >= f.Cursor:
		return false
	}
	return true
}

// actor is the event's Vault identity. Events stored by earlier versions
// have no actor field; their user (the display name unless the caller gave
// a user_id) is the best there is.
func (ev *auditEvent) actor() string {
	return firstNonEmpty(ev.Actor, ev.User)
}

// queryAudit returns matching events newest first, at most f.Limit, and the
// cursor of the next page ("" when there is none).
//
// Its cost is bounded whatever the filter: it reads (lists and gets) at most
// f.MaxReads storage entries and decodes batches until f.MaxScanned events
// are reached, newest hour first (at least one batch or hour per call, so
// paging always moves on). When the budget ends before the page is full, it
// answers what it found and a cursor where it stopped, so a filter that
// matches nothing still answers quickly and the caller continues further
// back with the cursor. since and until narrow the hours read.
func queryAudit(ctx context.Context, s logical.Storage, f auditFilter) ([]auditEvent, string, error) {
	budget, maxScanned := f.MaxReads, f.MaxScanned
	if budget <= 0 {
		budget = auditMaxReads
	}
	if maxScanned <= 0 {
		maxScanned = auditMaxScanned
	}
	reads, scanned := 1, 0
	hours, err := s.List(ctx, auditPrefix)
	if err != nil {
		return nil, "", storageError("listing audit events", err)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(hours)))
	// pos is where the scan has got to: every event with an id at or after
	// pos (and before f.Cursor) has been examined.
	pos := f.Cursor
	var out []auditEvent
	page := func(complete bool) ([]auditEvent, string, error) {
		sort.Slice(out, func(i, j int) bool { return out[i].ID > out[j].ID })
		switch {
		case len(out) > f.Limit:
			return out[:f.Limit], out[f.Limit-1].ID, nil
		case complete:
			return out, "", nil
		}
		return out, pos, nil
	}
	for _, hour := range hours {
		start, ok := parseHour(hour)
		if !ok || !f.Until.IsZero() && start.After(f.Until) {
			continue
		}
		if f.Cursor != "" && auditTimeKey(start) >= f.Cursor {
			continue // every event of the hour is at or after the cursor
		}
		if !f.Since.IsZero() && !start.Add(time.Hour).After(f.Since) {
			break // the hour ends at or before since
		}
		if reads >= budget || scanned >= maxScanned {
			return page(false)
		}
		reads++
		batches, err := s.List(ctx, auditPrefix+hour)
		if err != nil {
			return nil, "", storageError("listing audit events", err)
		}
		sort.Sort(sort.Reverse(sort.StringSlice(batches)))
		for _, batch := range batches {
			if f.Cursor != "" && batch >= f.Cursor {
				continue // every event of the batch is at or after the cursor
			}
			if reads >= budget || scanned >= maxScanned {
				return page(false)
			}
			reads++
			entry, err := s.Get(ctx, auditPrefix+hour+batch)
			if err != nil {
				return nil, "", storageError("reading audit events", err)
			}
			if entry != nil {
				var events []auditEvent
				if err := entry.DecodeJSON(&events); err != nil {
					return nil, "", storageError("decoding audit events", err)
				}
				scanned += len(events)
				for i := range events {
					if f.match(&events[i]) {
						out = append(out, events[i])
					}
				}
			}
			pos = batch
			if len(out) > f.Limit {
				return page(false)
			}
		}
		pos = auditTimeKey(start) // the whole hour is examined
	}
	return page(true)
}

// auditTimeKey is the cursor before every event at or after t: event ids
// start with their time in nanoseconds, zero-padded to 19 digits.
func auditTimeKey(t time.Time) string {
	return fmt.Sprintf("%019d", t.UnixNano())
}

// auditCursorTime is the time of a cursor (zero if it has none): the
// events at or after it were searched.
func auditCursorTime(cursor string) time.Time {
	if len(cursor) < 19 {
		return time.Time{}
	}
	ns, err := strconv.ParseInt(cursor[:19], 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

func parseHour(bucket string) (time.Time, bool) {
	var h int64
	if _, err := fmt.Sscanf(strings.TrimSuffix(bucket, "/"), "%d", &h); err != nil || !strings.HasSuffix(bucket, "/") {
		return time.Time{}, false
	}
	return time.Unix(h*3600, 0), true
}

// pruneAudit deletes the hours older than the retention period.
func (b *backend) pruneAudit(ctx context.Context, s logical.Storage) error {
	cfg, err := b.getConfig(ctx, s)
	if err != nil || cfg.AuditRetention <= 0 {
		return err
	}
	cutoff := b.now().Add(-cfg.AuditRetention)
	hours, err := s.List(ctx, auditPrefix)
	if err != nil {
		return storageError("listing audit events", err)
	}
	for _, hour := range hours {
		start, ok := parseHour(hour)
		if !ok || !start.Add(time.Hour).Before(cutoff) {
			continue
		}
		batches, err := s.List(ctx, auditPrefix+hour)
		if err != nil {
			return storageError("listing audit events", err)
		}
		for _, batch := range batches {
			if err := s.Delete(ctx, auditPrefix+hour+batch); err != nil {
				return storageError("pruning audit events", err)
			}
		}
	}
	return nil
}
