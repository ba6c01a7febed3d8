package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	testAccess = "sk-live-SECRETVALUE-1234"
	testHeader = "Bearer sk-live-SECRETVALUE-1234"
)

func testToken(query bool) *Token {
	w := tokenWire{
		AccessToken: testAccess, TokenType: "Bearer", HeaderName: "Authorization", HeaderValue: testHeader,
		ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), TTL: 3000, RotationPeriod: 3600, Version: 3,
	}
	if query {
		w.HeaderName, w.QueryParam, w.TokenType, w.HeaderValue = "", "api_key", "api_key", testAccess
	}
	return w.token("stripe")
}

// requireRedacted fails when out shows any part of the secret.
func requireRedacted(tb testing.TB, what, out string) {
	tb.Helper()
	for _, s := range []string{"SECRETVALUE", testAccess, testHeader} {
		if strings.Contains(out, s) {
			tb.Errorf("%s shows the secret: %s", what, out)
			return
		}
	}
}

// TestTokenNeverPrintsSecret: every fmt verb, encoding/json and log/slog
// show a Token redacted, alone and nested, by value and by pointer.
func TestTokenNeverPrintsSecret(t *testing.T) {
	tok := testToken(false)
	type exported struct{ Tok Token }
	type hidden struct{ tok Token }
	type hiddenPtr struct{ tok *Token }
	values := map[string]any{
		"value":             *tok,
		"pointer":           tok,
		"exported field":    exported{*tok},
		"unexported field":  hidden{*tok},
		"unexported ptr":    hiddenPtr{tok},
		"slice":             []Token{*tok},
		"slice of pointers": []*Token{tok},
		"map":               map[string]Token{"a": *tok},
		"interface slice":   []any{tok, *tok},
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T", "%10.3s", "%-40v", "%p"}
	for name, v := range values {
		for _, verb := range verbs {
			requireRedacted(t, fmt.Sprintf("%s with %s", name, verb), fmt.Sprintf(verb, v))
		}
		requireRedacted(t, name+" with Sprint", fmt.Sprint(v))
		requireRedacted(t, name+" with Sprintln", fmt.Sprintln(v))

		raw, err := json.Marshal(v)
		if err != nil {
			t.Errorf("json.Marshal(%s): %v", name, err)
		}
		requireRedacted(t, name+" as JSON", string(raw))

		for _, h := range []func(*bytes.Buffer) slog.Handler{
			func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
			func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		} {
			var buf bytes.Buffer
			slog.New(h(&buf)).Info("token", "tok", v, slog.Any("again", v))
			requireRedacted(t, name+" through slog", buf.String())
		}
	}

	var buf bytes.Buffer
	log.New(&buf, "", 0).Printf("%v %+v %#v", tok, tok, *tok)
	requireRedacted(t, "log.Printf", buf.String())
	requireRedacted(t, "an error wrapping it", fmt.Errorf("using %v: %w", tok, errors.New("x")).Error())

	// The redacted forms still say what the token is.
	if s := tok.String(); !strings.Contains(s, Redacted) || !strings.Contains(s, "Authorization") || !strings.Contains(s, "stripe") {
		t.Errorf("String() = %q; want the credential, header name and %s", s, Redacted)
	}
	raw, _ := json.Marshal(tok)
	var back map[string]any
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if back["access_token"] != Redacted || back["header_value"] != Redacted || back["header_name"] != "Authorization" || back["version"] != 3.0 {
		t.Errorf("JSON form %s: want access_token and header_value redacted, the rest kept", raw)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("t", "tok", tok)
	if !strings.Contains(logged.String(), `"value":"[REDACTED]"`) || !strings.Contains(logged.String(), `"credential":"stripe"`) {
		t.Errorf("slog form %s: want a group with the value redacted", logged.String())
	}

	// The accessors answer the secret.
	if tok.Value() != testAccess || tok.HeaderValue() != testHeader {
		t.Errorf("Value() / HeaderValue() do not answer the secret")
	}
}

func TestEmptyTokenShowsNoRedaction(t *testing.T) {
	var tok Token
	if strings.Contains(tok.String(), Redacted) {
		t.Errorf("an empty token shows %s: %s", Redacted, tok.String())
	}
	if tok.Value() != "" || tok.HeaderValue() != "" {
		t.Error("an empty token answers a value")
	}
	if err := tok.Apply(&http.Request{Header: http.Header{}}); err == nil {
		t.Error("Apply of an empty token succeeded")
	}
	var nilTok *Token
	if nilTok.Value() != "" || nilTok.Expired(time.Now()) {
		t.Error("a nil token answers a value or is expired")
	}
}

func TestSecretNeverPrints(t *testing.T) {
	in := CreateInput{APIKey: &APIKey{Key: NewSecret(testAccess)}, Description: "d"}
	type hidden struct{ in CreateInput }
	type hiddenPtr struct{ k *APIKey }
	values := map[string]any{
		"CreateInput": in, "*CreateInput": &in, "APIKey": *in.APIKey, "*APIKey": in.APIKey,
		"unexported field": hidden{in}, "unexported pointer": hiddenPtr{in.APIKey},
		"FlowInput":      FlowInput{ClientSecret: NewSecret(testAccess)},
		"RotationPolicy": &RotationPolicy{WebhookSecret: NewSecret(testAccess)},
	}
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%t"} {
			requireRedacted(t, name+" with "+verb, fmt.Sprintf(verb, v))
		}
	}
	raw, _ := json.Marshal(in)
	requireRedacted(t, "CreateInput as JSON", string(raw))
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("in", "key", in.APIKey.Key, "input", in)
	requireRedacted(t, "CreateInput through slog", buf.String())
	if fmt.Sprint(NewSecret("")) != "" || !NewSecret("").IsZero() || !(Secret{}).IsZero() || (Secret{}).Value() != "" {
		t.Error("an empty Secret is not empty")
	}
	if s := NewSecret(testAccess); s.Value() != testAccess || s.IsZero() || fmt.Sprint(s) != Redacted {
		t.Error("a Secret does not answer its value, or prints it")
	}
	// The value itself is what the client sends.
	body, err := in.body()
	if err != nil || body["api_key"] != testAccess {
		t.Errorf("request body = %v, %v; want the api_key in clear", body["api_key"] == testAccess, err)
	}
}

func TestTokenApply(t *testing.T) {
	t.Run("header", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/v1/x?a=b", nil)
		if err := testToken(false).Apply(req); err != nil {
			t.Fatal(err)
		}
		if got := req.Header.Get("Authorization"); got != testHeader {
			t.Errorf("Authorization = %q, want %q", got, testHeader)
		}
		if req.URL.RawQuery != "a=b" {
			t.Errorf("query changed to %q", req.URL.RawQuery)
		}
	})
	t.Run("query", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/v1/x?a=b", nil)
		if err := testToken(true).Apply(req); err != nil {
			t.Fatal(err)
		}
		if got := req.URL.Query().Get("api_key"); got != testAccess {
			t.Errorf("api_key = %q, want the key", got)
		}
		if req.URL.Query().Get("a") != "b" || len(req.Header) != 0 {
			t.Errorf("request changed beyond the query parameter: %v %v", req.URL, req.Header)
		}
	})
	t.Run("nil request", func(t *testing.T) {
		if err := testToken(false).Apply(nil); err == nil {
			t.Error("Apply(nil) succeeded")
		}
	})
}

func TestTokenExpired(t *testing.T) {
	tok := testToken(false)
	if tok.Expired(tok.ExpiresAt.Add(-time.Second)) || !tok.Expired(tok.ExpiresAt) {
		t.Error("Expired is wrong around ExpiresAt")
	}
	tok.ExpiresAt = time.Time{}
	if tok.Expired(time.Now()) {
		t.Error("a token without expiry is expired")
	}
}

func TestParseMessage(t *testing.T) {
	tests := []struct {
		msg      string
		kind     Kind
		code     string
		text     string
		forState int
	}{
		{"not_found: credential \"x\" does not exist", NotFound, "not_found", "credential \"x\" does not exist", 0},
		{"1 error occurred:\n\t* invalid_input: name is bad\n\n", InvalidInput, "invalid_input", "name is bad", 0},
		{"storage_error: reading credential: boom", Storage, "storage_error", "reading credential: boom", 0},
		{"permission denied", Unknown, "", "permission denied", 0},
		{"notacode: x", Unknown, "", "notacode: x", 0},
		{"", Unknown, "", "", 0},
	}
	for _, tt := range tests {
		k, code, text := parseMessage(tt.msg)
		if k != tt.kind || code != tt.code || text != tt.text {
			t.Errorf("parseMessage(%q) = %v, %q, %q; want %v, %q, %q", tt.msg, k, code, text, tt.kind, tt.code, tt.text)
		}
	}
	for k := InvalidInput; int(k) < len(kindInfo); k++ {
		if got, _, _ := parseMessage(k.String() + ": m"); got != k {
			t.Errorf("code %s parses as %v", k, got)
		}
		if k.Status() == 0 {
			t.Errorf("kind %v has no status", k)
		}
	}
	if Kind(99).String() != "Kind(99)" || Kind(99).Status() != 0 {
		t.Error("an invalid kind is not reported as such")
	}
}

func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{"not_found: x", "1 error occurred:\n\t* expired: y\n\n", "", ":", "duplicate:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		k, code, _ := parseMessage(msg)
		if (k == Unknown) != (code == "") {
			t.Errorf("parseMessage(%q): kind %v with code %q", msg, k, code)
		}
		if code != "" && code != k.String() {
			t.Errorf("parseMessage(%q): code %q for kind %v", msg, code, k)
		}
	})
}
