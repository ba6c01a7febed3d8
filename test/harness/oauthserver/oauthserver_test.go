package oauthserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

const vaultCallback = "http://127.0.0.1:8200/v1/nebula/callback"

func TestClientCredentials(t *testing.T) {
	t.Parallel()
	s := oauthserver.Start(t, oauthserver.WithAccessTokenLifetime(2*time.Second))
	id, secret := s.ClientCredentialsClient()
	cc := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: s.TokenURL(), Scopes: []string{"read", "write"}}

	before := time.Now()
	tok, err := cc.Token(t.Context())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if tok.AccessToken == "" || tok.TokenType != "Bearer" {
		t.Errorf("token = %q type %q, want a bearer token", tok.AccessToken, tok.TokenType)
	}
	if got := tok.Extra("expires_in"); got != 2.0 {
		t.Errorf("expires_in = %v, want 2", got)
	}
	if lo, hi := before.Add(1500*time.Millisecond), time.Now().Add(2*time.Second); tok.Expiry.Before(lo) || tok.Expiry.After(hi) {
		t.Errorf("Expiry = %v, want within [%v, %v]", tok.Expiry, lo, hi)
	}
	if got := tok.Extra("scope"); got != "read write" {
		t.Errorf("scope = %v, want read write", got)
	}
	if n, g := s.TokenRequests(), s.TokenRequestsFor("client_credentials"); n != 1 || g != 1 {
		t.Errorf("TokenRequests() = %d, TokenRequestsFor(client_credentials) = %d, want 1 and 1", n, g)
	}

	if !introspect(t, s, id, secret, tok.AccessToken) {
		t.Error("fresh token is not active")
	}
	time.Sleep(time.Until(tok.Expiry) + 100*time.Millisecond)
	if introspect(t, s, id, secret, tok.AccessToken) {
		t.Error("token still active after its Expiry")
	}
}

func TestWrongClientSecret(t *testing.T) {
	t.Parallel()
	s := oauthserver.Start(t)
	id, secret := s.ClientCredentialsClient()
	token := func(secret string) error {
		cc := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: s.TokenURL()}
		_, err := cc.Token(t.Context())
		return err
	}

	wantInvalidClient(t, token("wrong"))
	newSecret, err := s.RotateClientSecret(id)
	if err != nil {
		t.Fatal(err)
	}
	wantInvalidClient(t, token(secret))
	if err := token(newSecret); err != nil {
		t.Errorf("new secret: %v", err)
	}
	if err := s.SetClientSecret(oauthserver.PublicClientID, "x"); err == nil {
		t.Error("SetClientSecret on a public client succeeded")
	}
}

func wantInvalidClient(t *testing.T, err error) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" || re.Response.StatusCode != http.StatusUnauthorized {
		t.Errorf("err = %v, want a 401 invalid_client RetrieveError", err)
	}
}

func TestAuthorizationCodePKCE(t *testing.T) {
	t.Parallel()
	s := oauthserver.Start(t, oauthserver.WithRedirectURI(vaultCallback))
	webID, webSecret := s.WebClient()
	for _, c := range []struct{ name, id, secret string }{
		{"confidential", webID, webSecret},
		{"public", oauthserver.PublicClientID, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			conf := &oauth2.Config{ClientID: c.id, ClientSecret: c.secret, Endpoint: s.Endpoint(),
				RedirectURL: vaultCallback, Scopes: []string{"openid", "offline_access"}}
			code, verifier := authorize(t, s, conf)

			var re *oauth2.RetrieveError
			if _, err := conf.Exchange(t.Context(), code, oauth2.VerifierOption(oauth2.GenerateVerifier())); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
				t.Errorf("exchange with wrong verifier: err = %v, want invalid_grant", err)
			}
			tok, err := conf.Exchange(t.Context(), code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if tok.AccessToken == "" || tok.RefreshToken == "" || tok.Extra("id_token") == nil {
				t.Fatalf("token = %+v, want access, refresh and id token", tok)
			}
			if _, err := conf.Exchange(t.Context(), code, oauth2.VerifierOption(verifier)); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
				t.Errorf("second exchange of the code: err = %v, want invalid_grant", err)
			}

			next := refresh(t, conf, tok.RefreshToken)
			if next.RefreshToken == "" || next.RefreshToken == tok.RefreshToken || next.AccessToken == tok.AccessToken {
				t.Errorf("refresh did not rotate: old %q new %q", tok.RefreshToken, next.RefreshToken)
			}
			_, err = conf.TokenSource(t.Context(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
			if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
				t.Errorf("reused refresh token: err = %v, want invalid_grant", err)
			}
			refresh(t, conf, next.RefreshToken)
		})
	}

	t.Run("unregistered redirect", func(t *testing.T) {
		conf := &oauth2.Config{ClientID: webID, Endpoint: s.Endpoint(), RedirectURL: "http://127.0.0.1:1/evil", Scopes: []string{"openid"}}
		resp, err := http.Get(conf.AuthCodeURL("state"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status = %s, want 400", resp.Status)
		}
	})
}

func TestRefreshWithoutRotation(t *testing.T) {
	t.Parallel()
	s := oauthserver.Start(t, oauthserver.WithoutRefreshTokenRotation())
	id, secret := s.WebClient()
	// Any loopback redirect URI is accepted without WithRedirectURI.
	conf := &oauth2.Config{ClientID: id, ClientSecret: secret, Endpoint: s.Endpoint(),
		RedirectURL: "http://localhost:43210/cb", Scopes: []string{"offline_access"}}
	code, verifier := authorize(t, s, conf)
	tok, err := conf.Exchange(t.Context(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	for range 2 {
		next := refresh(t, conf, tok.RefreshToken)
		if next.Extra("refresh_token") != nil {
			t.Errorf("refresh answered a refresh_token %v", next.Extra("refresh_token"))
		}
	}
	if n := s.TokenRequestsFor("refresh_token"); n != 2 {
		t.Errorf("TokenRequestsFor(refresh_token) = %d, want 2", n)
	}
}

func TestRevocation(t *testing.T) {
	t.Parallel()
	s := oauthserver.Start(t)
	id, secret := s.WebClient()
	conf := &oauth2.Config{ClientID: id, ClientSecret: secret, Endpoint: s.Endpoint(),
		RedirectURL: vaultCallback, Scopes: []string{"openid", "offline_access"}}
	code, verifier := authorize(t, s, conf)
	tok, err := conf.Exchange(t.Context(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}

	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.RevocationURL(),
		strings.NewReader(url.Values{"token": {tok.RefreshToken}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || s.RevocationRequests() != 1 {
		t.Fatalf("revoke: %s, RevocationRequests() = %d", resp.Status, s.RevocationRequests())
	}
	var re *oauth2.RetrieveError
	if _, err := conf.TokenSource(t.Context(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("revoked refresh token: err = %v, want invalid_grant", err)
	}
	if introspect(t, s, id, secret, tok.AccessToken) {
		t.Error("access token of the revoked refresh token is still active")
	}
}

func TestDeviceCode(t *testing.T) {
	t.Parallel()
	s := oauthserver.Start(t)
	id, secret := s.DeviceClient()
	endpoint := s.Endpoint()
	endpoint.AuthStyle = oauth2.AuthStyleInHeader // zitadel's device token endpoint takes Basic auth only
	conf := &oauth2.Config{ClientID: id, ClientSecret: secret, Endpoint: endpoint, Scopes: []string{"openid", "offline_access"}}

	t.Run("approve", func(t *testing.T) {
		da, err := conf.DeviceAuth(t.Context())
		if err != nil {
			t.Fatalf("DeviceAuth: %v", err)
		}
		if da.UserCode == "" || da.VerificationURI != s.URL+"/device" || da.Interval != 1 {
			t.Errorf("device auth = %+v", da)
		}

		ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
		defer cancel()
		if _, err := conf.DeviceAccessToken(ctx, da); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("DeviceAccessToken before approval: err = %v, want the caller's deadline", err)
		}
		if n := s.TokenRequestsFor(oauthserver.GrantTypeDeviceCode); n != 1 {
			t.Errorf("device polls = %d, want 1 (authorization_pending)", n)
		}

		s.ApproveDevice(t, da.UserCode)
		tok, err := conf.DeviceAccessToken(t.Context(), da)
		if err != nil {
			t.Fatalf("DeviceAccessToken: %v", err)
		}
		if tok.AccessToken == "" || tok.RefreshToken == "" {
			t.Fatalf("token = %+v, want access and refresh token", tok)
		}
		var re *oauth2.RetrieveError
		if _, err := conf.DeviceAccessToken(t.Context(), da); !errors.As(err, &re) || re.ErrorCode != "access_denied" {
			t.Errorf("second redemption of the device code: err = %v, want access_denied", err)
		}
		if next := refresh(t, conf, tok.RefreshToken); next.RefreshToken == tok.RefreshToken {
			t.Error("refresh did not rotate the refresh token")
		}
	})

	t.Run("deny", func(t *testing.T) {
		da, err := conf.DeviceAuth(t.Context())
		if err != nil {
			t.Fatalf("DeviceAuth: %v", err)
		}
		s.DenyDevice(t, da.UserCode)
		var re *oauth2.RetrieveError
		if _, err := conf.DeviceAccessToken(t.Context(), da); !errors.As(err, &re) || re.ErrorCode != "access_denied" {
			t.Errorf("err = %v, want access_denied", err)
		}
	})
}

func TestSetFailing(t *testing.T) {
	t.Parallel()
	s := oauthserver.Start(t)
	id, secret := s.ClientCredentialsClient()
	cc := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: s.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader}

	s.SetFailing(true)
	var re *oauth2.RetrieveError
	if _, err := cc.Token(t.Context()); !errors.As(err, &re) || re.Response.StatusCode != http.StatusServiceUnavailable || re.ErrorCode != "temporarily_unavailable" {
		t.Errorf("err = %v, want a 503 temporarily_unavailable RetrieveError", err)
	}
	if n := s.TokenRequests(); n != 1 {
		t.Errorf("TokenRequests() = %d, want 1", n)
	}
	s.SetFailing(false)
	if _, err := cc.Token(t.Context()); err != nil {
		t.Errorf("after SetFailing(false): %v", err)
	}
}

// authorize runs the authorization request of conf through the login page
// and returns the code and PKCE verifier.
func authorize(t *testing.T, s *oauthserver.Server, conf *oauth2.Config) (code, verifier string) {
	t.Helper()
	verifier = oauth2.GenerateVerifier()
	callback := s.Login(t, conf.AuthCodeURL("state-1", oauth2.S256ChallengeOption(verifier)))
	u, err := url.Parse(callback)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if !strings.HasPrefix(callback, conf.RedirectURL+"?") || q.Get("state") != "state-1" || q.Get("code") == "" {
		t.Fatalf("callback = %s, want %s with code and state", callback, conf.RedirectURL)
	}
	return q.Get("code"), verifier
}

func refresh(t *testing.T, conf *oauth2.Config, refreshToken string) *oauth2.Token {
	t.Helper()
	tok, err := conf.TokenSource(t.Context(), &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	return tok
}

// introspect reports whether the server considers token active (RFC 7662).
func introspect(t *testing.T, s *oauthserver.Server, id, secret, token string) bool {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.IntrospectionURL(),
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("introspection answered %s: %v", resp.Status, err)
	}
	return body.Active
}
