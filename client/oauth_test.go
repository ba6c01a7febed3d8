package client_test

import (
	"errors"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// TestOAuth2Tokens: an oauth2 client_credentials credential against a
// real OAuth2 server on loopback: token, refresh, cache, metrics. It runs
// on a mount of its own, so the metrics and cache are the test's alone.
func TestOAuth2Tokens(t *testing.T) {
	t.Parallel()
	_, v := newClient(t)
	c := newMount(t, v)
	ctx := testContext(t)
	srv := oauthserver.Start(t)
	id, secret := srv.ClientCredentialsClient()
	name := newName("oauth-cc")
	cred, err := c.Create(ctx, name, client.CreateInput{OAuth2: &client.OAuth2{
		GrantType: "client_credentials", ClientID: id, ClientSecret: client.NewSecret(secret),
		TokenURL: srv.TokenURL(), Scopes: []string{"api:read"}, AuthStyle: "header",
	}})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if cred.OAuth2 == nil || cred.OAuth2.ClientID != id || !cred.OAuth2.ClientSecret.IsZero() || cred.OAuth2.TokenURL != srv.TokenURL() ||
		!slices.Equal(cred.OAuth2.Scopes, []string{"api:read"}) || cred.OAuth2.GrantType != "client_credentials" {
		t.Errorf("Create answered oauth2 fields %+v", cred.OAuth2)
	}
	if srv.TokenRequests() != 0 {
		t.Errorf("Create contacted the token endpoint")
	}

	tok, err := c.GetToken(ctx, name, nil)
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if tok.Value() == "" || tok.Type != "Bearer" || tok.HeaderName != "Authorization" || tok.HeaderValue() != "Bearer "+tok.Value() ||
		tok.ExpiresAt.Before(time.Now().Add(50*time.Minute)) || tok.TTL <= 0 || tok.RotationPeriod <= 0 {
		t.Errorf("GetToken answered %v (ttl %v, period %v)", tok, tok.TTL, tok.RotationPeriod)
	}
	// The first read fetches and caches the token; the next two are cache
	// hits.
	for i := 0; i < 2; i++ {
		if again, err := c.GetToken(ctx, name, nil); err != nil || again.Value() != tok.Value() {
			t.Errorf("GetToken again = %v, %v; want the same token", again, err)
		}
	}
	if n := srv.TokenRequests(); n != 1 {
		t.Errorf("%d token requests for three reads, want 1", n)
	}

	refreshed, err := c.Refresh(ctx, name)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if refreshed.Value() == "" || refreshed.Value() == tok.Value() {
		t.Errorf("Refresh answered the same token")
	}
	if n := srv.TokenRequests(); n != 2 {
		t.Errorf("%d token requests after a refresh, want 2", n)
	}

	if err := c.ClearCacheEntry(ctx, name); err != nil {
		t.Errorf("ClearCacheEntry: %v", err)
	}
	if err := c.ClearCache(ctx); err != nil {
		t.Errorf("ClearCache: %v", err)
	}
	if after, err := c.GetToken(ctx, name, nil); err != nil || after.Value() != refreshed.Value() {
		t.Errorf("GetToken after clearing the cache = %v, %v; want the stored token", after, err)
	}

	m, err := c.CredentialMetrics(ctx, name)
	if err != nil {
		t.Fatalf("CredentialMetrics: %v", err)
	}
	if m.Credential != name || m.UsageCount != 4 || m.RefreshCount != 2 || m.LastUsed.IsZero() || m.LastRefresh.IsZero() || m.LastError != "" {
		t.Errorf("CredentialMetrics = %+v; want 4 uses, 2 refreshes", m)
	}
	all, err := c.Metrics(ctx)
	if err != nil {
		t.Fatalf("Metrics: %v", err)
	}
	if all.TotalCredentials != 1 || all.CredentialsByType[client.TypeOAuth2] != 1 || all.TokenReads != 4 || all.RefreshCount != 2 ||
		all.CacheHits != 2 || all.CacheMisses != 2 || all.RefreshFailures != 0 || all.CacheHitRate <= 0 || all.CacheHitRate > 1 || all.AvgRefresh <= 0 || all.P99Refresh <= 0 {
		t.Errorf("Metrics = %+v", all)
	}
}

// TestOAuth2Errors: interaction_required, refresh_failed (unreachable
// token endpoint), no_token, unavailable (unreachable device endpoint) and
// a failed refresh run (RefreshDue, Health).
func TestOAuth2Errors(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := testContext(t)

	t.Run("interaction_required", func(t *testing.T) {
		srv := oauthserver.Start(t)
		id, secret := srv.WebClient()
		name := newName("oauth-user")
		if _, err := c.Create(ctx, name, client.CreateInput{OAuth2: &client.OAuth2{
			GrantType: client.GrantAuthorizationCode, ClientID: id, ClientSecret: client.NewSecret(secret),
			AuthURL: srv.AuthURL(), TokenURL: srv.TokenURL(),
		}}); err != nil {
			t.Fatal(err)
		}
		_, err := c.GetToken(ctx, name, nil)
		requireKind(t, err, client.InteractionRequired, client.ErrInteractionRequired)
	})

	t.Run("refresh_failed", func(t *testing.T) {
		name := newName("oauth-down")
		if _, err := c.Create(ctx, name, client.CreateInput{OAuth2: &client.OAuth2{
			ClientID: "x", ClientSecret: client.NewSecret("down-SECRET"), TokenURL: closedURL(t, "/token"),
		}}); err != nil {
			t.Fatal(err)
		}
		_, err := c.GetToken(ctx, name, nil)
		requireKind(t, err, client.RefreshFailed, client.ErrRefreshFailed)
		_, err = c.Refresh(ctx, name)
		requireKind(t, err, client.RefreshFailed, client.ErrRefreshFailed)
	})

	t.Run("no_token", func(t *testing.T) {
		// A blue/green rotation of an oauth2 credential that never served
		// a token keeps a previous version without one.
		srv := oauthserver.Start(t)
		id, secret := srv.ClientCredentialsClient()
		name := newName("oauth-no-token")
		if _, err := c.Create(ctx, name, client.CreateInput{OAuth2: &client.OAuth2{
			ClientID: id, ClientSecret: client.NewSecret(secret), TokenURL: srv.TokenURL(), AuthStyle: "header",
		}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SetRotationPolicy(ctx, name, client.RotationPolicy{Strategy: client.StrategyBlueGreen}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Rotate(ctx, name, nil); err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		_, err := c.GetPreviousToken(ctx, name)
		requireKind(t, err, client.NoToken, client.ErrNoToken)
		if tok, err := c.GetToken(ctx, name, nil); err != nil || tok.Version != 2 {
			t.Errorf("GetToken after the rotation = %v, %v", tok, err)
		}
	})

	t.Run("unavailable", func(t *testing.T) {
		_, err := c.StartFlow(ctx, client.FlowInput{
			Name: newName("flow-down"), GrantType: client.GrantDeviceCode, ClientID: "x", ClientSecret: client.NewSecret("down-SECRET"),
			DeviceURL: closedURL(t, "/device"), TokenURL: closedURL(t, "/token"),
		})
		requireKind(t, err, client.Unavailable, client.ErrUnavailable)
	})

	t.Run("refresh run", func(t *testing.T) {
		// Tokens living less than refresh_ahead (1m) are due at once.
		srv := oauthserver.Start(t, oauthserver.WithAccessTokenLifetime(30*time.Second))
		id, secret := srv.ClientCredentialsClient()
		name := newName("oauth-due")
		if _, err := c.Create(ctx, name, client.CreateInput{OAuth2: &client.OAuth2{
			ClientID: id, ClientSecret: client.NewSecret(secret), TokenURL: srv.TokenURL(), AuthStyle: "header",
		}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetToken(ctx, name, nil); err != nil {
			t.Fatal(err)
		}
		res, err := c.RefreshDue(ctx)
		if err != nil {
			t.Fatalf("RefreshDue: %v", err)
		}
		if !slices.Contains(res.Refreshed, name) {
			t.Errorf("RefreshDue = %+v; want %s refreshed", res, name)
		}

		srv.SetFailing(true)
		res, err = c.RefreshDue(ctx)
		if err != nil {
			t.Fatalf("RefreshDue: %v", err)
		}
		i := slices.IndexFunc(res.Failed, func(f client.RefreshFailure) bool { return f.Credential == name })
		if i < 0 {
			t.Fatalf("RefreshDue = %+v; want %s failed", res, name)
		}
		requireKind(t, res.Failed[i].Err, client.RefreshFailed, client.ErrRefreshFailed)

		h, err := c.Health(ctx)
		if err != nil {
			t.Fatalf("Health: %v", err)
		}
		if h.Status != client.HealthDegraded || h.CheckedAt.IsZero() ||
			!slices.ContainsFunc(h.Issues, func(is client.HealthIssue) bool { return is.Credential == name && is.Kind == "refresh_failed" }) {
			t.Errorf("Health = %+v; want degraded with a refresh_failed issue of %s", h, name)
		}
		cred, err := c.Get(ctx, name)
		if err != nil || cred.Status != client.StatusError || cred.LastError == "" {
			t.Errorf("Get = %+v, %v; want status error with the last error", cred, err)
		}
		m, err := c.CredentialMetrics(ctx, name)
		if err != nil || m.LastError == "" || !slices.Contains(m.Issues, "refresh_failed") {
			t.Errorf("CredentialMetrics = %+v, %v; want the refresh failure", m, err)
		}
	})
}

// TestFlows: interactive OAuth2 flows against a real OAuth2 server: an
// authorization code flow completed by the application (CompleteFlow,
// wrong state first), a device code flow, a cancelled flow.
func TestFlows(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := testContext(t)
	srv := oauthserver.Start(t)

	t.Run("authorization code", func(t *testing.T) {
		id, secret := srv.WebClient()
		name := newName("flow-code")
		flow, err := c.StartFlow(ctx, client.FlowInput{
			Name: name, ClientID: id, ClientSecret: client.NewSecret(secret),
			AuthURL: srv.AuthURL(), TokenURL: srv.TokenURL(), AuthStyle: "header",
			Scopes: []string{"openid", "offline_access"}, RedirectURI: "http://127.0.0.1:1/app/callback",
			Description: "signed in by alice", Tags: []string{"user:alice"},
		})
		if err != nil {
			t.Fatalf("StartFlow: %v", err)
		}
		if flow.ID == "" || flow.Status != client.FlowStatusPending || flow.InteractionType != client.InteractionRedirect ||
			flow.AuthURL == "" || flow.Name != name || flow.ExpiresAt.Before(time.Now()) {
			t.Fatalf("StartFlow answered %+v", flow)
		}
		ids, err := c.ListFlows(ctx)
		if err != nil || !slices.Contains(ids, flow.ID) {
			t.Errorf("ListFlows = %v, %v; want %s", ids, err, flow.ID)
		}

		back, err := url.Parse(srv.Login(t, flow.AuthURL))
		if err != nil {
			t.Fatal(err)
		}
		code, state := back.Query().Get("code"), back.Query().Get("state")
		if code == "" || state == "" {
			t.Fatalf("the provider redirected to %s without code and state", back)
		}

		_, err = c.CompleteFlow(ctx, flow.ID, code, state+"x")
		requireKind(t, err, client.InvalidCallback, client.ErrInvalidCallback)

		done, err := c.CompleteFlow(ctx, flow.ID, code, state)
		if err != nil {
			t.Fatalf("CompleteFlow: %v", err)
		}
		if done.Status != client.FlowStatusCompleted || done.Name != name || done.CredentialID == "" || done.EndedAt.IsZero() {
			t.Errorf("CompleteFlow answered %+v", done)
		}
		_, err = c.CompleteFlow(ctx, flow.ID, code, state)
		requireKind(t, err, client.InvalidCallback, client.ErrInvalidCallback)

		read, err := c.GetFlow(ctx, flow.ID)
		if err != nil || read.Status != client.FlowStatusCompleted || read.CredentialID != done.CredentialID {
			t.Errorf("GetFlow = %+v, %v", read, err)
		}
		cred, err := c.Get(ctx, name)
		if err != nil || cred.OAuth2 == nil || cred.OAuth2.GrantType != client.GrantAuthorizationCode || cred.Description != "signed in by alice" {
			t.Errorf("the flow's credential: %+v, %v", cred, err)
		}
		if tok, err := c.GetToken(ctx, name, nil); err != nil || tok.Value() == "" {
			t.Errorf("GetToken of the flow's credential: %v, %v", tok, err)
		}
		if _, err := c.Refresh(ctx, name); err != nil {
			t.Errorf("Refresh of the flow's credential: %v", err)
		}
	})

	t.Run("device code", func(t *testing.T) {
		id, secret := srv.DeviceClient()
		name := newName("flow-device")
		flow, err := c.StartFlow(ctx, client.FlowInput{
			Name: name, GrantType: client.GrantDeviceCode, ClientID: id, ClientSecret: client.NewSecret(secret),
			DeviceURL: srv.DeviceURL(), TokenURL: srv.TokenURL(), AuthStyle: "header",
			Scopes: []string{"openid", "offline_access"},
		})
		if err != nil {
			t.Fatalf("StartFlow: %v", err)
		}
		if flow.InteractionType != client.InteractionDeviceCode || flow.UserCode == "" || flow.VerificationURI == "" || flow.Interval <= 0 {
			t.Fatalf("StartFlow answered %+v", flow)
		}
		srv.ApproveDevice(t, flow.UserCode)
		for deadline := time.Now().Add(45 * time.Second); flow.Status == client.FlowStatusPending && time.Now().Before(deadline); {
			time.Sleep(250 * time.Millisecond)
			if flow, err = c.GetFlow(ctx, flow.ID); err != nil {
				t.Fatalf("GetFlow: %v", err)
			}
		}
		if flow.Status != client.FlowStatusCompleted || flow.Name != name {
			t.Fatalf("device flow ended as %+v", flow)
		}
		if tok, err := c.GetToken(ctx, name, nil); err != nil || tok.Value() == "" {
			t.Errorf("GetToken of the flow's credential: %v, %v", tok, err)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		id, secret := srv.WebClient()
		flow, err := c.StartFlow(ctx, client.FlowInput{
			Name: newName("flow-cancel"), ClientID: id, ClientSecret: client.NewSecret(secret),
			AuthURL: srv.AuthURL(), TokenURL: srv.TokenURL(), RedirectURI: "http://127.0.0.1:1/app/callback",
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.CancelFlow(ctx, flow.ID); err != nil {
			t.Fatalf("CancelFlow: %v", err)
		}
		_, err = c.GetFlow(ctx, flow.ID)
		requireKind(t, err, client.NotFound, client.ErrNotFound)
		_, err = c.GetFlow(ctx, "not-a-flow-id")
		requireKind(t, err, client.InvalidInput, client.ErrInvalidInput)
	})

	t.Run("duplicate name", func(t *testing.T) {
		name := newName("flow-taken")
		if _, err := c.Create(ctx, name, client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret("taken-SECRET")}}); err != nil {
			t.Fatal(err)
		}
		id, secret := srv.WebClient()
		_, err := c.StartFlow(ctx, client.FlowInput{
			Name: name, ClientID: id, ClientSecret: client.NewSecret(secret),
			AuthURL: srv.AuthURL(), TokenURL: srv.TokenURL(), RedirectURI: "http://127.0.0.1:1/app/callback",
		})
		requireKind(t, err, client.Duplicate, client.ErrDuplicate)
	})
}

// TestFlowExpired: completing a flow after flow_ttl (at least a minute)
// answers flow_expired. It runs on a mount of its own with flow_ttl=1m.
func TestFlowExpired(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a flow to expire (a minute)")
	}
	t.Parallel()
	_, v := newClient(t)
	c := newMount(t, v)
	ctx := testContext(t)
	cfg, err := c.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg.FlowTTL = time.Minute
	if cfg, err = c.SetConfig(ctx, *cfg); err != nil || cfg.FlowTTL != time.Minute {
		t.Fatalf("SetConfig flow_ttl=1m: %+v, %v", cfg, err)
	}
	srv := oauthserver.Start(t)
	id, secret := srv.WebClient()
	flow, err := c.StartFlow(ctx, client.FlowInput{
		Name: newName("flow-late"), ClientID: id, ClientSecret: client.NewSecret(secret),
		AuthURL: srv.AuthURL(), TokenURL: srv.TokenURL(), RedirectURI: "http://127.0.0.1:1/app/callback",
		Scopes: []string{"openid"},
	})
	if err != nil {
		t.Fatal(err)
	}
	back, err := url.Parse(srv.Login(t, flow.AuthURL))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(flow.ExpiresAt) + 2*time.Second)
	_, err = c.CompleteFlow(ctx, flow.ID, back.Query().Get("code"), back.Query().Get("state"))
	requireKind(t, err, client.FlowExpired, client.ErrFlowExpired)
	read, err := c.GetFlow(ctx, flow.ID)
	if err != nil || read.Status != client.FlowStatusExpired {
		t.Errorf("GetFlow = %+v, %v; want expired", read, err)
	}
}

// TestReconnectFlow: a credential whose grant the provider refuses becomes
// needs_reconnect; StartFlow for its name is refused (flows/start never
// replaces a credential), ReconnectFlow starts a flow that, once the user
// signed in, gives it a new grant as its next version.
func TestReconnectFlow(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := testContext(t)
	srv := oauthserver.Start(t)
	id, secret := srv.WebClient()
	name := newName("reconnect")
	if _, err := c.Create(ctx, name, client.CreateInput{OAuth2: &client.OAuth2{
		GrantType: "refresh_token", ClientID: id, ClientSecret: client.NewSecret(secret),
		RefreshToken: client.NewSecret("not-a-refresh-token"), TokenURL: srv.TokenURL(), AuthStyle: "header",
	}, Tags: []string{"team:crm"}}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Refresh(ctx, name)
	requireKind(t, err, client.RefreshFailed, client.ErrRefreshFailed)
	if cred, err := c.Get(ctx, name); err != nil || cred.Status != client.StatusNeedsReconnect {
		t.Fatalf("after invalid_grant: %+v, %v; want status %s", cred, err, client.StatusNeedsReconnect)
	}

	in := client.FlowInput{
		Name: name, ClientID: id, ClientSecret: client.NewSecret(secret),
		AuthURL: srv.AuthURL(), TokenURL: srv.TokenURL(), AuthStyle: "header",
		Scopes: []string{"openid", "offline_access"}, RedirectURI: "http://127.0.0.1:1/app/callback",
	}
	_, err = c.StartFlow(ctx, in)
	requireKind(t, err, client.Duplicate, client.ErrDuplicate)
	withTags := in
	withTags.Tags = []string{"team:other"}
	_, err = c.ReconnectFlow(ctx, withTags)
	if e := (*client.Error)(nil); !errors.As(err, &e) || e.Kind != client.InvalidInput || e.Status != 0 {
		t.Errorf("ReconnectFlow with tags = %v; want a client-side invalid_input", err)
	}

	flow, err := c.ReconnectFlow(ctx, in)
	if err != nil {
		t.Fatalf("ReconnectFlow: %v", err)
	}
	if flow.Status != client.FlowStatusPending || flow.AuthURL == "" || flow.Name != name || !flow.Reconnect {
		t.Fatalf("ReconnectFlow answered %+v", flow)
	}
	back, err := url.Parse(srv.Login(t, flow.AuthURL))
	if err != nil {
		t.Fatal(err)
	}
	done, err := c.CompleteFlow(ctx, flow.ID, back.Query().Get("code"), back.Query().Get("state"))
	if err != nil || done.Status != client.FlowStatusCompleted {
		t.Fatalf("CompleteFlow: %+v, %v", done, err)
	}
	cred, err := c.Get(ctx, name)
	if err != nil || cred.Status != client.StatusActive || cred.Version != 2 || !slices.Equal(cred.Tags, []string{"team:crm"}) {
		t.Fatalf("after the reconnect flow: %+v, %v; want active version 2 with its tags", cred, err)
	}
	if tok, err := c.Refresh(ctx, name); err != nil || tok.Value() == "" {
		t.Errorf("Refresh after reconnecting: %v, %v", tok, err)
	}
}
