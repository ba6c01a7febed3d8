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
	// minSigningSecret is the floor of every HMAC key the engine signs
	// requests with (webhook_secret, notify_secret), in characters.
	minSigningSecret = 16
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
