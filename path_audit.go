package nebula

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
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
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathAuditRead},
			},
			HelpSynopsis:    "Query the engine's audit trail.",
			HelpDescription: fmt.Sprintf("Returns events newest first, filtered by credential, action, user (the Vault identity), user_id (the caller's claim) and time, with a next cursor for paging. One request reads at most %d storage entries and about %d events of the trail, newest hour first: when it stops before filling the page it answers the events found, next (continue with cursor=next) and searched_back_to (everything newer was searched). since and until narrow the hours read. Each event names the Vault identity (actor, entity_id) apart from the caller's claims (user_id, execution_id, workflow_id). Events never hold secret values.", auditMaxReads, auditMaxScanned),
		},
		{
			Pattern:      "audit/export$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationVerb: "export", OperationSuffix: "audit-events"},
			Fields:       exportFields,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathAuditExport},
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
	report, contentType, err := render(events, b.now())
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

var auditRenderers = map[string]func([]auditEvent, time.Time) ([]byte, string, error){
	"json": renderJSON,
	"csv":  renderCSV,
	"pdf":  renderPDF,
}

func renderJSON(events []auditEvent, _ time.Time) ([]byte, string, error) {
	if events == nil {
		events = []auditEvent{}
	}
	out, err := json.MarshalIndent(events, "", "  ")
	return out, "application/json", err
}

// csvHeader names the CSV columns. Columns added later go at the end so
// that consumers indexing columns by position keep working.
var csvHeader = []string{"id", "time", "action", "credential", "version", "user", "entity_id", "execution_id", "workflow_id", "success", "error", "actor", "user_id"}

func (ev *auditEvent) row() []string {
	version := ""
	if ev.Version != 0 {
		version = strconv.Itoa(ev.Version)
	}
	return []string{ev.ID, ev.Time.UTC().Format(time.RFC3339Nano), ev.Action, ev.Credential, version, ev.User,
		ev.EntityID, ev.ExecutionID, ev.WorkflowID, strconv.FormatBool(ev.Success), ev.Error, ev.actor(), ev.UserID}
}

func renderCSV(events []auditEvent, _ time.Time) ([]byte, string, error) {
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

func renderPDF(events []auditEvent, now time.Time) ([]byte, string, error) {
	pdf := fpdf.New("L", "mm", "A4", "")
	pdf.SetTitle("nebula-credential audit report", true)
	pdf.AddPage()
	pdf.SetFont("Helvetica", "B", 14)
	pdf.Cell(0, 8, "nebula-credential audit report")
	pdf.Ln(8)
	pdf.SetFont("Helvetica", "", 9)
	pdf.Cell(0, 6, fmt.Sprintf("Generated %s, %d events, newest first", now.UTC().Format(time.RFC3339), len(events)))
	pdf.Ln(8)
	widths := []float64{34, 22, 34, 9, 32, 28, 28, 28, 9, 53}
	header := []string{"time", "action", "credential", "ver", "actor", "entity", "user_id", "execution", "ok", "error"}
	pdf.SetFont("Helvetica", "B", 8)
	for i, h := range header {
		pdf.CellFormat(widths[i], 6, h, "1", 0, "L", false, 0, "")
	}
	pdf.Ln(-1)
	pdf.SetFont("Helvetica", "", 7)
	for i := range events {
		ev := &events[i]
		version := ""
		if ev.Version != 0 {
			version = strconv.Itoa(ev.Version)
		}
		cells := []string{ev.Time.UTC().Format(time.RFC3339), ev.Action, ev.Credential, version, ev.actor(),
			ev.EntityID, ev.UserID, ev.ExecutionID, strconv.FormatBool(ev.Success), ev.Error}
		for j, c := range cells {
			pdf.CellFormat(widths[j], 5, fitText(pdf, c, widths[j]-1), "1", 0, "L", false, 0, "")
		}
		pdf.Ln(-1)
	}
	var buf bytes.Buffer
	if err := pdf.Output(&buf); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), "application/pdf", nil
}

// fitText shortens s to fit a cell width, and keeps to the characters the
// core fonts can show.
func fitText(pdf *fpdf.Fpdf, s string, width float64) string {
	clean := []rune{}
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			r = '?'
		}
		clean = append(clean, r)
	}
	s = string(clean)
	for len(s) > 0 && pdf.GetStringWidth(s) > width {
		s = s[:len(s)-1]
	}
	return s
}
