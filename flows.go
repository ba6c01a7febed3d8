package nebula

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/types"
	"golang.org/x/oauth2"
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

// flow is one interactive flow, stored seal-wrapped at "flow/<id>".
type flow struct {
	ID string `json:"id"`
	// Name is the credential the flow creates.
	Name string `json:"name"`
	// Grant is types.GrantAuthorizationCode or types.GrantDeviceCode.
	Grant string `json:"grant_type"`
	// Reconnect is set when creds/<name>/reconnect started the flow: it
	// replaces the grant of the existing credential Name. A flow without it
	// only creates Name, and fails when Name exists by then.
	Reconnect bool   `json:"reconnect,omitempty"`
	Status    string `json:"status"`
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
	if f.Reconnect {
		data["reconnect"] = true
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
	if f.Reconnect {
		ev.Action, ev.Version = actionUpdate, 0 // a reconnect (reconnect.go): a new version
	}
	if err == nil {
		ev.Version = c.Version
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
	switch {
	case f.Reconnect && existing == nil:
		return nil, newError(KindNotFound, "credential %q was deleted while the flow ran", f.Name)
	case f.Reconnect:
		return b.reconnectWithFlow(ctx, s, existing, f, issued) // reconnect.go
	case existing != nil:
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

// recordedOnFlow reports whether err is a failure the flow recorded (a read
// shows it as the flow's status) rather than one of the request itself.
func recordedOnFlow(err error) bool {
	kind := ErrorKind(err)
	return kind != 0 && kind != KindStorage
}

// checkFlowStart checks what the flow's credential will be, as create
// would, and that the endpoints the grant needs exist and are allowed.
func (b *backend) checkFlowStart(ctx context.Context, s logical.Storage, cfg *Config, in *flowStart) (oauthEndpoints, error) {
	full := in.Values.Merge(types.Values{"grant_type": in.Grant})
	types.OAuth2.ApplyDefaults(full)
	if err := types.OAuth2.Check(full); err != nil {
		return oauthEndpoints{}, invalidInput(err)
	}
	if err := b.checkUpstream(ctx, s, types.OAuth2, full); err != nil {
		return oauthEndpoints{}, err
	}
	ep, err := b.flowEndpoints(ctx, s, in.Values)
	if err != nil {
		return oauthEndpoints{}, err
	}
	var errs []error
	calls := map[string]string{"token_url": ep.TokenURL}
	if in.Grant == types.GrantAuthorizationCode && ep.AuthURL == "" {
		errs = append(errs, errors.New(`field "auth_url" is required for grant_type authorization_code when the provider preset has none`))
	}
	if in.Grant == types.GrantDeviceCode {
		if ep.DeviceURL == "" {
			errs = append(errs, errors.New(`field "device_url" is required for grant_type device_code when the provider preset has none`))
		}
		calls["device_url"] = ep.DeviceURL
	}
	for field, u := range calls {
		if u == "" {
			continue
		}
		if err := upstream.CheckURL(cfg.HostAllowed, u); err != nil {
			errs = append(errs, fmt.Errorf("%s of the provider preset: %w", field, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return oauthEndpoints{}, invalidInput(err)
	}
	existing, err := loadCredential(ctx, s, in.Name)
	if err != nil {
		return oauthEndpoints{}, err
	}
	switch {
	case in.Reconnect && existing == nil:
		return oauthEndpoints{}, newError(KindNotFound, "credential %q does not exist", in.Name)
	case in.Reconnect && existing.Type != types.OAuth2.Name:
		return oauthEndpoints{}, newError(KindInvalidInput, "credential %q is of type %s; only oauth2 credentials are reconnected", in.Name, existing.Type)
	case in.Reconnect && !existing.needsReconnect():
		return oauthEndpoints{}, newError(KindInvalidInput, "credential %q does not need reconnecting (its grant works); reconnect is for status needs_reconnect", in.Name)
	case !in.Reconnect && existing != nil && existing.needsReconnect():
		return oauthEndpoints{}, newError(KindDuplicate, "credential %q already exists and needs reconnecting: start the flow with creds/%s/reconnect", in.Name, in.Name)
	case !in.Reconnect && existing != nil:
		return oauthEndpoints{}, newError(KindDuplicate, "credential %q already exists; delete it or start the flow with another name", in.Name)
	}
	return ep, nil
}

// startRedirectFlow sets up an authorization code flow: a random state, a
// PKCE verifier, and the URL to send the user to.
func startRedirectFlow(ep oauthEndpoints, f *flow, in *flowStart) (map[string]any, string, error) {
	state, err := randomState()
	if err != nil {
		return nil, "", err
	}
	var opts []oauth2.AuthCodeOption
	if ep.PKCE {
		f.Verifier = oauth2.GenerateVerifier()
		opts = append(opts, oauth2.S256ChallengeOption(f.Verifier))
	}
	for k, v := range in.AuthParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	f.RedirectURI = in.RedirectURI
	f.StateHash = stateHash(state)
	authURL := ep.oauth2Config(f.Values, f.RedirectURI).AuthCodeURL(state, opts...)
	return map[string]any{"auth_url": authURL, "redirect_uri": f.RedirectURI}, f.StateHash, nil
}

// startDeviceFlow requests a device code; the flow ends when the device
// code does, or at flow_ttl if that comes first.
func (b *backend) startDeviceFlow(ctx context.Context, cfg *Config, ep oauthEndpoints, f *flow) (map[string]any, error) {
	da, err := b.startDevice(ctx, cfg, ep, f.Values)
	if err != nil {
		return nil, err
	}
	f.DeviceCode, f.UserCode = da.DeviceCode, da.UserCode
	f.VerificationURI, f.VerificationURIComplete = da.VerificationURI, da.VerificationURIComplete
	f.Interval = int(da.Interval)
	if f.Interval <= 0 || f.Interval > 3600 {
		f.Interval = defaultDeviceInterval
	}
	f.NextPollAt = f.CreatedAt.Add(time.Duration(f.Interval) * time.Second)
	if !da.Expiry.IsZero() {
		if codeEnds := f.CreatedAt.Add(time.Until(da.Expiry)); codeEnds.Before(f.ExpiresAt) {
			f.ExpiresAt = codeEnds
		}
	}
	return map[string]any{}, nil
}

// redeem completes the flow id, whose state was just spent, under its lock.
func (b *backend) redeem(ctx context.Context, s logical.Storage, id, code, providerError string) (*flow, error) {
	lock := flowLock(id)
	lock.Lock()
	defer lock.Unlock()
	f, err := loadFlow(ctx, s, id)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, newError(KindInvalidCallback, "the state is unknown or was already used")
	}
	if err := b.redeemCode(ctx, s, f, code, providerError); err != nil {
		return nil, err
	}
	return f, nil
}
