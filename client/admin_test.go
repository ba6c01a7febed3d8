package client_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/client"
)

// TestBatch: batch create and delete answer one result per item, in order;
// a bad item fails alone.
func TestBatch(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := testContext(t)
	a, b, bad := newName("batch-a"), newName("batch-b"), newName("batch-bad")
	results, err := c.BatchCreate(ctx, []client.BatchItem{
		{Name: a, CreateInput: client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret("batch-SECRET-a")}, Tags: []string{"batch"}}},
		{Name: bad, CreateInput: client.CreateInput{Type: "ftp"}},
		{Name: b, CreateInput: client.CreateInput{BasicAuth: &client.BasicAuth{Username: "bob", Password: client.NewSecret("batch-SECRET-b")}}},
		{Name: "bad name!", CreateInput: client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret("x")}}},
	})
	if err != nil {
		t.Fatalf("BatchCreate: %v", err)
	}
	if len(results) != 4 {
		t.Fatalf("BatchCreate answered %d results, want 4: %+v", len(results), results)
	}
	for i, want := range []string{a, bad, b, "bad name!"} {
		if results[i].Name != want {
			t.Errorf("result %d is of %q, want %q", i, results[i].Name, want)
		}
	}
	for _, i := range []int{0, 2} {
		if results[i].Err != nil || results[i].ID == "" || results[i].Version != 1 {
			t.Errorf("result %d = %+v; want an id", i, results[i])
		}
	}
	requireKind(t, results[1].Err, client.UnsupportedType, client.ErrUnsupportedType)
	requireKind(t, results[3].Err, client.InvalidInput, client.ErrInvalidInput)
	if tok, err := c.GetToken(ctx, b, nil); err != nil || tok.Type != "Basic" {
		t.Errorf("GetToken of a batch-created credential: %v, %v", tok, err)
	}

	_, err = c.BatchCreate(ctx, []client.BatchItem{{Name: a}})
	if client.ErrorKind(err) != client.InvalidInput {
		t.Errorf("BatchCreate of an item without type = %v; want a client-side invalid_input", err)
	}
	_, err = c.BatchCreate(ctx, nil)
	requireKind(t, err, client.InvalidInput, client.ErrInvalidInput)

	results, err = c.BatchDelete(ctx, []string{a, bad, b, "bad name!"})
	if err != nil {
		t.Fatalf("BatchDelete: %v", err)
	}
	if len(results) != 4 || !results[0].Deleted || results[1].Deleted || results[1].Err != nil || !results[2].Deleted {
		t.Errorf("BatchDelete = %+v", results)
	}
	requireKind(t, results[3].Err, client.InvalidInput, client.ErrInvalidInput)
	if names, err := c.List(ctx); err != nil || slices.Contains(names, a) || slices.Contains(names, b) {
		t.Errorf("List after BatchDelete = %v, %v", names, err)
	}
}

// TestAudit: the audit trail, paged, and exported as JSON, CSV and PDF,
// with no secret in any of them.
func TestAudit(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := testContext(t)
	name := newName("audited")
	const secret = "audit-SECRET-value"
	since := time.Now().Add(-time.Minute)
	if _, err := c.Create(ctx, name, client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret(secret)}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := c.GetToken(ctx, name, &client.CallerContext{ExecutionID: fmt.Sprint("exec-", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Refresh(ctx, name); client.ErrorKind(err) != client.RefreshNotSupported {
		t.Fatalf("Refresh of an api_key = %v", err)
	}

	all, err := c.AuditEvents(ctx, client.AuditFilter{Credential: name, Since: since, Until: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatalf("AuditEvents: %v", err)
	}
	var actions []string
	for _, ev := range all.Events {
		actions = append(actions, ev.Action)
	}
	if !slices.Equal(actions, []string{"refresh", "read_token", "read_token", "read_token", "create"}) {
		t.Fatalf("events of %s, newest first: %v", name, actions)
	}
	if ev := all.Events[0]; ev.Success || !strings.HasPrefix(ev.Error, "refresh_not_supported:") || ev.ID == "" || ev.Time.IsZero() {
		t.Errorf("the failed refresh's event: %+v", ev)
	}
	if all.Events[1].ExecutionID != "exec-2" || all.Events[1].User == "" {
		t.Errorf("the newest read's event: %+v", all.Events[1])
	}

	// Paging: one event per page.
	var paged []string
	filter := client.AuditFilter{Credential: name, Limit: 2}
	for i := 0; i < 5; i++ {
		page, err := c.AuditEvents(ctx, filter)
		if err != nil {
			t.Fatalf("AuditEvents page %d: %v", i, err)
		}
		for _, ev := range page.Events {
			paged = append(paged, ev.ID)
		}
		if page.Next == "" {
			break
		}
		filter.Cursor = page.Next
	}
	if len(paged) != 5 || paged[0] != all.Events[0].ID || paged[4] != all.Events[4].ID {
		t.Errorf("paging found %d events, want the 5 in order", len(paged))
	}

	for _, format := range []string{client.FormatJSON, client.FormatCSV, client.FormatPDF, ""} {
		rep, err := c.ExportAudit(ctx, client.AuditFilter{Credential: name}, format)
		if err != nil {
			t.Fatalf("ExportAudit(%q): %v", format, err)
		}
		if rep.Count != 5 || bytes.Contains(rep.Data, []byte(secret)) {
			t.Errorf("ExportAudit(%q): count %d, secret shown: %v", format, rep.Count, bytes.Contains(rep.Data, []byte(secret)))
		}
		switch format {
		case client.FormatJSON, "":
			var events []client.AuditEvent
			if err := json.Unmarshal(rep.Data, &events); err != nil || len(events) != 5 || rep.ContentType != "application/json" {
				t.Errorf("JSON report: %v, %d events, %s", err, len(events), rep.ContentType)
			}
		case client.FormatCSV:
			if !bytes.HasPrefix(rep.Data, []byte("id,time,action,credential")) || rep.ContentType != "text/csv" {
				t.Errorf("CSV report starts %q (%s)", rep.Data[:min(40, len(rep.Data))], rep.ContentType)
			}
		case client.FormatPDF:
			if !bytes.HasPrefix(rep.Data, []byte("%PDF-")) || rep.ContentType != "application/pdf" {
				t.Errorf("PDF report starts %q (%s)", rep.Data[:min(8, len(rep.Data))], rep.ContentType)
			}
		}
	}
	_, err = c.ExportAudit(ctx, client.AuditFilter{}, "xml")
	requireKind(t, err, client.InvalidInput, client.ErrInvalidInput)
}

// TestConfig: read, write (on a mount of the test's own) and the
// engine's validation.
func TestConfig(t *testing.T) {
	t.Parallel()
	_, v := newClient(t)
	c := newMount(t, v)
	ctx := testContext(t)
	cfg, err := c.Config(ctx)
	if err != nil {
		t.Fatalf("Config: %v", err)
	}
	if !cfg.CacheEnabled || cfg.CacheTTL != 5*time.Minute || cfg.CacheMaxSize != 10000 || cfg.RefreshAhead != 5*time.Minute ||
		!cfg.AuditEnabled || cfg.FlowTTL != 10*time.Minute || cfg.DefaultTokenLifetime != time.Hour ||
		!slices.Equal(cfg.InsecureHTTPHosts, []string{"127.0.0.1"}) || cfg.AllowedHosts == nil ||
		cfg.AllowPrivateNetworks || cfg.RefreshConcurrency != 16 || cfg.UpstreamConcurrencyPerHost != 8 ||
		cfg.NotifyURL != "" || cfg.NotifySecretSet || cfg.StandbyTokenReads != "forward" {
		t.Errorf("Config = %+v; want the defaults with 127.0.0.1 over http", cfg)
	}
	cfg.CacheTTL, cfg.CacheMaxSize, cfg.AllowedHosts, cfg.AuditSync = 90*time.Second, 50, []string{"*.example.com"}, true
	cfg.RefreshConcurrency, cfg.UpstreamConcurrencyPerHost, cfg.StandbyTokenReads = 4, 2, "local"
	cfg.NotifyURL, cfg.NotifySecret = "https://hooks.example.com/nebula", client.NewSecret("notify-secret-0123456789")
	got, err := c.SetConfig(ctx, *cfg)
	if err != nil {
		t.Fatalf("SetConfig: %v", err)
	}
	if got.CacheTTL != 90*time.Second || got.CacheMaxSize != 50 || !slices.Equal(got.AllowedHosts, []string{"*.example.com"}) || !got.AuditSync ||
		got.RefreshConcurrency != 4 || got.UpstreamConcurrencyPerHost != 2 || got.NotifyURL != "https://hooks.example.com/nebula" || !got.NotifySecretSet ||
		got.StandbyTokenReads != "local" {
		t.Errorf("SetConfig answered %+v", got)
	}
	if again, err := c.Config(ctx); err != nil || again.CacheMaxSize != 50 || again.AuditRetention != cfg.AuditRetention {
		t.Errorf("Config after SetConfig = %+v, %v", again, err)
	}
	_, err = c.SetConfig(ctx, client.Config{})
	e := requireKind(t, err, client.InvalidInput, client.ErrInvalidInput)
	for _, field := range []string{"cache_max_size", "flow_ttl", "default_token_lifetime"} {
		if !strings.Contains(e.Message, field) {
			t.Errorf("the error %q does not name %s", e.Message, field)
		}
	}
	// Mount paths are taken without slashes.
	if c.Mount() == "" || strings.Contains(c.Mount(), "/") {
		t.Errorf("Mount() = %q", c.Mount())
	}
}

// TestTypesAndProviders: credential type schemas and OAuth2 provider
// presets.
func TestTypesAndProviders(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := testContext(t)

	types, err := c.Types(ctx)
	if err != nil {
		t.Fatalf("Types: %v", err)
	}
	var names []string
	for _, ty := range types {
		names = append(names, ty.Name)
		if ty.Description == "" {
			t.Errorf("type %s has no description", ty.Name)
		}
	}
	for _, want := range []string{client.TypeAPIKey, client.TypeBasicAuth, client.TypeBearer, client.TypeOAuth2, client.TypeGenerated} {
		if !slices.Contains(names, want) {
			t.Errorf("Types = %v; want %s", names, want)
		}
	}
	oauth, err := c.Type(ctx, client.TypeOAuth2)
	if err != nil {
		t.Fatalf("Type: %v", err)
	}
	if !oauth.SupportsRefresh || !oauth.SupportsRotation || !slices.Contains(oauth.Grants, "client_credentials") ||
		!slices.Contains(oauth.SecretFields, "client_secret") || len(oauth.Fields) == 0 {
		t.Errorf("Type(oauth2) = %+v", oauth)
	}
	for _, f := range oauth.Fields {
		switch f.Name {
		case "client_secret":
			if !f.Secret {
				t.Errorf("client_secret is not secret: %+v", f)
			}
		case "client_id":
			if f.Secret { // required unless jwt_bearer without client authentication
				t.Errorf("client_id: %+v", f)
			}
		case "auth_style":
			if f.Default != "auto" || !slices.Equal(f.Allowed, []string{"auto", "header", "body", "private_key_jwt"}) {
				t.Errorf("auth_style: %+v", f)
			}
		}
	}
	gen, err := c.Type(ctx, client.TypeGenerated)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(gen.Fields, func(f client.TypeField) bool { return f.Name == "length" }); i < 0 || gen.Fields[i].Default != "32" || gen.Fields[i].Kind != "int" {
		t.Errorf("generated fields %+v; want length with default 32", gen.Fields)
	}

	providers, err := c.Providers(ctx)
	if err != nil || !slices.Contains(providers, "google") || !slices.Contains(providers, "github") {
		t.Fatalf("Providers = %v, %v", providers, err)
	}
	google, err := c.Provider(ctx, "google")
	if err != nil || !google.BuiltIn || google.TokenURL == "" || google.Name != "google" {
		t.Errorf("Provider(google) = %+v, %v", google, err)
	}
	_, err = c.SetProvider(ctx, client.Provider{Name: "google", TokenURL: "https://evil.example.com/token"})
	requireKind(t, err, client.InvalidInput, client.ErrInvalidInput)

	name := newName("idp")
	p, err := c.SetProvider(ctx, client.Provider{
		Name: name, AuthURL: "https://idp.example.com/authorize", TokenURL: "https://idp.example.com/token",
		Scopes: []string{"openid", "email"}, PKCE: true,
	})
	if err != nil {
		t.Fatalf("SetProvider: %v", err)
	}
	if p.Name != name || p.BuiltIn || !p.PKCE || p.AuthStyle != "auto" || !slices.Equal(p.Scopes, []string{"openid", "email"}) {
		t.Errorf("SetProvider answered %+v", p)
	}
	if providers, err := c.Providers(ctx); err != nil || !slices.Contains(providers, name) {
		t.Errorf("Providers after SetProvider = %v, %v", providers, err)
	}
	// A credential takes its endpoints from the preset.
	cred, err := c.Create(ctx, newName("with-preset"), client.CreateInput{OAuth2: &client.OAuth2{Provider: name, ClientID: "id", ClientSecret: client.NewSecret("preset-SECRET")}})
	if err != nil || cred.OAuth2.Provider != name {
		t.Errorf("Create with the preset: %+v, %v", cred, err)
	}
	_, err = c.SetProvider(ctx, client.Provider{Name: newName("idp-bad")})
	requireKind(t, err, client.InvalidInput, client.ErrInvalidInput)

	if err := c.DeleteProvider(ctx, name); err != nil {
		t.Fatalf("DeleteProvider: %v", err)
	}
	_, err = c.Provider(ctx, name)
	requireKind(t, err, client.NotFound, client.ErrNotFound)
	err = c.DeleteProvider(ctx, "github")
	requireKind(t, err, client.InvalidInput, client.ErrInvalidInput)
}
