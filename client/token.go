package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Redacted is what fmt, encoding/json and log/slog show in place of a
// secret value.
const Redacted = "[REDACTED]"

// Secret is a secret input value (an API key, a password, a client
// secret). fmt (any verb, also nested in other values), encoding/json and
// log/slog show it as [REDACTED], or as "" when it is empty. The zero
// value is the empty secret.
type Secret struct {
	// value answers the secret; a closure, so that nothing printing values
	// by reflection can reach it (see Token).
	value func() string
}

// NewSecret wraps a secret value.
func NewSecret(v string) Secret {
	if v == "" {
		return Secret{}
	}
	return Secret{value: func() string { return v }}
}

// Value is the secret itself.
func (s Secret) Value() string {
	if s.value == nil {
		return ""
	}
	return s.value()
}

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.Value() == "" }

// String implements fmt.Stringer with the value redacted.
func (s Secret) String() string {
	if s.IsZero() {
		return ""
	}
	return Redacted
}

// GoString implements fmt.GoStringer with the value redacted.
func (s Secret) GoString() string { return "client.Secret(" + strconv.Quote(s.String()) + ")" }

// Format implements fmt.Formatter: every verb shows the redacted form.
func (s Secret) Format(f fmt.State, verb rune) { formatRedacted(f, verb, s.String(), s.GoString()) }

// MarshalJSON implements json.Marshaler with the value redacted.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// LogValue implements slog.LogValuer with the value redacted.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// formatRedacted writes the form of a redacting value for a fmt verb:
// the Go syntax for %#v, a quoted string for %q, the plain form otherwise.
func formatRedacted(f fmt.State, verb rune, plain, goSyntax string) {
	switch {
	case verb == 'v' && f.Flag('#'):
		_, _ = fmt.Fprint(f, goSyntax)
	case verb == 'q':
		_, _ = fmt.Fprint(f, strconv.Quote(plain))
	default:
		_, _ = fmt.Fprint(f, plain)
	}
}

// CallerContext says who uses a token; the engine records it in its audit
// trail. Fields are optional.
type CallerContext struct {
	// ExecutionID is the workflow execution using the token.
	ExecutionID string
	// WorkflowID is the workflow using the token.
	WorkflowID string
	// UserID is the user on whose behalf the token is used.
	UserID string
}

// tokenSecret holds a token's secret values.
type tokenSecret struct {
	accessToken string
	headerValue string
}

// Token is a ready-to-use token of a credential, as the engine's token/
// path answers it. Its secret never shows through fmt (any verb),
// encoding/json or log/slog; read it with Value, HeaderValue or Apply.
type Token struct {
	// secret answers the secret values. It is a closure so that nothing
	// that prints values by reflection (fmt on a Token nested where it
	// cannot call methods, spew, test diffs) can reach them.
	secret func() tokenSecret

	// Credential is the name of the credential the token belongs to.
	Credential string
	// Type is the token type: "Bearer", "Basic" or "api_key" (or what the
	// OAuth2 issuer said).
	Type string
	// HeaderName is the request header the token goes in, e.g.
	// "Authorization" or "X-API-Key"; empty when it goes in a query
	// parameter (QueryParam).
	HeaderName string
	// QueryParam is the query parameter an API key placed in the query
	// goes in; empty for header placement.
	QueryParam string
	// ExpiresAt is when the token stops working; zero means it does not
	// expire.
	ExpiresAt time.Time
	// TTL is how long until the engine serves a new token (for expiring
	// tokens); zero when the token does not expire.
	TTL time.Duration
	// RotationPeriod is the token's lifetime (for expiring tokens); zero
	// when the token does not expire.
	RotationPeriod time.Duration
	// Version is the credential version the token belongs to.
	Version int
}

// Value is the secret itself: the API key, the password of basic auth, or
// the bearer or access token.
func (t *Token) Value() string {
	if t == nil || t.secret == nil {
		return ""
	}
	return t.secret().accessToken
}

// HeaderValue is the value of the HeaderName header, e.g. "Bearer abc",
// "Basic YWxp..." or the raw API key.
func (t *Token) HeaderValue() string {
	if t == nil || t.secret == nil {
		return ""
	}
	return t.secret().headerValue
}

// Apply puts the token on an outgoing request: the HeaderName header, or
// the QueryParam query parameter for API keys placed in the query.
func (t *Token) Apply(r *http.Request) error {
	switch {
	case r == nil:
		return errors.New("nebula: Apply: nil request")
	case t == nil || t.secret == nil:
		return errors.New("nebula: Apply: empty token")
	case t.QueryParam != "":
		if r.URL == nil {
			return errors.New("nebula: Apply: request has no URL")
		}
		q := r.URL.Query()
		q.Set(t.QueryParam, t.secret().accessToken)
		r.URL.RawQuery = q.Encode()
	case t.HeaderName != "":
		if r.Header == nil {
			r.Header = http.Header{}
		}
		r.Header.Set(t.HeaderName, t.secret().headerValue)
	default:
		return errors.New("nebula: Apply: the token names neither a header nor a query parameter")
	}
	return nil
}

// Expired reports whether the token has expired at now.
func (t *Token) Expired(now time.Time) bool {
	return t != nil && !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)
}

// redactedValue is Redacted, or "" when the token holds no value.
func (t Token) redactedValue() string {
	if t.secret == nil {
		return ""
	}
	if s := t.secret(); s.accessToken == "" && s.headerValue == "" {
		return ""
	}
	return Redacted
}

// String implements fmt.Stringer; the secret is redacted.
func (t Token) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Token{Credential: %s, Type: %s", t.Credential, t.Type)
	if t.HeaderName != "" {
		fmt.Fprintf(&b, ", HeaderName: %s", t.HeaderName)
	}
	if t.QueryParam != "" {
		fmt.Fprintf(&b, ", QueryParam: %s", t.QueryParam)
	}
	fmt.Fprintf(&b, ", Value: %s, Version: %d", t.redactedValue(), t.Version)
	if !t.ExpiresAt.IsZero() {
		fmt.Fprintf(&b, ", ExpiresAt: %s", t.ExpiresAt.UTC().Format(time.RFC3339))
	}
	b.WriteString("}")
	return b.String()
}

// GoString implements fmt.GoStringer; the secret is redacted.
func (t Token) GoString() string {
	return fmt.Sprintf("client.Token{Credential:%q, Type:%q, HeaderName:%q, QueryParam:%q, Value:%q, ExpiresAt:%q, TTL:%d, RotationPeriod:%d, Version:%d}",
		t.Credential, t.Type, t.HeaderName, t.QueryParam, t.redactedValue(), t.ExpiresAt.UTC().Format(time.RFC3339), t.TTL, t.RotationPeriod, t.Version)
}

// Format implements fmt.Formatter, so that every verb (%v, %+v, %#v, %s,
// %q, %x, ...) shows the redacted form.
func (t Token) Format(f fmt.State, verb rune) { formatRedacted(f, verb, t.String(), t.GoString()) }

// tokenJSON is the JSON form of a Token, in the engine's field names.
type tokenJSON struct {
	Credential     string     `json:"credential,omitempty"`
	AccessToken    string     `json:"access_token"`
	TokenType      string     `json:"token_type"`
	HeaderName     string     `json:"header_name,omitempty"`
	HeaderValue    string     `json:"header_value"`
	QueryParam     string     `json:"query_param,omitempty"`
	ExpiresAt      *time.Time `json:"expires_at"`
	TTL            int64      `json:"ttl,omitempty"`
	RotationPeriod int64      `json:"rotation_period,omitempty"`
	Version        int        `json:"version"`
}

// MarshalJSON implements json.Marshaler; access_token and header_value are
// redacted.
func (t Token) MarshalJSON() ([]byte, error) {
	j := tokenJSON{
		Credential: t.Credential, AccessToken: t.redactedValue(), TokenType: t.Type,
		HeaderName: t.HeaderName, HeaderValue: t.redactedValue(), QueryParam: t.QueryParam,
		TTL: int64(t.TTL / time.Second), RotationPeriod: int64(t.RotationPeriod / time.Second), Version: t.Version,
	}
	if !t.ExpiresAt.IsZero() {
		exp := t.ExpiresAt
		j.ExpiresAt = &exp
	}
	return json.Marshal(j)
}

// LogValue implements slog.LogValuer; the secret is redacted.
func (t Token) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("credential", t.Credential),
		slog.String("type", t.Type),
		slog.String("value", t.redactedValue()),
		slog.Int("version", t.Version),
	}
	if t.HeaderName != "" {
		attrs = append(attrs, slog.String("header_name", t.HeaderName))
	}
	if t.QueryParam != "" {
		attrs = append(attrs, slog.String("query_param", t.QueryParam))
	}
	if !t.ExpiresAt.IsZero() {
		attrs = append(attrs, slog.Time("expires_at", t.ExpiresAt))
	}
	return slog.GroupValue(attrs...)
}

// tokenWire is the engine's token response.
type tokenWire struct {
	AccessToken    string    `json:"access_token"`
	TokenType      string    `json:"token_type"`
	HeaderName     string    `json:"header_name"`
	HeaderValue    string    `json:"header_value"`
	QueryParam     string    `json:"query_param"`
	ExpiresAt      time.Time `json:"expires_at"`
	TTL            int64     `json:"ttl"`
	RotationPeriod int64     `json:"rotation_period"`
	Version        int       `json:"version"`
}

func (w *tokenWire) token(name string) *Token {
	secret := tokenSecret{accessToken: w.AccessToken, headerValue: w.HeaderValue}
	return &Token{
		secret:         func() tokenSecret { return secret },
		Credential:     name,
		Type:           w.TokenType,
		HeaderName:     w.HeaderName,
		QueryParam:     w.QueryParam,
		ExpiresAt:      w.ExpiresAt,
		TTL:            time.Duration(w.TTL) * time.Second,
		RotationPeriod: time.Duration(w.RotationPeriod) * time.Second,
		Version:        w.Version,
	}
}

// GetToken returns the credential's ready-to-use token; the engine obtains
// or refreshes OAuth2 tokens as needed. With caller not nil, the engine
// records the caller context in its audit trail.
func (c *Client) GetToken(ctx context.Context, name string, caller *CallerContext) (*Token, error) {
	path, err := c.pathOf("token", name)
	if err != nil {
		return nil, err
	}
	var w tokenWire
	if caller == nil {
		_, err = c.read(ctx, path, nil, &w)
	} else {
		body := map[string]any{}
		setString(body, "execution_id", caller.ExecutionID)
		setString(body, "workflow_id", caller.WorkflowID)
		setString(body, "user_id", caller.UserID)
		_, err = c.write(ctx, replayable, path, body, &w)
	}
	if err != nil {
		return nil, err
	}
	return w.token(name), nil
}

// GetPreviousToken returns the token of the version a blue/green rotation
// keeps readable during its grace period. It answers ErrNotFound when
// there is none.
func (c *Client) GetPreviousToken(ctx context.Context, name string) (*Token, error) {
	path, err := c.pathOf("token", name)
	if err != nil {
		return nil, err
	}
	var w tokenWire
	if _, err := c.read(ctx, path, map[string][]string{"version": {"previous"}}, &w); err != nil {
		return nil, err
	}
	return w.token(name), nil
}

// Refresh obtains a new token from the credential's upstream now (OAuth2
// credentials only; others answer ErrRefreshNotSupported).
func (c *Client) Refresh(ctx context.Context, name string) (*Token, error) {
	path, err := c.pathOf("refresh", name)
	if err != nil {
		return nil, err
	}
	var w tokenWire
	if _, err := c.write(ctx, once, path, nil, &w); err != nil {
		return nil, err
	}
	return w.token(name), nil
}

// RefreshResult is the outcome of RefreshDue.
type RefreshResult struct {
	// Refreshed names the credentials whose tokens were refreshed.
	Refreshed []string
	// Failed lists the credentials whose refresh failed, in name order.
	Failed []RefreshFailure
}

// RefreshFailure is one failed refresh of RefreshDue.
type RefreshFailure struct {
	// Credential is the credential's name.
	Credential string
	// Err is the engine's error, an *Error.
	Err error
}

// RefreshDue refreshes every expired or expiring token that can be
// refreshed, as the engine's background refresh does.
func (c *Client) RefreshDue(ctx context.Context) (*RefreshResult, error) {
	var w struct {
		Refreshed []string `json:"refreshed"`
		Failed    []struct {
			Name  string `json:"name"`
			Error string `json:"error"`
		} `json:"failed"`
	}
	if _, err := c.write(ctx, once, c.mount+"/refresh", nil, &w); err != nil {
		return nil, err
	}
	res := &RefreshResult{Refreshed: w.Refreshed}
	for _, f := range w.Failed {
		res.Failed = append(res.Failed, RefreshFailure{Credential: f.Name, Err: itemError(f.Error)})
	}
	return res, nil
}

// ClearCache drops every token the engine caches (on the Vault node that
// answers).
func (c *Client) ClearCache(ctx context.Context) error {
	return c.delete(ctx, c.mount+"/cache")
}

// ClearCacheEntry drops the credential's cached token.
func (c *Client) ClearCacheEntry(ctx context.Context, name string) error {
	path, err := c.pathOf("cache", name)
	if err != nil {
		return err
	}
	return c.delete(ctx, path)
}

// setString sets body[key] when v is not empty.
func setString(body map[string]any, key, v string) {
	if v != "" {
		body[key] = v
	}
}
