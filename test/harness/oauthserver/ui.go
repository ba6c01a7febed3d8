package oauthserver

import (
	"context"
	"errors"
	"html/template"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

const (
	loginPath  = "/login/username"
	devicePath = "/device"
)

// ui serves the pages a user sees: the login form zitadel redirects
// authorization requests to, and the device verification page.
type ui struct {
	store       *storage
	callbackURL func(ctx context.Context, authRequestID string) string
}

var pages = template.Must(template.New("").Parse(`
{{define "login"}}<!DOCTYPE html><title>Login</title>
<form method="post" action="` + loginPath + `">
<input type="hidden" name="id" value="{{.ID}}">
<input name="username"> <input type="password" name="password">
<button type="submit">Login</button></form><p>{{.Error}}</p>{{end}}
{{define "device"}}<!DOCTYPE html><title>Device</title>
<form method="post" action="` + devicePath + `">
<input name="user_code" value="{{.UserCode}}">
<input name="username"> <input type="password" name="password">
<button name="action" value="allow">Allow</button> <button name="action" value="deny">Deny</button>
</form><p>{{.Error}}</p>{{end}}`))

// login shows the login form (GET) or checks it and sends the browser back
// to zitadel's authorization callback, which redirects to the client (POST).
func (u *ui) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		u.render(w, http.StatusOK, "login", r.FormValue("authRequestID"), nil)
		return
	}
	id := r.PostFormValue("id")
	if err := u.store.login(id, r.PostFormValue("username"), r.PostFormValue("password")); err != nil {
		u.render(w, http.StatusUnauthorized, "login", id, err)
		return
	}
	http.Redirect(w, r, u.callbackURL(r.Context(), id), http.StatusFound)
}

// device shows the verification form (GET, user_code may be prefilled as in
// verification_uri_complete) or records the user's answer (POST).
func (u *ui) device(w http.ResponseWriter, r *http.Request) {
	code := r.FormValue("user_code")
	if r.Method != http.MethodPost {
		u.render(w, http.StatusOK, "device", code, nil)
		return
	}
	allow := r.PostFormValue("action") == "allow"
	if err := u.store.decideDevice(code, r.PostFormValue("username"), r.PostFormValue("password"), allow); err != nil {
		u.render(w, http.StatusBadRequest, "device", code, err)
		return
	}
	_, _ = io.WriteString(w, "Device authorization recorded. You can now return to the device.")
}

func (u *ui) render(w http.ResponseWriter, status int, page, value string, err error) {
	data := struct{ ID, UserCode, Error string }{ID: value, UserCode: value}
	if err != nil {
		data.Error = err.Error()
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = pages.ExecuteTemplate(w, page, data) // the response is already committed
}

// Login does what a user's browser does with an authorization URL of this
// server (e.g. the auth_url a flow returned): it opens authURL, logs in as
// Username on the login page, and follows redirects until one leaves the
// server. It returns that redirect's URL, the client's redirect_uri with
// code and state (or error), without opening it.
func (s *Server) Login(tb testing.TB, authURL string) (callbackURL string) {
	tb.Helper()
	browser := s.browser()
	resp, err := browser.Get(authURL)
	if err != nil {
		tb.Fatalf("oauthserver: open authorization URL: %v", err)
	}
	if loc, ok := leaving(resp); ok {
		return loc // zitadel rejected the request and redirected with an error
	}
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != loginPath {
		tb.Fatalf("oauthserver: authorization URL answered %s at %s: %s", resp.Status, resp.Request.URL.Path, snippet(resp))
	}
	_ = resp.Body.Close()
	resp, err = browser.PostForm(s.URL+loginPath, url.Values{
		"id":       {resp.Request.URL.Query().Get("authRequestID")},
		"username": {Username},
		"password": {Password},
	})
	if err != nil {
		tb.Fatalf("oauthserver: submit login form: %v", err)
	}
	loc, ok := leaving(resp)
	if !ok {
		tb.Fatalf("oauthserver: login answered %s at %s instead of redirecting to the client: %s", resp.Status, resp.Request.URL.Path, snippet(resp))
	}
	return loc
}

// SignedInGrant signs the test user in to the confidential web client
// (Login) and exchanges the code with PKCE, as an interactive flow would.
// It answers the client's id and secret and the refresh token issued.
func (s *Server) SignedInGrant(tb testing.TB) (clientID, clientSecret, refresh string) {
	tb.Helper()
	id, secret := s.WebClient()
	const redirect = "http://127.0.0.1:1/callback"
	conf := &oauth2.Config{ClientID: id, ClientSecret: secret, Endpoint: s.Endpoint(),
		RedirectURL: redirect, Scopes: []string{"openid", "offline_access"}}
	verifier := oauth2.GenerateVerifier()
	back, err := url.Parse(s.Login(tb, conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier))))
	if err != nil {
		tb.Fatalf("oauthserver: callback URL: %v", err)
	}
	code := back.Query().Get("code")
	if code == "" || !strings.HasPrefix(back.String(), redirect) {
		tb.Fatalf("oauthserver: the sign-in answered no code: %s", back)
	}
	tok, err := conf.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		tb.Fatalf("oauthserver: exchanging the code: %v", err)
	}
	if tok.RefreshToken == "" {
		tb.Fatal("oauthserver: the code exchange answered no refresh token")
	}
	return id, secret, tok.RefreshToken
}

// ApproveDevice approves a device authorization's user_code at the
// verification page as the user would; the device's next poll gets tokens.
func (s *Server) ApproveDevice(tb testing.TB, userCode string) {
	tb.Helper()
	s.decideDevice(tb, userCode, "allow")
}

// DenyDevice denies a device authorization's user_code at the verification
// page; the device's next poll gets access_denied.
func (s *Server) DenyDevice(tb testing.TB, userCode string) {
	tb.Helper()
	s.decideDevice(tb, userCode, "deny")
}

func (s *Server) decideDevice(tb testing.TB, userCode, action string) {
	tb.Helper()
	resp, err := s.browser().PostForm(s.URL+devicePath, url.Values{
		"user_code": {userCode},
		"username":  {Username},
		"password":  {Password},
		"action":    {action},
	})
	if err != nil {
		tb.Fatalf("oauthserver: submit device form: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("oauthserver: device form answered %s: %s", resp.Status, snippet(resp))
	}
	_ = resp.Body.Close()
}

// browser returns an HTTP client that keeps cookies and follows redirects
// within the server only.
func (s *Server) browser() *http.Client {
	jar, _ := cookiejar.New(nil) // never fails without options
	host := s.ts.Listener.Addr().String()
	return &http.Client{
		Jar:     jar,
		Timeout: 30 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host != host {
				return http.ErrUseLastResponse
			}
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		},
	}
}

// leaving reports the absolute target of resp if it redirects away from the
// server, closing resp's body.
func leaving(resp *http.Response) (string, bool) {
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		return "", false
	}
	defer resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		return "", false
	}
	return loc.String(), true
}

// snippet returns the start of resp's body for an error message, closing it.
func snippet(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return strings.TrimSpace(string(b))
}
