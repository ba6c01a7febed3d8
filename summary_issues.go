package nebula

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/nebula-credential/nebula-credential/types"
)

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
