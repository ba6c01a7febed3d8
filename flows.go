package nebula

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-uuid"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/oauth2"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/types"
)

// Interactive OAuth2 flows. A flow lives while a user signs in: the
// authorization code grant (PKCE S256 and a random state; the user's browser
// comes back to callback) or the device code grant (RFC 8628; the engine
// polls the token endpoint). When the user has signed in, the engine creates
// the oauth2 credential the flow names, with the first access token and the
// refresh token, so token/<name> serves it at once and refreshes later.
//
// Storage:
//
//   - "flow/<flow_id>": the flow. It holds the PKCE verifier, the device code
//     and the client secret while pending, so the prefix is seal-wrapped;
//     they are scrubbed when the flow ends.
//   - "flowstate/<sha256 of state>": the id of the flow a state belongs to.
//     The state is the only authentication of the unauthenticated callback;
//     the entry is deleted on first use, so a state works once. Only its
//     hash is stored.
const (
	flowPrefix      = "flow/"
	flowStatePrefix = "flowstate/"
)

// Flow statuses.
const (
	flowPending   = "pending"
	flowCompleted = "completed"
	flowFailed    = "failed"
	flowExpired   = "expired"
)

// flowRetention is how long an ended flow (completed, failed or expired) is
// kept so its outcome can be read; the periodic cleanup deletes it after.
const flowRetention = 24 * time.Hour

// defaultDeviceInterval is the polling interval RFC 8628 prescribes when
// the device authorization answer has none; slowDownStep is added on each
// slow_down answer (section 3.5).
const (
	defaultDeviceInterval = 5
	slowDownStep          = 5
)

// flowLocks serialise work on one flow (and on one state's index entry).
// They are apart from the credential locks because a flow that completes
// takes its credential's lock while holding the flow's, and two keys of one
// lock table can share a lock. The table is per process, shared by the
// mounts of a multiplexed plugin: flow ids are UUIDs, so sharing costs at
// most some contention.
var flowLocks = locksutil.CreateLocks()

func flowLock(key string) *locksutil.LockEntry { return locksutil.LockForKey(flowLocks, key) }

// flow is one interactive flow, stored seal-wrapped at "flow/<id>".
type flow struct {
	ID string `json:"id"`
	// Name is the credential the flow creates.
	Name string `json:"name"`
	// Grant is types.GrantAuthorizationCode or types.GrantDeviceCode.
	Grant  string `json:"grant_type"`
	Status string `json:"status"`
	// Error says why a failed flow failed; it never holds secret material
	// or upstream response bodies.
	Error string `json:"error,omitempty"`
	// Warning notes a completed flow's caveat (no refresh token issued).
	Warning   string    `json:"warning,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// EndedAt is when the flow completed, failed or expired; zero while
	// pending.
	EndedAt time.Time `json:"ended_at,omitzero"`
	// CredentialID is the id of the credential version a completed flow
	// created.
	CredentialID string `json:"credential_id,omitempty"`

	// The credential to create: oauth2 field values (the client secret
	// included) and the common fields. Values is dropped when the flow ends.
	Values      types.Values      `json:"values,omitempty"`
	Description string            `json:"description,omitempty"`
	Tags        []string          `json:"tags,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`

	// ProviderEndpoints are the endpoints of the provider preset Values
	// names, as they were when the flow started; the flow and the
	// credential it creates keep them (credential.ProviderEndpoints).
	ProviderEndpoints map[string]string `json:"provider_endpoints,omitempty"`

	// Authorization code grant.
	StateHash   string `json:"state_hash,omitempty"`
	RedirectURI string `json:"redirect_uri,omitempty"`
	// Verifier is the PKCE verifier; empty for providers without PKCE.
	Verifier string `json:"verifier,omitempty"`

	// Device code grant.
	DeviceCode              string `json:"device_code,omitempty"`
	UserCode                string `json:"user_code,omitempty"`
	VerificationURI         string `json:"verification_uri,omitempty"`
	VerificationURIComplete string `json:"verification_uri_complete,omitempty"`
	// Interval is the least time between polls, in seconds.
	Interval   int       `json:"interval,omitempty"`
	NextPollAt time.Time `json:"next_poll_at,omitzero"`
	// LastPollError is the last transient polling failure, cleared by the
	// next answer.
	LastPollError string `json:"last_poll_error,omitempty"`
}

func flowKey(id string) string           { return flowPrefix + id }
func flowStateKey(hash string) string    { return flowStatePrefix + hash }
func stateHash(state string) string      { return hexSHA256([]byte(state)) }
func (f *flow) expired(t time.Time) bool { return !t.Before(f.ExpiresAt) }

// interactionType is what the user does: follow a redirect or enter a code.
func (f *flow) interactionType() string {
	if f.Grant == types.GrantDeviceCode {
		return "device_code"
	}
	return "redirect"
}

// end marks the flow ended with status and drops its secret material.
func (f *flow) end(status string, at time.Time) {
	f.Status, f.EndedAt = status, at
	f.Values, f.Verifier, f.DeviceCode = nil, "", ""
}

// fail ends the flow as failed with a message safe to show.
func (f *flow) fail(at time.Time, msg string) {
	f.end(flowFailed, at)
	f.Error = msg
}

// responseData is what flows/<flow_id> reads answer at time now.
func (f *flow) responseData(now time.Time) map[string]any {
	status := f.Status
	if status == flowPending && f.expired(now) {
		status = flowExpired
	}
	data := map[string]any{
		"flow_id":          f.ID,
		"name":             f.Name,
		"grant_type":       f.Grant,
		"interaction_type": f.interactionType(),
		"status":           status,
		"created_at":       f.CreatedAt.UTC().Format(time.RFC3339),
		"expires_at":       f.ExpiresAt.UTC().Format(time.RFC3339),
	}
	if !f.EndedAt.IsZero() {
		data["ended_at"] = f.EndedAt.UTC().Format(time.RFC3339)
	}
	switch status {
	case flowFailed:
		data["error"] = f.Error
	case flowCompleted:
		data["id"] = f.CredentialID
	case flowPending:
		if f.Grant == types.GrantDeviceCode {
			data["user_code"] = f.UserCode
			data["verification_uri"] = f.VerificationURI
			data["verification_uri_complete"] = f.VerificationURIComplete
			data["interval"] = f.Interval
			if f.LastPollError != "" {
				data["last_poll_error"] = f.LastPollError
			}
		}
	}
	return data
}

// loadFlow reads a flow; nil when it does not exist.
func loadFlow(ctx context.Context, s logical.Storage, id string) (*flow, error) {
	entry, err := s.Get(ctx, flowKey(id))
	if err != nil {
		return nil, flowStorageError("reading flow", err)
	}
	if entry == nil {
		return nil, nil
	}
	f := &flow{}
	if err := entry.DecodeJSON(f); err != nil {
		return nil, storageError("decoding flow", err)
	}
	return f, nil
}

// saveFlow writes a flow, and with stateHash its state index entry first
// (nothing can use the index entry before the flow exists).
func saveFlow(ctx context.Context, s logical.Storage, f *flow, stateHash string) error {
	entry, err := jsonEntry(flowKey(f.ID), f, true)
	if err != nil {
		return fmt.Errorf("encoding flow: %w", err)
	}
	var staged []*logical.StorageEntry
	if stateHash != "" {
		staged = append(staged, &logical.StorageEntry{Key: flowStateKey(stateHash), Value: []byte(f.ID), SealWrap: true})
	}
	if err := commitEntries(ctx, s, staged, entry); err != nil {
		return flowStorageError("writing flow", err)
	}
	return nil
}

// flowStorageError is storageError, except that Vault's read-only storage
// error (a performance standby) passes unchanged, so Vault forwards the
// request to the active node.
func flowStorageError(op string, err error) error {
	if errors.Is(err, logical.ErrReadOnly) {
		return logical.ErrReadOnly
	}
	return storageError(op, err)
}

// takeState consumes the state index entry of state and returns the flow id
// it named. With wantID set, a state of another flow is refused and left in
// place. A state is consumed before anything else happens with it, so it
// works once, however the flow continues.
func takeState(ctx context.Context, s logical.Storage, state, wantID string) (string, error) {
	hash := stateHash(state)
	lock := flowLock(flowStatePrefix + hash)
	lock.Lock()
	defer lock.Unlock()
	entry, err := s.Get(ctx, flowStateKey(hash))
	if err != nil {
		return "", flowStorageError("reading flow state", err)
	}
	if entry == nil {
		return "", newError(KindInvalidCallback, "the state is unknown or was already used")
	}
	id := string(entry.Value)
	if wantID != "" && subtle.ConstantTimeCompare([]byte(id), []byte(wantID)) != 1 {
		return "", newError(KindInvalidCallback, "the state does not belong to flow %s", wantID)
	}
	if err := s.Delete(ctx, flowStateKey(hash)); err != nil {
		return "", flowStorageError("consuming flow state", err)
	}
	return id, nil
}

// randomState returns 256 random bits, base64url-encoded.
func randomState() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating state: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// newFlowID returns a new flow id (a UUID).
func newFlowID() (string, error) {
	id, err := uuid.GenerateUUID()
	if err != nil {
		return "", fmt.Errorf("generating flow id: %w", err)
	}
	return id, nil
}

// redeemCode finishes a pending authorization code flow whose state was
// just consumed: it checks the flow, records a provider's error, or
// exchanges code (with the PKCE verifier) and creates the credential. The
// caller holds the flow's lock. A flow that cannot complete any more ends,
// and the returned error says why.
func (b *backend) redeemCode(ctx context.Context, s logical.Storage, f *flow, code, providerError string) error {
	if err := b.checkRedeemable(ctx, s, f); err != nil {
		return err
	}
	now := b.now()
	var fail *CredentialError
	switch {
	case providerError != "":
		fail = providerFailure(providerError)
	case code == "":
		fail = newError(KindInvalidCallback, "the callback has neither a code nor an error")
	}
	if fail != nil {
		f.fail(now, fail.Msg)
		return b.endWith(ctx, s, f, fail)
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return err
	}
	tok, err := b.exchangeCode(ctx, s, cfg, f, code)
	if err != nil {
		f.fail(b.now(), safeMessage(err))
		return b.endWith(ctx, s, f, err)
	}
	return b.completeFlow(ctx, s, cfg, f, tok)
}

// checkRedeemable answers why a flow cannot take a code: it ended, or it
// expired (then it is marked so).
func (b *backend) checkRedeemable(ctx context.Context, s logical.Storage, f *flow) error {
	switch {
	case f.Grant != types.GrantAuthorizationCode:
		return newError(KindInvalidCallback, "flow %s is a %s flow; it completes by polling, not by a code", f.ID, f.Grant)
	case f.Status == flowExpired:
		return flowExpiredError(f)
	case f.Status != flowPending:
		return newError(KindInvalidCallback, "flow %s is already %s", f.ID, f.Status)
	case f.expired(b.now()):
		f.end(flowExpired, f.ExpiresAt)
		return b.endWith(ctx, s, f, flowExpiredError(f))
	}
	return nil
}

func flowExpiredError(f *flow) *CredentialError {
	return newError(KindFlowExpired, "flow %s expired at %s; start a new flow", f.ID, f.ExpiresAt.UTC().Format(time.RFC3339))
}

// providerFailure describes an error a provider redirected back with
// (RFC 6749 section 4.1.2.1). Only the code is kept: the description is
// the provider's text.
func providerFailure(code string) *CredentialError {
	code = upstream.SafeCode(code)
	if code == "access_denied" {
		return newError(KindAccessDenied, "the authorization server answered access_denied: the user did not grant access")
	}
	if code == "" {
		code = "(unreadable code)"
	}
	return newError(KindInvalidCallback, "the authorization server answered %s instead of a code", code)
}

// storeEnded saves a flow that just ended. A flow that ended without its
// state being used (it expired) keeps the state's index entry until the
// flow is deleted, so a late callback learns that it expired (once).
func (b *backend) storeEnded(ctx context.Context, s logical.Storage, f *flow) error {
	if f.Status == flowFailed {
		b.logger.Info("interactive flow failed", "flow_id", f.ID, "credential", f.Name, "reason", f.Error)
	}
	return saveFlow(ctx, s, f, "")
}

// endWith stores a flow that just ended because of cause and returns
// cause. A failure to store is logged: the flow's state is consumed already,
// so the stale record cannot be redeemed, and the cleanup ends it.
func (b *backend) endWith(ctx context.Context, s logical.Storage, f *flow, cause error) error {
	if err := b.storeEnded(ctx, s, f); err != nil {
		b.logger.Warn("could not record the end of a flow", "flow_id", f.ID, "error", err)
	}
	return cause
}

// safeMessage is the message of a CredentialError without its code prefix,
// or the error's text.
func safeMessage(err error) string {
	var ce *CredentialError
	if errors.As(err, &ce) {
		return ce.Msg
	}
	return err.Error()
}

// completeFlow creates the flow's credential with the token the user's
// sign-in produced and ends the flow: completed, or failed when the
// credential cannot be created. The caller holds the flow's lock.
func (b *backend) completeFlow(ctx context.Context, s logical.Storage, cfg *Config, f *flow, tok *oauth2.Token) error {
	issued := b.issuedFrom(cfg, tok)
	c, err := b.createFlowCredential(ctx, s, f, issued)
	ev := auditEvent{Action: actionCreate, Credential: f.Name, Version: 1}
	if err == nil && c.Version > 1 {
		ev.Action, ev.Version = actionUpdate, c.Version // a reconnect (reconnect.go)
	}
	b.audit(ctx, nil, auditOutcome(ev, err), nil)
	now := b.now()
	if err != nil {
		f.fail(now, "creating the credential: "+safeMessage(err))
		return b.endWith(ctx, s, f, err)
	}
	f.end(flowCompleted, now)
	f.CredentialID = c.ID
	if issued.RefreshToken == "" {
		f.Warning = "the authorization server issued no refresh token: the credential works until the access token expires (request offline access, e.g. scope offline_access)"
	}
	b.logger.Info("interactive flow completed", "flow_id", f.ID, "credential", f.Name)
	if err := b.storeEnded(ctx, s, f); err != nil {
		// The credential exists; only the flow's record is stale.
		b.logger.Warn("could not record the completed flow", "flow_id", f.ID, "error", err)
	}
	return nil
}

// createFlowCredential creates the oauth2 credential a flow names, with its
// first token, as one write (so a failure leaves no credential behind).
// It is createCredential with the issued token added to the first version.
func (b *backend) createFlowCredential(ctx context.Context, s logical.Storage, f *flow, issued *issuedToken) (*credential, error) {
	lock := b.lock(f.Name)
	lock.Lock()
	defer lock.Unlock()
	existing, err := loadCredential(ctx, s, f.Name)
	if err != nil {
		return nil, err
	}
	if existing != nil && existing.needsReconnect() {
		return b.reconnectWithFlow(ctx, s, existing, f, issued) // reconnect.go
	}
	if existing != nil {
		return nil, newError(KindDuplicate, "credential %q was created while the flow ran", f.Name)
	}
	in := &credInput{Name: f.Name, Description: &f.Description, Tags: f.Tags, Metadata: f.Metadata,
		Values: f.Values.Merge(types.Values{"grant_type": f.Grant})}
	c, sv, err := b.buildCredential(ctx, s, in, types.OAuth2, issued)
	if err != nil {
		return nil, err
	}
	if f.ProviderEndpoints != nil {
		c.ProviderEndpoints = f.ProviderEndpoints // where the flow sent the secret
	}
	if err := b.saveCredential(ctx, s, c, sv, &credInput{Name: f.Name}); err != nil {
		return nil, err
	}
	b.indexExpiry(ctx, s, c.Name, nil, issued)
	b.dropCached(c.Name)
	return c, nil
}

// pollFlow asks the token endpoint once whether the user approved a pending
// device flow, when its interval has passed, and records the answer:
// completed, still pending (slower after slow_down), failed or expired.
// The caller holds the flow's lock.
func (b *backend) pollFlow(ctx context.Context, s logical.Storage, f *flow) error {
	now := b.now()
	if f.Status != flowPending || f.Grant != types.GrantDeviceCode {
		return nil
	}
	if f.expired(now) {
		f.end(flowExpired, f.ExpiresAt)
		return b.storeEnded(ctx, s, f)
	}
	if now.Before(f.NextPollAt) {
		return nil
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return err
	}
	tok, err := b.pollDevice(ctx, s, cfg, f)
	if err == nil {
		return b.completeFlow(ctx, s, cfg, f, tok)
	}
	now = b.now()
	var ee *endpointError
	if !errors.As(err, &ee) {
		if recordedOnFlow(err) { // e.g. the provider preset is gone
			f.fail(now, safeMessage(err))
			return b.endWith(ctx, s, f, err)
		}
		return err
	}
	switch {
	case ee.Code == "authorization_pending":
		f.LastPollError = ""
	case ee.Code == "slow_down":
		f.Interval += slowDownStep
		f.LastPollError = ""
	case ee.Code == "expired_token":
		f.end(flowExpired, now)
		return b.storeEnded(ctx, s, f)
	case ee.Code == "access_denied":
		f.fail(now, "the user denied the authorization (access_denied)")
		return b.storeEnded(ctx, s, f)
	case ee.Transient:
		f.LastPollError = ee.Error()
	default:
		f.fail(now, ee.Error())
		return b.storeEnded(ctx, s, f)
	}
	f.NextPollAt = now.Add(time.Duration(f.Interval) * time.Second)
	return saveFlow(ctx, s, f, "")
}

// periodicFlows is the flows' background work, for backend.tasks: it polls
// pending device flows that are due, marks pending flows past their expiry
// as expired (dropping their secrets), and deletes ended flows
// flowRetention after they ended, with their state index entries. Each flow
// gets b.itemBudget, so one whose token endpoint hangs does not hold up the
// others.
func (b *backend) periodicFlows(ctx context.Context, s logical.Storage) error {
	ids, err := s.List(ctx, flowPrefix)
	if err != nil {
		return flowStorageError("listing flows", err)
	}
	var errs []error
	for _, id := range ids {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		itemCtx, cancel := context.WithTimeout(ctx, b.itemBudget)
		err := b.tendFlow(itemCtx, s, id)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("flow %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// tendFlow does one flow's background work.
func (b *backend) tendFlow(ctx context.Context, s logical.Storage, id string) error {
	lock := flowLock(id)
	lock.Lock()
	defer lock.Unlock()
	f, err := loadFlow(ctx, s, id)
	if err != nil || f == nil {
		return err
	}
	now := b.now()
	switch {
	case f.Status == flowPending && f.expired(now):
		f.end(flowExpired, f.ExpiresAt)
		return b.storeEnded(ctx, s, f)
	case f.Status == flowPending:
		if err := b.pollFlow(ctx, s, f); err != nil && !recordedOnFlow(err) {
			return err
		}
		return nil
	case now.Before(f.EndedAt.Add(flowRetention)):
		return nil
	}
	return deleteFlow(ctx, s, f)
}

// deleteFlow deletes a flow, its state index entry first: a flow whose
// record outlives a failed delete can no longer be redeemed. The caller
// holds the flow's lock.
func deleteFlow(ctx context.Context, s logical.Storage, f *flow) error {
	if f.StateHash != "" {
		if err := s.Delete(ctx, flowStateKey(f.StateHash)); err != nil {
			return flowStorageError("deleting flow state", err)
		}
	}
	if err := s.Delete(ctx, flowKey(f.ID)); err != nil {
		return flowStorageError("deleting flow", err)
	}
	return nil
}

// recordedOnFlow reports whether err is a failure the flow recorded (a read
// shows it as the flow's status) rather than one of the request itself.
func recordedOnFlow(err error) bool {
	kind := ErrorKind(err)
	return kind != 0 && kind != KindStorage
}
