package client_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/client"
)

// TestCredentialLifecycle: create, get, list, update, token, delete of an
// api_key credential through a real Vault.
func TestCredentialLifecycle(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := testContext(t)
	name := newName("lifecycle")
	const key, key2 = "lifecycle-SECRET-1", "lifecycle-SECRET-2"

	created, err := c.Create(ctx, name, client.CreateInput{
		APIKey:      &client.APIKey{Key: client.NewSecret(key)},
		Description: "payments API",
		Tags:        []string{"team:payments", "env:test"},
		Metadata:    map[string]string{"owner": "alice"},
	})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if created.ID == "" || created.Name != name || created.Type != client.TypeAPIKey || created.Version != 1 ||
		created.Status != client.StatusActive || created.Description != "payments API" ||
		!slices.Equal(created.Tags, []string{"team:payments", "env:test"}) || created.Metadata["owner"] != "alice" ||
		created.CreatedAt.IsZero() || created.APIKey == nil || !created.APIKey.Key.IsZero() || created.APIKey.Placement != "header" ||
		created.OAuth2 != nil || created.Rotation == nil {
		t.Errorf("Create answered %+v (APIKey %+v)", created, created.APIKey)
	}

	got, err := c.Get(ctx, name)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.ID != created.ID || got.Version != 1 || got.Metadata["owner"] != "alice" || !got.APIKey.Key.IsZero() {
		t.Errorf("Get answered %+v, want what Create answered", got)
	}

	names, err := c.List(ctx)
	if err != nil || !slices.Contains(names, name) {
		t.Errorf("List = %v, %v; want it to hold %s", names, err, name)
	}

	desc := "payments API v2"
	updated, err := c.Update(ctx, name, client.UpdateInput{Description: &desc, Tags: []string{}})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if updated.Description != desc || len(updated.Tags) != 0 || updated.Version != 1 || updated.Metadata["owner"] != "alice" {
		t.Errorf("Update of description and tags answered %+v", updated)
	}
	updated, err = c.Update(ctx, name, client.UpdateInput{APIKey: &client.APIKey{Key: client.NewSecret(key2)}})
	if err != nil {
		t.Fatalf("Update with a new key: %v", err)
	}
	if updated.Version != 2 || updated.ID == created.ID {
		t.Errorf("a new key made version %d id %s; want version 2 with a new id", updated.Version, updated.ID)
	}

	tok, err := c.GetToken(ctx, name, nil)
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if tok.Value() != key2 || tok.HeaderValue() != key2 || tok.HeaderName != "X-API-Key" || tok.Type != "api_key" ||
		tok.Version != 2 || tok.Credential != name || !tok.ExpiresAt.IsZero() || tok.TTL != 0 {
		t.Errorf("GetToken answered %v", tok)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/charges", nil)
	if err := tok.Apply(req); err != nil || req.Header.Get("X-API-Key") != key2 {
		t.Errorf("Apply: %v; header %q", err, req.Header.Get("X-API-Key"))
	}
	for _, s := range []string{tok.String(), strings.Join([]string{tok.GoString()}, "")} {
		if strings.Contains(s, "SECRET") {
			t.Errorf("a real token prints its secret: %s", s)
		}
	}

	caller := &client.CallerContext{ExecutionID: newName("exec"), WorkflowID: "wf-billing", UserID: "alice"}
	if tok, err := c.GetToken(ctx, name, caller); err != nil || tok.Value() != key2 {
		t.Fatalf("GetToken with a caller context: %v", err)
	}
	page, err := c.AuditEvents(ctx, client.AuditFilter{Credential: name, Action: "read_token", Limit: 10})
	if err != nil {
		t.Fatalf("AuditEvents: %v", err)
	}
	if len(page.Events) != 2 || page.Events[0].ExecutionID != caller.ExecutionID || page.Events[0].WorkflowID != "wf-billing" ||
		page.Events[0].User != "alice" || !page.Events[0].Success || page.Events[0].Version != 2 {
		t.Errorf("read_token events = %+v; want two, the newest with the caller context", page.Events)
	}

	if err := c.Delete(ctx, name); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err = c.Get(ctx, name)
	requireKind(t, err, client.NotFound, client.ErrNotFound)
	_, err = c.GetToken(ctx, name, nil)
	requireKind(t, err, client.NotFound, client.ErrNotFound)
	_, err = c.Update(ctx, name, client.UpdateInput{Description: &desc})
	requireKind(t, err, client.NotFound, client.ErrNotFound)
	if err := c.Delete(ctx, name); err != nil {
		t.Errorf("deleting again: %v", err)
	}
	if names, err := c.List(ctx); err != nil || slices.Contains(names, name) {
		t.Errorf("List after delete = %v, %v", names, err)
	}
}

// TestTokenPlacements: the token of each static type, and where Apply puts
// it.
func TestTokenPlacements(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := testContext(t)
	expires := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	tests := []struct {
		name   string
		in     client.CreateInput
		header string
		value  string
		query  string
		check  func(*testing.T, *client.Token)
	}{
		{
			name: "basic_auth", in: client.CreateInput{BasicAuth: &client.BasicAuth{Username: "alice", Password: client.NewSecret("basic-SECRET")}},
			header: "Authorization", value: "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:basic-SECRET")),
		},
		{
			name: "bearer", in: client.CreateInput{Bearer: &client.Bearer{Token: client.NewSecret("bearer-SECRET"), ExpiresAt: expires}},
			header: "Authorization", value: "Bearer bearer-SECRET",
			check: func(t *testing.T, tok *client.Token) {
				if !tok.ExpiresAt.Equal(expires) || tok.TTL <= time.Hour || tok.RotationPeriod <= 0 || tok.Expired(time.Now()) {
					t.Errorf("bearer token expiry: %v ttl %v period %v; want %v", tok.ExpiresAt, tok.TTL, tok.RotationPeriod, expires)
				}
			},
		},
		{
			name: "api_key in query", in: client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret("query-SECRET"), Placement: "query", ParamName: "key"}},
			query: "key", value: "query-SECRET",
		},
		{
			name: "generated", in: client.CreateInput{Type: client.TypeGenerated, Generated: &client.Generated{Length: 40, Charset: "hex"}},
			check: func(t *testing.T, tok *client.Token) {
				if tok.Type != "secret" || tok.HeaderName != "" || tok.HeaderValue() != tok.Value() {
					t.Errorf("generated token %v", tok)
				}
				if len(tok.Value()) != 40 || strings.Trim(tok.Value(), "0123456789abcdef") != "" {
					t.Errorf("generated secret has %d characters, want 40 hex digits", len(tok.Value()))
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := newName("placement")
			if _, err := c.Create(ctx, name, tt.in); err != nil {
				t.Fatalf("Create: %v", err)
			}
			tok, err := c.GetToken(ctx, name, nil)
			if err != nil {
				t.Fatalf("GetToken: %v", err)
			}
			req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/x", nil)
			err = tok.Apply(req)
			if placed := tt.header != "" || tt.query != ""; placed != (err == nil) {
				t.Errorf("Apply = %v; want an error only for a token without a header or query parameter", err)
			}
			switch {
			case tt.header != "":
				if tok.HeaderName != tt.header || tok.HeaderValue() != tt.value || req.Header.Get(tt.header) != tt.value {
					t.Errorf("token %v puts %q in %s", tok, req.Header.Get(tt.header), tt.header)
				}
			case tt.query != "":
				if tok.QueryParam != tt.query || tok.Value() != tt.value || req.URL.Query().Get(tt.query) != tt.value || len(req.Header) != 0 {
					t.Errorf("token %v puts %q in ?%s (headers %v)", tok, req.URL.Query().Get(tt.query), tt.query, req.Header)
				}
			}
			if tt.check != nil {
				tt.check(t, tok)
			}
			if strings.Contains(tok.String(), "SECRET") {
				t.Errorf("token prints its secret: %s", tok)
			}
		})
	}
}

// TestIdempotentCreate: the same idempotency key with the same input
// answers the same id; with other input, duplicate.
func TestIdempotentCreate(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := testContext(t)
	name, key := newName("idem"), newName("idem-key")
	in := client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret("idem-SECRET")}, IdempotencyKey: key}
	first, err := c.Create(ctx, name, in)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Create(ctx, name, in)
	if err != nil || again.ID != first.ID || again.Version != 1 {
		t.Fatalf("repeated Create = %+v, %v; want id %s", again, err, first.ID)
	}
	in.APIKey = &client.APIKey{Key: client.NewSecret("idem-OTHER")}
	_, err = c.Create(ctx, name, in)
	requireKind(t, err, client.Duplicate, client.ErrDuplicate)
	if tok, err := c.GetToken(ctx, name, nil); err != nil || tok.Value() != "idem-SECRET" {
		t.Errorf("after the conflict the token is %v, %v; want the first key", tok, err)
	}
}

// TestEngineErrors: each error kind the engine can be brought to answer
// through a real Vault arrives as the typed error.
func TestEngineErrors(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := testContext(t)

	t.Run("invalid_input", func(t *testing.T) {
		_, err := c.Create(ctx, "bad name!", client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret("x")}})
		requireKind(t, err, client.InvalidInput, client.ErrInvalidInput)
		_, err = c.Create(ctx, newName("no-key"), client.CreateInput{Type: client.TypeAPIKey})
		e := requireKind(t, err, client.InvalidInput, client.ErrInvalidInput)
		if !strings.Contains(e.Message, "api_key") {
			t.Errorf("message %q does not name the missing field", e.Message)
		}
		_, err = c.AuditEvents(ctx, client.AuditFilter{Limit: -1})
		requireKind(t, err, client.InvalidInput, client.ErrInvalidInput)
	})
	t.Run("invalid_input found by the client", func(t *testing.T) {
		for _, in := range []client.CreateInput{
			{},
			{APIKey: &client.APIKey{Key: client.NewSecret("x")}, Bearer: &client.Bearer{Token: client.NewSecret("y")}},
			{Type: client.TypeOAuth2, APIKey: &client.APIKey{Key: client.NewSecret("x")}},
		} {
			_, err := c.Create(ctx, newName("client-side"), in)
			var e *client.Error
			if !errors.As(err, &e) || e.Kind != client.InvalidInput || e.Status != 0 {
				t.Errorf("Create(%+v) = %v; want a client-side invalid_input", in, err)
			}
		}
		for _, bad := range []string{"", "a/b", "..", "."} {
			if _, err := c.Get(ctx, bad); client.ErrorKind(err) != client.InvalidInput {
				t.Errorf("Get(%q) = %v; want invalid_input", bad, err)
			}
		}
	})
	t.Run("unsupported_type", func(t *testing.T) {
		_, err := c.Create(ctx, newName("ftp"), client.CreateInput{Type: "ftp"})
		requireKind(t, err, client.UnsupportedType, client.ErrUnsupportedType)
	})
	t.Run("not_found", func(t *testing.T) {
		_, err := c.Get(ctx, newName("missing"))
		requireKind(t, err, client.NotFound, client.ErrNotFound)
		_, err = c.Type(ctx, "ftp")
		requireKind(t, err, client.NotFound, client.ErrNotFound)
		_, err = c.GetRotationPolicy(ctx, newName("missing"))
		requireKind(t, err, client.NotFound, client.ErrNotFound)
		_, err = c.CredentialMetrics(ctx, newName("missing"))
		requireKind(t, err, client.NotFound, client.ErrNotFound)
		_, err = c.SetRotationPolicy(ctx, newName("missing"), client.RotationPolicy{Interval: time.Hour})
		requireKind(t, err, client.NotFound, client.ErrNotFound)
		err = c.DeleteRotationPolicy(ctx, newName("missing"))
		requireKind(t, err, client.NotFound, client.ErrNotFound)
		_, err = c.Rotate(ctx, newName("missing"), map[string]string{"api_key": "x"})
		requireKind(t, err, client.NotFound, client.ErrNotFound)
		_, err = c.CompleteFlow(ctx, "0c6a8d3e-0000-4000-8000-000000000000", "code", "state")
		requireKind(t, err, client.NotFound, client.ErrNotFound)
	})
	t.Run("expired", func(t *testing.T) {
		name := newName("expired")
		cred, err := c.Create(ctx, name, client.CreateInput{Bearer: &client.Bearer{Token: client.NewSecret("old-SECRET"), ExpiresAt: time.Now().Add(-time.Hour)}})
		if err != nil {
			t.Fatal(err)
		}
		if cred.Status != client.StatusExpired {
			t.Errorf("status = %q, want expired", cred.Status)
		}
		_, err = c.GetToken(ctx, name, nil)
		requireKind(t, err, client.Expired, client.ErrExpired)
	})
	t.Run("refresh_not_supported", func(t *testing.T) {
		name := newName("no-refresh")
		if _, err := c.Create(ctx, name, client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret("k-SECRET")}}); err != nil {
			t.Fatal(err)
		}
		_, err := c.Refresh(ctx, name)
		requireKind(t, err, client.RefreshNotSupported, client.ErrRefreshNotSupported)
	})
}

// TestSignedJWTFields: the oauth2 fields of signed-JWT credentials
// (jwt_bearer grant) go through Create, come back from Get except the
// private key, which no read answers.
func TestSignedJWTFields(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := testContext(t)
	name := newName("jwt")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	created, err := c.Create(ctx, name, client.CreateInput{OAuth2: &client.OAuth2{
		GrantType: "jwt_bearer", Issuer: "svc@example.com", Subject: "admin@example.com",
		PrivateKey: client.NewSecret(pemKey), KeyID: "k1", TokenURL: "https://login.example.com/token",
		Scopes: []string{"read"},
	}})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	got, err := c.Get(ctx, name)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	for _, cred := range []*client.Credential{created, got} {
		o := cred.OAuth2
		if o == nil || o.GrantType != "jwt_bearer" || o.Issuer != "svc@example.com" || o.Subject != "admin@example.com" ||
			o.KeyID != "k1" || !o.PrivateKey.IsZero() {
			t.Errorf("credential answered %+v", o)
		}
	}
	raw, err := c.Vault().Logical().ReadWithContext(ctx, c.Mount()+"/creds/"+name)
	if err != nil {
		t.Fatalf("reading creds/%s: %v", name, err)
	}
	for k, v := range raw.Data {
		if s, ok := v.(string); ok && strings.Contains(s, "PRIVATE KEY") {
			t.Errorf("creds/%s answers the private key in %s", name, k)
		}
	}
}
