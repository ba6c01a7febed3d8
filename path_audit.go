package nebula

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

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
	if err := b.onActiveNode(); err != nil {
		return nil, "", err
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
