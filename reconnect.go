package nebula

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/types"
)

// Dead grants. When the token endpoint answers a refresh with an error
// that no retry can fix (the user revoked access, the client was deleted or
// its secret or key revoked), the credential's version is marked as
// needing reconnection: the engine makes no more upstream calls for it
// (reads serve the last token while it is valid, then answer no_token;
// background refresh skips it), health names it, and a needs_reconnect
// event is sent. A new version (new refresh_token, client_secret,
// private_key or service-account key, written to creds/<name> or by
// rotation, or a completed creds/<name>/reconnect flow) is not marked, so it is used
// at once.

// statusNeedsReconnect is the status of a credential whose grant is dead.
const statusNeedsReconnect = "needs_reconnect"

// deadGrantCodes are the OAuth2 error codes (RFC 6749 section 5.2) of a
// token endpoint answer that mean the grant or the client is gone for good.
var deadGrantCodes = []string{"invalid_grant", "invalid_client", "unauthorized_client"}

// reconnectState records why a version of a credential needs reconnecting.
type reconnectState struct {
	// VersionID is the id of the version whose grant is dead; the mark
	// lapses when the credential moves to another version.
	VersionID string `json:"version_id"`
	// ErrorCode is the token endpoint's OAuth2 error code.
	ErrorCode string    `json:"error_code"`
	Since     time.Time `json:"since"`
}

// deadGrantCode returns the OAuth2 error code of a refresh failure when it
// means the grant is dead: a 4xx answer (not 429) with one of
// deadGrantCodes. Transient failures (no answer, 5xx, 429) and other
// answers return "".
func deadGrantCode(err error) string {
	var ue *upstream.Error
	if !errors.As(err, &ue) || ue.Status < 400 || ue.Status >= 500 || ue.Status == http.StatusTooManyRequests {
		return ""
	}
	if slices.Contains(deadGrantCodes, ue.Code) {
		return ue.Code
	}
	return ""
}

// needsReconnect reports whether the credential's current version is
// marked dead.
func (c *credential) needsReconnect() bool {
	return c.Reconnect != nil && c.Reconnect.VersionID == c.ID
}

// reconnectGate refuses an upstream request for a credential whose current
// version (sv) is marked dead: no_token, with what to do. Requests for
// other versions (a rotation's or a write's new values) pass.
func reconnectGate(c *credential, sv *secretVersion) error {
	if !c.needsReconnect() || sv.ID != c.ID {
		return nil
	}
	return newError(KindNoToken, "credential %q needs reconnecting: its token endpoint answered %s, so the grant was revoked or the client's credentials are no longer accepted; "+
		"no request is made until it is reconnected: complete a flow for it (creds/%s/reconnect) or write a new refresh_token, client_secret or private_key to creds/%s",
		c.Name, c.Reconnect.ErrorCode, c.Name, c.Name)
}

// noteRefreshFailure is called with a refresh failure about to be recorded
// on c (under its write lock, before c is saved): a dead grant marks the
// version and sends needs_reconnect; the first failure of a series sends
// refresh_failed.
func (b *backend) noteRefreshFailure(ctx context.Context, s logical.Storage, c *credential, cause error) {
	if code := deadGrantCode(cause); code != "" {
		if c.needsReconnect() {
			return
		}
		c.Reconnect = &reconnectState{VersionID: c.ID, ErrorCode: code, Since: b.now().UTC()}
		b.notifier.deadGrants.Add(1)
		b.logger.Warn("the credential's grant is dead; no more upstream requests until it is reconnected", "credential", c.Name, "error_code", code)
		b.notify(ctx, s, eventNeedsReconnect, c, code)
		return
	}
	if c.LastError == "" {
		var ue *upstream.Error
		code := ""
		if errors.As(cause, &ue) {
			code = ue.Code
		}
		b.notify(ctx, s, eventRefreshFailed, c, code)
	}
}

// noteRecovered is called when a token is stored for c after failures: when
// a failure (c.LastError) or a dead mark is recorded, it drops the mark and
// sends recovered. The caller saves c.
func (b *backend) noteRecovered(ctx context.Context, s logical.Storage, c *credential) {
	if c.LastError == "" && c.Reconnect == nil {
		return // only backoff state was left (a reconnect reported it)
	}
	c.Reconnect = nil
	b.notify(ctx, s, eventRecovered, c, "")
}

// reactivate drops the dead mark of a credential a write gives a new
// version (new secret material), with the failure it recorded; it reports
// whether there was a mark (the caller sends recovered once the write is
// stored, with notifyReactivated).
func reactivate(c *credential, newVersion bool) bool {
	if !newVersion || c.Reconnect == nil {
		return false
	}
	c.Reconnect, c.LastError = nil, ""
	c.RefreshFailures, c.RefreshRetryAt = 0, time.Time{} // no backoff for the new version
	return true
}

// notifyReactivated sends recovered for a credential reactivate cleared.
func (b *backend) notifyReactivated(ctx context.Context, s logical.Storage, cleared bool, c *credential) {
	if cleared {
		b.logger.Info("credential reconnected with new secret material", "credential", c.Name)
		b.notify(ctx, s, eventRecovered, c, "")
	}
}

// reconnectIssues is the health issue of a credential that needs
// reconnecting.
func reconnectIssues(c *credential) []healthIssue {
	if !c.needsReconnect() {
		return nil
	}
	return []healthIssue{{Credential: c.Name, Kind: statusNeedsReconnect,
		Message: "the token endpoint answered " + c.Reconnect.ErrorCode + " on refresh (access revoked?): complete a flow for it (creds/" + c.Name + "/reconnect) or write a new refresh_token, client_secret or private_key to creds/" + c.Name}}
}

// reconnectData is the reconnect part of creds/<name> reads: nil, or the
// error code and since when the current version needs reconnecting.
func (c *credential) reconnectData() any {
	if !c.needsReconnect() {
		return nil
	}
	return map[string]any{"error_code": c.Reconnect.ErrorCode, "since": c.Reconnect.Since.UTC().Format(time.RFC3339)}
}

// reconnectWithFlow gives a credential that needs reconnecting the grant an
// interactive flow (creds/<name>/reconnect) obtained: a new version with the flow's
// fields (the flow supplied the client's secrets itself) and its first
// token, keeping the credential's description, tags, metadata, rotation
// policy and mirrors. The dead version is retired where it was used (its
// old endpoints). The caller holds the credential's write lock.
func (b *backend) reconnectWithFlow(ctx context.Context, s logical.Storage, existing *credential, f *flow, issued *issuedToken) (*credential, error) {
	in := &credInput{Name: f.Name, Values: f.Values.Merge(types.Values{"grant_type": f.Grant})}
	built, next, err := b.buildCredential(ctx, s, in, types.OAuth2, issued)
	if err != nil {
		return nil, err
	}
	c := *existing
	c.Fields, c.ProviderEndpoints = built.Fields, built.ProviderEndpoints
	if f.ProviderEndpoints != nil {
		c.ProviderEndpoints = f.ProviderEndpoints // where the flow sent the secret
	}
	next.Version = existing.Version + 1
	retired := b.promote(&c, next)
	if c.Previous != nil {
		// The previous version's grant is dead; nothing to keep it for.
		retired = append(retired, *c.Previous)
		c.Previous = nil
	}
	reactivate(&c, true)
	c.UpdatedAt = b.now().UTC()
	if err := b.saveCredential(ctx, s, &c, next, &credInput{Name: f.Name}); err != nil {
		return nil, err
	}
	old := c
	old.Fields, old.ProviderEndpoints = existing.Fields, existing.ProviderEndpoints
	for _, ref := range retired {
		b.destroyVersion(ctx, s, &old, ref.ID)
	}
	b.afterNewVersion(ctx, s, &c, next, nil)
	b.notifyReactivated(ctx, s, true, &c)
	return &c, nil
}
