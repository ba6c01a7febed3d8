package upstream

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Endpoint names in errors.
const (
	TokenEndpoint      = "token endpoint"
	DeviceAuthEndpoint = "device authorization endpoint"
	RevocationEndpoint = "revocation endpoint"
)

// Interactive flows' calls (code exchange, device authorization, device
// polling) are made once each, never retried here: a code is spent by its
// first exchange, and device polls are paced by the flow's interval. Each
// is bounded by FlowCallTimeout.

// ExchangeRequest is an authorization code exchange (RFC 6749 section
// 4.1.3) with the client authentication of Request (ClientID,
// ClientSecret, AuthStyle, or ClientKey) at Request.TokenURL.
type ExchangeRequest struct {
	Request
	Code string
	// Verifier is the PKCE code verifier (RFC 7636); empty without PKCE.
	Verifier    string
	RedirectURI string
}

// Exchange exchanges an authorization code for a token. Failures are
// *Error values.
func (c *Client) Exchange(ctx context.Context, r ExchangeRequest) (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, FlowCallTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.http)
	var opts []oauth2.AuthCodeOption
	if r.Verifier != "" {
		opts = append(opts, oauth2.VerifierOption(r.Verifier))
	}
	style, secret := endpointAuthStyle(r.AuthStyle), r.ClientSecret
	if r.ClientKey != nil {
		params := url.Values{}
		if err := clientAssertion(params, r.ClientKey, r.ClientID, firstNonEmpty(r.AssertionAudience, r.TokenURL), time.Now()); err != nil {
			return nil, err
		}
		for k, v := range params {
			opts = append(opts, oauth2.SetAuthURLParam(k, v[0]))
		}
		style, secret = oauth2.AuthStyleInParams, ""
	}
	conf := oauth2.Config{
		ClientID: r.ClientID, ClientSecret: secret, RedirectURL: r.RedirectURI, Scopes: r.Scopes,
		Endpoint: oauth2.Endpoint{TokenURL: r.TokenURL, AuthStyle: style},
	}
	tok, err := conf.Exchange(ctx, r.Code, opts...)
	if err != nil {
		return nil, classify(err)
	}
	if tok.AccessToken == "" {
		return nil, &Error{Reason: "token endpoint answered without an access token", Permanent: true}
	}
	return tok, nil
}

// DeviceAuthRequest is a device authorization request (RFC 8628 section
// 3.1) at DeviceURL: client_id, scope, and the client authentication of
// Request (RFC 8628 section 3.1 applies RFC 6749 section 3.2.1 to this
// endpoint: a confidential client authenticates as at the token endpoint).
// Request's TokenURL and Grant are not used.
type DeviceAuthRequest struct {
	Request
	DeviceURL string
}

// maxDeviceField bounds the strings of a device authorization answer the
// engine stores and shows.
const maxDeviceField = 2048

// deviceAuthAnswer is a device authorization answer (RFC 8628 section
// 3.2), its seconds fields read as numbers of any size.
type deviceAuthAnswer struct {
	DeviceCode              string      `json:"device_code"`
	UserCode                string      `json:"user_code"`
	VerificationURI         string      `json:"verification_uri"`
	VerificationURL         string      `json:"verification_url"` // a common misspelling (Google)
	VerificationURIComplete string      `json:"verification_uri_complete"`
	ExpiresIn               json.Number `json:"expires_in"`
	Interval                json.Number `json:"interval"`
}

// DeviceAuth makes the device authorization request as
// golang.org/x/oauth2's Config.DeviceAuth does, but caps expires_in and
// interval (MaxExpiresIn): DeviceAuth multiplies expires_in into a
// time.Duration unchecked, so a huge value becomes an expiry in the past.
// The answer must hold device_code, user_code and an http(s)
// verification_uri. Failures are *Error values.
func (c *Client) DeviceAuth(ctx context.Context, r DeviceAuthRequest) (*oauth2.DeviceAuthResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, FlowCallTimeout)
	defer cancel()
	form := url.Values{"client_id": {r.ClientID}}
	if len(r.Scopes) > 0 {
		form.Set("scope", strings.Join(r.Scopes, " "))
	}
	auth, err := r.clientAuth(form, r.DeviceURL)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	status, body, err := c.postForm(ctx, DeviceAuthEndpoint, r.DeviceURL, form, auth)
	if err != nil {
		return nil, err
	}
	if status < 200 || status > 299 {
		return nil, &Error{Endpoint: DeviceAuthEndpoint, Status: status, Code: answerCode(body), Permanent: !Transient(status, answerCode(body))}
	}
	var ans deviceAuthAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		return nil, &Error{Reason: DeviceAuthEndpoint + " answered something that is not an OAuth2 answer", Permanent: true}
	}
	da := &oauth2.DeviceAuthResponse{
		DeviceCode:              ans.DeviceCode,
		UserCode:                ans.UserCode,
		VerificationURI:         firstNonEmpty(ans.VerificationURI, ans.VerificationURL),
		VerificationURIComplete: ans.VerificationURIComplete,
		Interval:                cappedSeconds(ans.Interval.String()),
	}
	if secs := cappedSeconds(ans.ExpiresIn.String()); secs > 0 {
		da.Expiry = start.Add(time.Duration(secs) * time.Second)
	}
	if reason := checkDeviceAnswer(da); reason != "" {
		return nil, &Error{Reason: DeviceAuthEndpoint + " " + reason, Permanent: true}
	}
	return da, nil
}

// checkDeviceAnswer says what is wrong with a device authorization
// answer; "" when nothing.
func checkDeviceAnswer(da *oauth2.DeviceAuthResponse) string {
	switch {
	case da.DeviceCode == "" || da.UserCode == "" || da.VerificationURI == "":
		return "answered without device_code, user_code or verification_uri"
	case len(da.DeviceCode) > maxDeviceField || len(da.UserCode) > maxDeviceField ||
		len(da.VerificationURI) > maxDeviceField || len(da.VerificationURIComplete) > maxDeviceField:
		return "answered values that are too long"
	case !IsWebURL(da.VerificationURI) || da.VerificationURIComplete != "" && !IsWebURL(da.VerificationURIComplete):
		return "answered a verification URI that is not an http(s) URL"
	}
	return ""
}

// IsWebURL reports whether raw is an absolute http(s) URL.
func IsWebURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// DeviceGrantType is the grant_type of a device access token request.
const DeviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"

// Device poll states: answers that are not errors but say the user has
// not answered yet (RFC 8628 section 3.5).
const (
	DevicePending  = "authorization_pending"
	DeviceSlowDown = "slow_down"
)

// DevicePoll is the outcome of one device access token request: a Token
// when the user approved, else State (DevicePending or DeviceSlowDown).
type DevicePoll struct {
	Token *oauth2.Token
	State string
}

// deviceAnswer is a token endpoint's answer to a device poll: a token, or
// an OAuth2 error (some providers, e.g. GitHub, answer errors with 200).
type deviceAnswer struct {
	AccessToken  string      `json:"access_token"`
	TokenType    string      `json:"token_type"`
	RefreshToken string      `json:"refresh_token"`
	ExpiresIn    json.Number `json:"expires_in"`
	Error        string      `json:"error"`
}

// PollDevice makes one device access token request (RFC 8628 section 3.4)
// for deviceCode with the client authentication of r at r.TokenURL.
// golang.org/x/oauth2's DeviceAccessToken polls until the user answers;
// the engine polls once per read or periodic run instead. Other OAuth2
// error answers (expired_token, access_denied, ...) are *Error values with
// their Code, as are all other failures.
func (c *Client) PollDevice(ctx context.Context, r Request, deviceCode string) (*DevicePoll, error) {
	ctx, cancel := context.WithTimeout(ctx, FlowCallTimeout)
	defer cancel()
	form := url.Values{"grant_type": {DeviceGrantType}, "device_code": {deviceCode}, "client_id": {r.ClientID}}
	auth, err := r.clientAuth(form, r.TokenURL)
	if err != nil {
		return nil, err
	}
	status, body, err := c.postForm(ctx, TokenEndpoint, r.TokenURL, form, auth)
	if err != nil {
		return nil, err
	}
	var ans deviceAnswer
	jsonErr := json.Unmarshal(body, &ans)
	code := SafeCode(ans.Error)
	switch {
	case ans.Error != "" && (code == DevicePending || code == DeviceSlowDown):
		return &DevicePoll{State: code}, nil
	case ans.Error != "", status < 200 || status > 299:
		return nil, &Error{Status: status, Code: code, Permanent: !Transient(status, code)}
	case jsonErr != nil || ans.AccessToken == "":
		return nil, &Error{Status: status, Reason: "token endpoint answered without an access token", Permanent: true}
	}
	tok := &oauth2.Token{AccessToken: ans.AccessToken, TokenType: ans.TokenType, RefreshToken: ans.RefreshToken, ExpiresIn: cappedSeconds(ans.ExpiresIn.String())}
	return &DevicePoll{Token: tok}, nil
}

// clientAuth adds r's client authentication for a request to endpointURL
// that the engine builds itself (device authorization, device polling,
// revocation): a fresh client assertion in form (private_key_jwt, its aud
// AssertionAudience or endpointURL), client_secret in form (auth_style
// body), or HTTP Basic (any other style), form-encoding id and secret first
// (RFC 6749 section 2.3.1). A client without a secret or key (a public
// client) sends no authentication; so does Basic with an empty secret. It
// returns the function that sets the request's header, nil when none.
func (r Request) clientAuth(form url.Values, endpointURL string) (func(*http.Request), error) {
	switch {
	case r.ClientKey != nil:
		return nil, clientAssertion(form, r.ClientKey, r.ClientID, firstNonEmpty(r.AssertionAudience, endpointURL), time.Now())
	case r.ClientSecret == "":
		return nil, nil
	case r.AuthStyle == "body":
		form.Set("client_secret", r.ClientSecret)
		return nil, nil
	}
	id, secret := url.QueryEscape(r.ClientID), url.QueryEscape(r.ClientSecret)
	return func(req *http.Request) { req.SetBasicAuth(id, secret) }, nil
}

// postForm POSTs form to endpointURL (the endpoint named endpoint) and
// returns the answer's status and body (at most 1 MiB). auth, when set,
// adds client authentication to the request. Failures without an answer
// are *Error values.
func (c *Client) postForm(ctx context.Context, endpoint, endpointURL string, form url.Values, auth func(*http.Request)) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpointURL, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, &Error{Reason: endpoint + " has an invalid URL", Permanent: true}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if auth != nil {
		auth(req)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, classifyAt(endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, &Error{Reason: endpoint + " answer could not be read"}
	}
	return resp.StatusCode, body, nil
}

// answerCode is the OAuth2 error code of an error answer, JSON or
// form-encoded; "" when it has none or an unsafe one.
func answerCode(body []byte) string {
	var oe struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &oe) != nil {
		if vals, err := url.ParseQuery(string(body)); err == nil {
			oe.Error = vals.Get("error")
		}
	}
	return SafeCode(oe.Error)
}
