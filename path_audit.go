package nebula

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-pdf/fpdf"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// maxExportEvents bounds one export.
const maxExportEvents = 50_000

var auditFilterFields = map[string]*framework.FieldSchema{
	"credential": {Type: framework.TypeString, Description: "Only events of this credential."},
	"action":     {Type: framework.TypeString, Description: "Only events of this action (create, update, delete, read_token, refresh, rotate, destroy_version, config, flow_*, batch_*, mirror)."},
	"user":       {Type: framework.TypeString, Description: "Only events of this Vault identity (actor: the token's display name, or nebula-engine for the engine's own work)."},
	"user_id":    {Type: framework.TypeString, Description: "Only events whose caller claimed this user_id (token/<name> writes; not verified by Vault)."},
	"since":      {Type: framework.TypeTime, Description: "Only events at or after this time (RFC 3339)."},
	"until":      {Type: framework.TypeTime, Description: "Only events at or before this time (RFC 3339)."},
	"limit":      {Type: framework.TypeInt, Description: fmt.Sprintf("Most events to return (default %d, at most %d).", auditDefaultLimit, auditMaxLimit)},
	"cursor":     {Type: framework.TypeString, Description: "The next value of a previous answer: continue after it. One request reads a bounded part of the trail (newest first); a non-empty next means there may be more, even when events is empty."},
}

func pathAudit(b *backend) []*framework.Path {
	exportFields := map[string]*framework.FieldSchema{
		"format": {Type: framework.TypeString, Description: "json, csv or pdf.", Default: "json"},
	}
	for k, v := range auditFilterFields {
		exportFields[k] = v
	}
	return []*framework.Path{
		{
			Pattern:      "audit$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "audit-events"},
			Fields:       auditFilterFields,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathAuditRead, Responses: auditResponses},
			},
			HelpSynopsis:    "Query the engine's audit trail.",
			HelpDescription: fmt.Sprintf("Returns events newest first, filtered by credential, action, user (the Vault identity), user_id (the caller's claim) and time, with a next cursor for paging. One request reads at most %d storage entries and about %d events of the trail, newest hour first: when it stops before filling the page it answers the events found, next (continue with cursor=next) and searched_back_to (everything newer was searched). since and until narrow the hours read. Each event names the Vault identity (actor, entity_id) apart from the caller's claims (user_id, execution_id, workflow_id). Events never hold secret values.", auditMaxReads, auditMaxScanned),
		},
		{
			Pattern:      "audit/export$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationVerb: "export", OperationSuffix: "audit-events"},
			Fields:       exportFields,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathAuditExport, Responses: auditExportResponses},
			},
			HelpSynopsis:    "Export the audit trail as JSON, CSV or PDF.",
			HelpDescription: "Takes the same filter as audit and returns report (base64), content_type, count and next (non-empty when the export stopped at its bound of storage reads; export again with cursor=next for older events).",
		},
	}
}

func parseAuditFilter(d *framework.FieldData, maxLimit int) (auditFilter, error) {
	f := auditFilter{
		Credential: d.Get("credential").(string),
		Action:     d.Get("action").(string),
		User:       d.Get("user").(string),
		UserID:     d.Get("user_id").(string),
		Cursor:     d.Get("cursor").(string),
		Limit:      auditDefaultLimit,
	}
	if v, ok := d.GetOk("since"); ok {
		f.Since = v.(time.Time)
	}
	if v, ok := d.GetOk("until"); ok {
		f.Until = v.(time.Time)
	}
	if v, ok := d.GetOk("limit"); ok {
		f.Limit = v.(int)
		if f.Limit < 1 || f.Limit > maxLimit {
			return f, newError(KindInvalidInput, "field \"limit\" must be between 1 and %d", maxLimit)
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return f, newError(KindInvalidInput, "field \"until\" is before \"since\"")
	}
	return f, nil
}

// auditQuery flushes buffered events, then runs the query. A node that
// cannot write (an OpenBao standby serving reads) answers
// logical.ErrReadOnly, so the host forwards the query to the active node:
// only that node can flush the events it buffers, and a standby's copy of
// storage may lag behind.
func (b *backend) auditQuery(ctx context.Context, req *logical.Request, f auditFilter) ([]auditEvent, string, error) {
	if !b.writable() {
		return nil, "", logical.ErrReadOnly
	}
	if err := b.auditLog.flush(ctx, req.Storage); err != nil {
		return nil, "", err
	}
	return queryAudit(ctx, req.Storage, f)
}

func (b *backend) pathAuditRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	f, err := parseAuditFilter(d, auditMaxLimit)
	if err != nil {
		return nil, err
	}
	events, next, err := b.auditQuery(ctx, req, f)
	if err != nil {
		return nil, err
	}
	list := make([]map[string]any, 0, len(events))
	for i := range events {
		list = append(list, events[i].data())
	}
	data := map[string]any{"events": list, "next": next}
	if t := auditCursorTime(next); !t.IsZero() {
		data["searched_back_to"] = t.Format(time.RFC3339Nano)
	}
	return &logical.Response{Data: data}, nil
}

func (ev *auditEvent) data() map[string]any {
	raw, _ := json.Marshal(ev)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return m
}

func (b *backend) pathAuditExport(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	f, err := parseAuditFilter(d, maxExportEvents)
	if err != nil {
		return nil, err
	}
	if _, ok := d.GetOk("limit"); !ok {
		f.Limit = maxExportEvents
	}
	f.MaxReads, f.MaxScanned = auditExportMaxReads, auditExportMaxScanned
	format := d.Get("format").(string)
	render, ok := auditRenderers[format]
	if !ok {
		return nil, newError(KindInvalidInput, "field \"format\" must be json, csv or pdf")
	}
	events, next, err := b.auditQuery(ctx, req, f)
	if err != nil {
		return nil, err
	}
	report, contentType, err := render(events, &auditReport{Filter: f, Next: next, Now: b.now()})
	if err != nil {
		return nil, fmt.Errorf("rendering the %s report: %w", format, err)
	}
	return &logical.Response{Data: map[string]any{
		"report":       base64.StdEncoding.EncodeToString(report),
		"content_type": contentType,
		"count":        len(events),
		"next":         next,
	}}, nil
}

// auditReport is what a renderer knows of an export besides its events.
type auditReport struct {
	Filter auditFilter
	// Next is the cursor of older events not exported ("" when none).
	Next string
	Now  time.Time
}

var auditRenderers = map[string]func([]auditEvent, *auditReport) ([]byte, string, error){
	"json": renderJSON,
	"csv":  renderCSV,
	"pdf":  renderPDF,
}

func renderJSON(events []auditEvent, _ *auditReport) ([]byte, string, error) {
	if events == nil {
		events = []auditEvent{}
	}
	out, err := json.MarshalIndent(events, "", "  ")
	return out, "application/json", err
}

// csvHeader names the CSV columns. Columns added later go at the end so
// that consumers indexing columns by position keep working.
var csvHeader = []string{"id", "time", "action", "credential", "version", "user", "entity_id", "execution_id", "workflow_id", "success", "error", "actor", "user_id", "request_id"}

func (ev *auditEvent) row() []string {
	version := ""
	if ev.Version != 0 {
		version = strconv.Itoa(ev.Version)
	}
	return []string{ev.ID, ev.Time.UTC().Format(time.RFC3339Nano), ev.Action, ev.Credential, version, ev.User,
		ev.EntityID, ev.ExecutionID, ev.WorkflowID, strconv.FormatBool(ev.Success), ev.Error, ev.actor(), ev.UserID, ev.RequestID}
}

func renderCSV(events []auditEvent, _ *auditReport) ([]byte, string, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	if err := w.Write(csvHeader); err != nil {
		return nil, "", err
	}
	for i := range events {
		row := events[i].row()
		for j := range row {
			row[j] = csvText(row[j])
		}
		if err := w.Write(row); err != nil {
			return nil, "", err
		}
	}
	w.Flush()
	return buf.Bytes(), "text/csv", w.Error()
}

// csvFormulaStarts are the first characters that make spreadsheets read a
// cell as a formula (OWASP CSV injection; ASVS 1.2.10 adds NUL).
const csvFormulaStarts = "=+-@\t\r\x00"

// csvText neutralises a cell that a spreadsheet would run as a formula by
// prefixing a single quote, which spreadsheets read as "this is text".
// Every cell is treated so, since callers control several fields
// (execution_id, workflow_id, user_id, credential names in errors).
func csvText(cell string) string {
	if cell != "" && strings.IndexByte(csvFormulaStarts, cell[0]) >= 0 {
		return "'" + cell
	}
	return cell
}

// The PDF report: A4 landscape, in mm.
const (
	pdfMargin     = 10.0
	pdfBottom     = 15.0 // bottom margin, the footer inside it
	pdfLineHeight = 3.4  // a line of table text (7 pt)
	pdfMaxBars    = 31   // bars of the chart; more days are grouped
	pdfMaxSeries  = 11   // actions the chart tells apart; the rest is "other"
)

// pdfColumns are the event table's columns; their widths fill the 277 mm
// between the margins.
var pdfColumns = []struct {
	title string
	width float64
}{
	{"time", 31}, {"action", 22}, {"credential", 30}, {"ver", 7}, {"actor", 26}, {"entity", 24},
	{"user_id", 22}, {"execution", 22}, {"workflow", 22}, {"outcome", 15}, {"error", 56},
}

// pdfPalette colours the chart's actions.
var pdfPalette = [][3]int{
	{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189}, {140, 86, 75},
	{227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}, {57, 59, 121}, {173, 173, 173},
}

// outcome names an event's success for the report.
func (ev *auditEvent) outcome() string {
	if ev.Success {
		return "success"
	}
	return "failure"
}

// pdfCells are an event's cells in pdfColumns order.
func (ev *auditEvent) pdfCells() []string {
	version := ""
	if ev.Version != 0 {
		version = strconv.Itoa(ev.Version)
	}
	return []string{ev.Time.UTC().Format(time.RFC3339), ev.Action, ev.Credential, version, ev.actor(), ev.EntityID,
		ev.UserID, ev.ExecutionID, ev.WorkflowID, ev.outcome(), ev.Error}
}

// auditTotals summarise the events of a report.
type auditTotals struct {
	// actions are ordered by event count, most first, then by name.
	actions          []string
	byAction         map[string]*[2]int // action -> {successes, failures}
	success, failure int
	oldest, newest   time.Time
}

func totalEvents(events []auditEvent) *auditTotals {
	t := &auditTotals{byAction: map[string]*[2]int{}}
	for i := range events {
		ev := &events[i]
		n := t.byAction[ev.Action]
		if n == nil {
			n = &[2]int{}
			t.byAction[ev.Action] = n
			t.actions = append(t.actions, ev.Action)
		}
		if ev.Success {
			n[0]++
			t.success++
		} else {
			n[1]++
			t.failure++
		}
		if t.oldest.IsZero() || ev.Time.Before(t.oldest) {
			t.oldest = ev.Time
		}
		if ev.Time.After(t.newest) {
			t.newest = ev.Time
		}
	}
	sort.Slice(t.actions, func(i, j int) bool {
		a, b := t.byAction[t.actions[i]], t.byAction[t.actions[j]]
		if a[0]+a[1] != b[0]+b[1] {
			return a[0]+a[1] > b[0]+b[1]
		}
		return t.actions[i] < t.actions[j]
	})
	return t
}

// filterText describes an export's filter.
func filterText(f *auditFilter) string {
	var parts []string
	for _, kv := range [][2]string{{"credential", f.Credential}, {"action", f.Action}, {"user", f.User}, {"user_id", f.UserID}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+kv[1])
		}
	}
	if !f.Since.IsZero() {
		parts = append(parts, "since="+f.Since.UTC().Format(time.RFC3339))
	}
	if !f.Until.IsZero() {
		parts = append(parts, "until="+f.Until.UTC().Format(time.RFC3339))
	}
	if f.Cursor != "" {
		parts = append(parts, "cursor="+f.Cursor)
	}
	if f.Limit != 0 && f.Limit != maxExportEvents {
		parts = append(parts, "limit="+strconv.Itoa(f.Limit))
	}
	if len(parts) == 0 {
		return "none (every event)"
	}
	return strings.Join(parts, ", ")
}

// periodText is the period a report covers: the filter's since and until
// where given, else the oldest and newest event's times.
func periodText(f *auditFilter, t *auditTotals) string {
	end := func(bound, event time.Time, boundName, eventName string) string {
		switch {
		case !bound.IsZero():
			return bound.UTC().Format(time.RFC3339) + " (" + boundName + ")"
		case !event.IsZero():
			return event.UTC().Format(time.RFC3339) + " (" + eventName + ")"
		}
		return ""
	}
	from := end(f.Since, t.oldest, "since", "oldest event")
	to := end(f.Until, t.newest, "until", "newest event")
	switch {
	case from == "" && to == "":
		return "no events"
	case from == "":
		return "up to " + to
	case to == "":
		return "from " + from
	}
	return from + " to " + to
}

// pdfSafe keeps to the characters the core fonts can show: white space
// becomes a space (so the text can wrap there), other characters outside
// printable ASCII a question mark.
func pdfSafe(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			r = ' '
		case r < 0x20 || r > 0x7e:
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}

// renderPDF renders the report: title, filter, period, totals by action
// and by outcome, a chart of events per day by action, then the events
// table, whose cells wrap long values over as many lines as they need.
func renderPDF(events []auditEvent, r *auditReport) ([]byte, string, error) {
	const title = "nebula-credential audit report"
	pdf := fpdf.New("L", "mm", "A4", "")
	pdf.SetMargins(pdfMargin, pdfMargin, pdfMargin)
	pdf.SetAutoPageBreak(true, pdfBottom)
	pdf.SetTitle(title, false)
	pdf.SetCreator("nebula-credential", false)
	pdf.SetCreationDate(r.Now)
	pdf.SetModificationDate(r.Now)
	pdf.AliasNbPages("{nb}")
	generated := r.Now.UTC().Format(time.RFC3339)
	pdf.SetFooterFunc(func() {
		pdf.SetY(-pdfBottom + 4)
		pdf.SetFont("Helvetica", "", 7)
		pdf.SetTextColor(110, 110, 110)
		pdf.CellFormat(0, 4, fmt.Sprintf("%s, generated %s - page %d of {nb}", title, generated, pdf.PageNo()), "", 0, "R", false, 0, "")
		pdf.SetTextColor(0, 0, 0)
	})
	pdf.AddPage()

	totals := totalEvents(events)
	pdf.SetFont("Helvetica", "B", 15)
	pdf.CellFormat(0, 8, title, "", 1, "L", false, 0, "")
	pdf.SetFont("Helvetica", "", 9)
	lines := [][2]string{
		{"Generated", generated},
		{"Filter", pdfSafe(filterText(&r.Filter))},
		{"Period", periodText(&r.Filter, totals)},
		{"Events", fmt.Sprintf("%d (success %d, failure %d), newest first", len(events), totals.success, totals.failure)},
	}
	if r.Next != "" {
		lines = append(lines, [2]string{"Incomplete", "the export stopped at its bound; older events remain: export again with cursor=" + pdfSafe(r.Next)})
	}
	for _, l := range lines {
		pdf.SetFont("Helvetica", "B", 9)
		pdf.CellFormat(22, 5, l[0]+":", "", 0, "L", false, 0, "")
		pdf.SetFont("Helvetica", "", 9)
		pdf.MultiCell(0, 5, l[1], "", "L", false)
	}
	pdf.Ln(3)

	top := pdf.GetY()
	below := pdfTotalsTable(pdf, totals, pdfMargin, top)
	if len(events) > 0 {
		below = max(below, pdfDayChart(pdf, events, totals, pdfMargin+92, top, 277-92, 62))
	}
	pdf.SetXY(pdfMargin, below+6)
	pdfEventTable(pdf, events)

	var buf bytes.Buffer
	if err := pdf.Output(&buf); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), "application/pdf", nil
}

// pdfTotalsTable draws the totals by action and outcome at x, y and
// returns the y below it.
func pdfTotalsTable(pdf *fpdf.Fpdf, t *auditTotals, x, y float64) float64 {
	widths := []float64{38, 16, 16, 16}
	row := func(cells []string, style string, fill bool) {
		pdf.SetX(x)
		pdf.SetFont("Helvetica", style, 8)
		for i, c := range cells {
			align := "R"
			if i == 0 {
				align = "L"
			}
			pdf.CellFormat(widths[i], 5, c, "1", 0, align, fill, 0, "")
		}
		pdf.Ln(-1)
	}
	pdf.SetXY(x, y)
	pdf.SetFont("Helvetica", "B", 10)
	pdf.CellFormat(0, 6, "Totals by action and outcome", "", 1, "L", false, 0, "")
	pdf.SetFillColor(230, 230, 230)
	row([]string{"action", "events", "success", "failure"}, "B", true)
	for _, a := range t.actions {
		n := t.byAction[a]
		row([]string{pdfSafe(a), strconv.Itoa(n[0] + n[1]), strconv.Itoa(n[0]), strconv.Itoa(n[1])}, "", false)
	}
	row([]string{"all actions", strconv.Itoa(t.success + t.failure), strconv.Itoa(t.success), strconv.Itoa(t.failure)}, "B", true)
	return pdf.GetY()
}

// pdfDayChart draws a stacked bar chart of events per day (or per group
// of days, to keep at most pdfMaxBars bars) by action in the box x, y, w,
// h, with its legend, and returns the y below it.
func pdfDayChart(pdf *fpdf.Fpdf, events []auditEvent, t *auditTotals, x, y, w, h float64) float64 {
	const day = 24 * time.Hour
	first := t.oldest.UTC().Truncate(day)
	days := int(t.newest.UTC().Truncate(day).Sub(first)/day) + 1
	step := (days + pdfMaxBars - 1) / pdfMaxBars
	bars := (days + step - 1) / step

	series := t.actions
	if len(series) > pdfMaxSeries {
		series = append(slices.Clone(series[:pdfMaxSeries]), "other")
	}
	index := map[string]int{}
	for i, a := range series {
		index[a] = i
	}
	counts := make([][]int, bars)
	for i := range counts {
		counts[i] = make([]int, len(series))
	}
	for i := range events {
		ev := &events[i]
		bar := int(ev.Time.UTC().Sub(first)/day) / step
		s, ok := index[ev.Action]
		if !ok {
			s = len(series) - 1 // other
		}
		counts[bar][s]++
	}
	highest := 2 // the axis is labelled at 0, half and highest: keep it even
	for _, c := range counts {
		sum := 0
		for _, n := range c {
			sum += n
		}
		highest = max(highest, sum+sum%2)
	}

	what := "day"
	if step > 1 {
		what = fmt.Sprintf("%d days", step)
	}
	pdf.SetXY(x, y)
	pdf.SetFont("Helvetica", "B", 10)
	pdf.CellFormat(w, 6, "Events per "+what+" by action (UTC)", "", 0, "L", false, 0, "")

	const axisW, labelsH, legendW = 9.0, 6.0, 38.0
	px, py := x+axisW, y+9
	pw, ph := w-axisW-legendW, h-9-labelsH
	pdf.SetFont("Helvetica", "", 6)
	pdf.SetDrawColor(200, 200, 200)
	pdf.SetLineWidth(0.1)
	for _, frac := range []float64{0, 0.5, 1} {
		ly := py + ph - frac*ph
		pdf.Line(px, ly, px+pw, ly)
		pdf.SetXY(x, ly-1.5)
		pdf.CellFormat(axisW-1, 3, strconv.Itoa(int(frac*float64(highest))), "", 0, "R", false, 0, "")
	}
	pdf.SetDrawColor(0, 0, 0)
	pdf.SetLineWidth(0.2)
	pdf.Line(px, py, px, py+ph)

	slot := pw / float64(bars)
	barW := slot * 0.7
	labelEvery := (bars + 15) / 16
	for i, c := range counts {
		bx := px + float64(i)*slot + (slot-barW)/2
		by := py + ph
		for s, n := range c {
			if n == 0 {
				continue
			}
			segH := float64(n) / float64(highest) * ph
			col := pdfPalette[s%len(pdfPalette)]
			pdf.SetFillColor(col[0], col[1], col[2])
			pdf.Rect(bx, by-segH, barW, segH, "F")
			by -= segH
		}
		if i%labelEvery == 0 {
			pdf.SetXY(px+float64(i)*slot-2, py+ph+0.5)
			pdf.CellFormat(slot+4, 3, first.Add(time.Duration(i*step)*day).Format("01-02"), "", 0, "C", false, 0, "")
		}
	}

	lx, ly := px+pw+4, py
	for s, a := range series {
		col := pdfPalette[s%len(pdfPalette)]
		pdf.SetFillColor(col[0], col[1], col[2])
		pdf.Rect(lx, ly+0.5, 3, 3, "F")
		pdf.SetXY(lx+4, ly)
		pdf.CellFormat(legendW-8, 4, pdfSafe(a), "", 0, "L", false, 0, "")
		ly += 4.2
	}
	pdf.SetFillColor(255, 255, 255)
	return max(y+h, ly)
}

// pdfEventTable draws the events table from the current position. A row
// is as tall as its longest cell needs; a row that does not fit goes to the
// next page (with the header again), and a row taller than a page is
// continued on the next.
func pdfEventTable(pdf *fpdf.Fpdf, events []auditEvent) {
	_, pageH := pdf.GetPageSize()
	bottom := pageH - pdfBottom
	pdf.SetAutoPageBreak(false, pdfBottom) // rows break pages themselves
	header := func() {
		pdf.SetFont("Helvetica", "B", 8)
		pdf.SetFillColor(230, 230, 230)
		pdf.SetX(pdfMargin)
		for _, c := range pdfColumns {
			pdf.CellFormat(c.width, 5, c.title, "1", 0, "L", true, 0, "")
		}
		pdf.Ln(-1)
		pdf.SetFont("Helvetica", "", 7)
	}
	newPage := func() {
		pdf.AddPage()
		header()
	}
	pdf.SetFont("Helvetica", "B", 10)
	pdf.CellFormat(0, 6, "Events", "", 1, "L", false, 0, "")
	if bottom-pdf.GetY() < 5+pdfLineHeight {
		pdf.AddPage()
	}
	header()
	freshLines := int((bottom - pdf.GetY()) / pdfLineHeight) // lines of a page after the header
	if len(events) == 0 {
		pdf.SetX(pdfMargin)
		pdf.CellFormat(0, 5, "No event matches the filter.", "", 1, "L", false, 0, "")
	}
	for i := range events {
		ev := &events[i]
		cells := ev.pdfCells()
		lines := make([][]string, len(cells))
		n := 1
		for j, c := range cells {
			lines[j] = pdf.SplitText(pdfSafe(c), pdfColumns[j].width)
			n = max(n, len(lines[j]))
		}
		for start := 0; start < n; {
			fit := int((bottom - pdf.GetY()) / pdfLineHeight)
			if fit < 1 || (start == 0 && fit < n && n <= freshLines) {
				newPage()
				continue
			}
			count := min(fit, n-start)
			y, x := pdf.GetY(), pdfMargin
			for j, c := range pdfColumns {
				pdf.Rect(x, y, c.width, float64(count)*pdfLineHeight, "D")
				if !ev.Success && c.title == "outcome" {
					pdf.SetTextColor(180, 0, 0)
				}
				for k := start; k < min(start+count, len(lines[j])); k++ {
					pdf.SetXY(x, y+float64(k-start)*pdfLineHeight)
					pdf.CellFormat(c.width, pdfLineHeight, lines[j][k], "", 0, "L", false, 0, "")
				}
				pdf.SetTextColor(0, 0, 0)
				x += c.width
			}
			pdf.SetXY(pdfMargin, y+float64(count)*pdfLineHeight)
			start += count
			if start < n {
				newPage()
			}
		}
	}
	pdf.SetAutoPageBreak(true, pdfBottom)
}
