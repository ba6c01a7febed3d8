package nebula

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/types"
)

// Rotation webhooks. The engine POSTs a JSON request to the credential's
// webhook_url:
//
//	{"credential": "<name>", "type": "<type>", "version": <current version>,
//	 "fields": ["<secret field>", ...], "timestamp": <unix seconds>}
//
// with headers X-Nebula-Timestamp (the same unix seconds) and
// X-Nebula-Signature: "sha256=" + hex(HMAC-SHA256(webhook_secret,
// timestamp + "." + body)). The webhook answers 200 with a JSON object
// holding the new values of the type's secret fields (bearer may add
// expires_at), e.g. {"api_key": "..."}.
const (
	webhookTimeout     = 10 * time.Second
	webhookMaxResponse = 64 << 10
	webhookSecretKey   = "webhook" // secret/<name>/webhook
	minWebhookSecret   = 16
)

// webhookSecret is the HMAC key of a credential's webhook, stored
// seal-wrapped.
type webhookSecret struct {
	Secret string `json:"secret"`
}

func webhookStorageKey(name string) string { return secretPrefix + name + "/" + webhookSecretKey }

// signWebhook computes the X-Nebula-Signature value.
func signWebhook(secret string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "%d.", timestamp)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// callWebhook fetches new secret values from the credential's webhook.
func (b *backend) callWebhook(ctx context.Context, s logical.Storage, cfg *Config, c *credential, t *types.Type) (types.Values, error) {
	fail := func(format string, args ...any) error {
		return newError(KindRotationFailed, "rotation webhook of %q: "+format, append([]any{c.Name}, args...)...)
	}
	entry, err := s.Get(ctx, webhookStorageKey(c.Name))
	if err != nil {
		return nil, storageError("reading the webhook secret", err)
	}
	var ws webhookSecret
	if entry == nil {
		return nil, fail("no webhook secret is stored")
	}
	if err := entry.DecodeJSON(&ws); err != nil {
		return nil, storageError("decoding the webhook secret", err)
	}
	if err := upstream.CheckURL(cfg.HostAllowed, c.Rotation.WebhookURL); err != nil {
		return nil, fail("%v", err)
	}

	now := b.now().Unix()
	body, err := json.Marshal(map[string]any{
		"credential": c.Name, "type": t.Name, "version": c.Version,
		"fields": t.SecretFields(), "timestamp": now,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.webhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Rotation.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return nil, fail("invalid URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Nebula-Timestamp", strconv.FormatInt(now, 10))
	req.Header.Set("X-Nebula-Signature", signWebhook(ws.Secret, now, body))
	resp, err := b.upstream(cfg).HTTPClient().Do(req)
	if err != nil {
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() || errors.Is(err, context.DeadlineExceeded) {
			return nil, fail("timed out after %s", b.webhookTimeout)
		}
		var ue *upstream.Error
		if errors.As(err, &ue) {
			return nil, fail("%v", ue)
		}
		return nil, fail("unreachable")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fail("answered %d", resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, webhookMaxResponse+1))
	if err != nil {
		return nil, fail("answer could not be read")
	}
	if len(raw) > webhookMaxResponse {
		return nil, fail("answer is larger than %d bytes", webhookMaxResponse)
	}
	return parseWebhookAnswer(t, raw, fail)
}

// parseWebhookAnswer checks that the answer is a JSON object of the type's
// secret fields (bearer: and expires_at), all strings, the secret ones all
// present. Messages name fields, never values.
func parseWebhookAnswer(t *types.Type, raw []byte, fail func(string, ...any) error) (types.Values, error) {
	var answer map[string]any
	if err := json.Unmarshal(raw, &answer); err != nil || answer == nil {
		return nil, fail("answer is not a JSON object")
	}
	allowed := map[string]bool{}
	for _, name := range t.SecretFields() {
		allowed[name] = true
	}
	if t == types.Bearer {
		allowed["expires_at"] = true
	}
	values := types.Values{}
	for name, v := range answer {
		if !allowed[name] {
			return nil, fail("answer has field %q, which is not a secret field of %s", truncate(name, 40), t.Name)
		}
		str, ok := v.(string)
		if !ok {
			return nil, fail("answer field %q is not a string", truncate(name, 40))
		}
		values[name] = str
	}
	for _, f := range t.Fields {
		if f.Secret && f.Required && values.String(f.Name) == "" {
			return nil, fail("answer lacks %q", f.Name)
		}
	}
	if err := t.CheckInput(values); err != nil {
		return nil, fail("answer is not valid: %s", joinedMessage(err))
	}
	return values, nil
}

// revokeTokens revokes a retired oauth2 version's tokens where the
// credential (or its provider) has a revocation endpoint. Failures are
// logged; the version is retired either way. The caller holds the
// credential's write lock.
//
// Nothing a live version (the current one, a previous one still served in
// its grace period, a token held in memory for one) still uses is revoked:
// providers that do not rotate refresh tokens give every version the same
// refresh token. When the retired version's refresh token is live, its
// access token is kept too, because RFC 7009 section 2.1 lets a server
// revoke the whole grant when one of its access tokens is revoked (Google
// does); that access token lapses at its expiry, as after any refresh.
//
// What to revoke is decided here, under the lock; the requests are made
// after the caller releases it when the context carries a revocation queue
// (deferRevocations), else at once.
func (b *backend) revokeTokens(ctx context.Context, s logical.Storage, c *credential, sv *secretVersion) {
	v := sv.upstreamValues(c) // the endpoints the credential was written with
	p, err := b.resolveProvider(ctx, s, v)
	if err != nil {
		return
	}
	revocationURL := firstNonEmpty(v.String("revocation_url"), p.RevocationURL)
	if revocationURL == "" || sv.Token == nil {
		return
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return
	}
	live, err := b.liveTokens(ctx, s, c, sv.ID)
	if err != nil {
		b.logger.Warn("not revoking a retired version's tokens: the live versions could not be read", "credential", c.Name, "error", err)
		return
	}
	refresh := sv.refreshToken()
	if refresh != "" && live[refresh] {
		b.logger.Info("not revoking a retired version's tokens: a live version uses the same grant", "credential", c.Name, "version", sv.Version)
		return
	}
	type revocation struct{ token, hint string }
	var todo []revocation
	if refresh != "" {
		todo = append(todo, revocation{refresh, "refresh_token"})
	}
	if at := sv.Token.AccessToken; at != "" && !live[at] {
		todo = append(todo, revocation{at, "access_token"})
	}
	if len(todo) == 0 {
		return
	}
	req := upstream.Request{ClientID: v.String("client_id"), ClientSecret: v.String("client_secret"),
		AuthStyle: firstNonEmpty(v.String("auth_style"), p.AuthStyle)}
	if err := signedJWTRequest(v, &req); err != nil {
		b.logger.Warn("could not revoke a retired version's tokens", "credential", c.Name, "error", err)
		return
	}
	client := b.upstream(cfg)
	name := c.Name
	run := func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*upstream.DefaultTimeout)
		defer cancel()
		for _, r := range todo {
			if err := client.Revoke(ctx, req, revocationURL, r.token, r.hint); err != nil {
				b.logger.Warn("could not revoke a retired token", "credential", name, "token_type_hint", r.hint, "error", err)
			}
		}
	}
	if q, ok := ctx.Value(revocationQueueKey{}).(*revocationQueue); ok {
		q.add(run)
		return
	}
	run(ctx)
}

// liveTokens returns the tokens (access token, and the refresh token it
// refreshes with) of every version of c that is still served, other than
// the one with id except, and those held in memory for c.
func (b *backend) liveTokens(ctx context.Context, s logical.Storage, c *credential, except string) (map[string]bool, error) {
	live := map[string]bool{}
	ids := []string{c.ID}
	if c.Previous != nil {
		ids = append(ids, c.Previous.ID)
	}
	for _, id := range ids {
		if id == except {
			continue
		}
		sv, err := loadSecret(ctx, s, c.Name, id)
		if err != nil {
			return nil, err
		}
		live[sv.refreshToken()] = true
		if sv.Token != nil {
			live[sv.Token.AccessToken] = true
		}
	}
	b.held.liveTokens(c.Name, live)
	delete(live, "")
	return live, nil
}

// refreshToken is the refresh token a version refreshes with: the latest
// issued one, else the supplied refresh_token field (requestToken's rule).
func (sv *secretVersion) refreshToken() string {
	if sv.Token != nil && sv.Token.RefreshToken != "" {
		return sv.Token.RefreshToken
	}
	return sv.Fields.String("refresh_token")
}

// revocationQueue collects revocations decided under a credential's lock,
// to be made once the lock is released (no network call under a lock
// shard that other credentials share).
type revocationQueue struct {
	mu   sync.Mutex
	jobs []func(context.Context) // guarded by mu
}

type revocationQueueKey struct{}

func (q *revocationQueue) add(job func(context.Context)) {
	q.mu.Lock()
	q.jobs = append(q.jobs, job)
	q.mu.Unlock()
}

// deferRevocations returns a context under which revokeTokens queues its
// requests, and the function that makes them; call it after releasing the
// credential's lock:
//
//	ctx, revoke := b.deferRevocations(ctx)
//	defer revoke()
//	lock.Lock()
//	defer lock.Unlock()
func (b *backend) deferRevocations(ctx context.Context) (context.Context, func()) {
	q := &revocationQueue{}
	return context.WithValue(ctx, revocationQueueKey{}, q), func() {
		q.mu.Lock()
		jobs := q.jobs
		q.jobs = nil
		q.mu.Unlock()
		for _, job := range jobs {
			job(ctx)
		}
	}
}
