package nebula

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/oauth2"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/types"
)

// oauthEndpoints are what a flow talks to: the credential's explicit URLs,
// else its provider preset's.
type oauthEndpoints struct {
	AuthURL   string
	TokenURL  string
	DeviceURL string
	// AuthStyle is "auto", "header" or "body".
	AuthStyle string
	Scopes    []string
	// PKCE is false only for presets that do not support it.
	PKCE bool
}

// flowEndpoints resolves the endpoints of oauth2 field values.
func (b *backend) flowEndpoints(ctx context.Context, s logical.Storage, v types.Values) (oauthEndpoints, error) {
	p, err := b.resolveProvider(ctx, s, v)
	if err != nil {
		return oauthEndpoints{}, err
	}
	ep := oauthEndpoints{
		AuthURL:   firstNonEmpty(v.String("auth_url"), p.AuthURL),
		TokenURL:  firstNonEmpty(v.String("token_url"), p.TokenURL),
		DeviceURL: firstNonEmpty(v.String("device_url"), p.DeviceURL),
		AuthStyle: firstNonEmpty(v.String("auth_style"), p.AuthStyle, "auto"),
		Scopes:    v.Strings("scopes"),
		PKCE:      v.String("provider") == "" || p.PKCE,
	}
	if len(ep.Scopes) == 0 {
		ep.Scopes = p.Scopes
	}
	return ep, nil
}

// oauth2Config is the golang.org/x/oauth2 configuration of a flow.
func (ep oauthEndpoints) oauth2Config(v types.Values, redirectURI string) *oauth2.Config {
	style := oauth2.AuthStyleAutoDetect
	switch ep.AuthStyle {
	case "header":
		style = oauth2.AuthStyleInHeader
	case "body", types.AuthStylePrivateKeyJWT:
		style = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{
		ClientID:     v.String("client_id"),
		ClientSecret: v.String("client_secret"),
		Endpoint:     oauth2.Endpoint{AuthURL: ep.AuthURL, TokenURL: ep.TokenURL, DeviceAuthURL: ep.DeviceURL, AuthStyle: style},
		RedirectURL:  redirectURI,
		Scopes:       ep.Scopes,
	}
}

// upstreamTimeout bounds one flow's calls to an authorization server.
const upstreamTimeout = 30 * time.Second

// upstreamContext is ctx with the engine's policy HTTP client for
// golang.org/x/oauth2 and a timeout.
func (b *backend) upstreamContext(ctx context.Context, cfg *Config) (context.Context, context.CancelFunc) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, b.upstream(cfg).HTTPClient())
	return context.WithTimeout(ctx, upstreamTimeout)
}

// exchangeCode exchanges an authorization code with the flow's PKCE
// verifier at the token endpoint.
func (b *backend) exchangeCode(ctx context.Context, s logical.Storage, cfg *Config, f *flow, code string) (*oauth2.Token, error) {
	ep, err := b.flowEndpoints(ctx, s, f.upstreamValues())
	if err != nil {
		return nil, err
	}
	var opts []oauth2.AuthCodeOption
	if f.Verifier != "" {
		opts = append(opts, oauth2.VerifierOption(f.Verifier))
	}
	opts, err = withClientAssertion(opts, f.Values, ep.TokenURL)
	if err != nil {
		return nil, newError(KindInvalidCallback, "the code could not be exchanged: %v", err)
	}
	ctx, cancel := b.upstreamContext(ctx, cfg)
	defer cancel()
	tok, err := ep.oauth2Config(f.Values, f.RedirectURI).Exchange(ctx, code, opts...)
	if err == nil && tok.AccessToken == "" {
		err = &endpointError{Endpoint: "token endpoint", Reason: "answered without an access token"}
	}
	if err != nil {
		ee := classifyEndpointError("token endpoint", err)
		kind := KindInvalidCallback
		if ee.Transient {
			kind = KindUnavailable
		}
		return nil, &CredentialError{Kind: kind, Msg: fmt.Sprintf("the authorization server did not accept the code: %v", ee), Err: ee}
	}
	return tok, nil
}

// startDevice asks the device authorization endpoint for a device code
// and the user code to show (RFC 8628 section 3.1).
func (b *backend) startDevice(ctx context.Context, cfg *Config, ep oauthEndpoints, v types.Values) (*oauth2.DeviceAuthResponse, error) {
	ctx, cancel := b.upstreamContext(ctx, cfg)
	defer cancel()
	da, err := requestDeviceAuth(ctx, ep.oauth2Config(v, ""))
	if err == nil {
		err = checkDeviceAnswer(da)
	}
	if err != nil {
		ee := classifyEndpointError("device authorization endpoint", err)
		kind := KindInvalidInput
		if ee.Transient {
			kind = KindUnavailable
		}
		return nil, &CredentialError{Kind: kind, Msg: fmt.Sprintf("starting the device flow: %v", ee), Err: ee}
	}
	return da, nil
}

// maxDeviceField bounds the strings of a device authorization answer the
// engine stores and shows.
const maxDeviceField = 2048

func checkDeviceAnswer(da *oauth2.DeviceAuthResponse) error {
	bad := &endpointError{Endpoint: "device authorization endpoint"}
	switch {
	case da.DeviceCode == "" || da.UserCode == "" || da.VerificationURI == "":
		bad.Reason = "answered without device_code, user_code or verification_uri"
	case len(da.DeviceCode) > maxDeviceField || len(da.UserCode) > maxDeviceField ||
		len(da.VerificationURI) > maxDeviceField || len(da.VerificationURIComplete) > maxDeviceField:
		bad.Reason = "answered values that are too long"
	case !isWebURL(da.VerificationURI) || da.VerificationURIComplete != "" && !isWebURL(da.VerificationURIComplete):
		bad.Reason = "answered a verification URI that is not an http(s) URL"
	default:
		return nil
	}
	return bad
}

func isWebURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// deviceGrantType is the grant_type of a device access token request.
const deviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"

// pollDevice makes one device access token request (RFC 8628 section
// 3.4). golang.org/x/oauth2's DeviceAccessToken polls until the user
// answers; the engine polls once per read or periodic run instead. An OAuth2
// error answer (authorization_pending, slow_down, ...) is an
// *endpointError with its Code.
func (b *backend) pollDevice(ctx context.Context, s logical.Storage, cfg *Config, f *flow) (*oauth2.Token, error) {
	ep, err := b.flowEndpoints(ctx, s, f.upstreamValues())
	if err != nil {
		return nil, err
	}
	clientID, secret := f.Values.String("client_id"), f.Values.String("client_secret")
	form := url.Values{"grant_type": {deviceGrantType}, "device_code": {f.DeviceCode}, "client_id": {clientID}}
	if key, err := clientAssertionKey(f.Values); err != nil || key != nil {
		secret = "" // private_key_jwt: the assertion authenticates the client
		if err := addClientAssertion(form, key, err, clientID, firstNonEmpty(f.Values.String("assertion_audience"), ep.TokenURL)); err != nil {
			return nil, err
		}
	}
	if secret != "" && ep.AuthStyle == "body" {
		form.Set("client_secret", secret)
	}
	ctx, cancel := context.WithTimeout(ctx, upstreamTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, &endpointError{Endpoint: "token endpoint", Reason: "invalid token_url"}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if secret != "" && ep.AuthStyle != "body" {
		// RFC 6749 section 2.3.1: form-encode, then HTTP Basic.
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	}
	resp, err := b.upstream(cfg).HTTPClient().Do(req)
	if err != nil {
		return nil, classifyEndpointError("token endpoint", err)
	}
	defer resp.Body.Close()
	return readDeviceAnswer(resp)
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

func readDeviceAnswer(resp *http.Response) (*oauth2.Token, error) {
	ee := &endpointError{Endpoint: "token endpoint", Status: resp.StatusCode}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		ee.Reason, ee.Transient = "answer could not be read", true
		return nil, ee
	}
	var ans deviceAnswer
	jsonErr := json.Unmarshal(body, &ans)
	switch {
	case ans.Error != "":
		ee.Code = upstream.SafeCode(ans.Error)
		ee.Transient = transientAnswer(ee.Status, ee.Code)
		return nil, ee
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		ee.Transient = transientAnswer(ee.Status, "")
		return nil, ee
	case jsonErr != nil || ans.AccessToken == "":
		ee.Reason = "answered without an access token"
		return nil, ee
	}
	expiresIn := cappedSeconds(ans.ExpiresIn.String())
	return &oauth2.Token{AccessToken: ans.AccessToken, TokenType: ans.TokenType, RefreshToken: ans.RefreshToken, ExpiresIn: expiresIn}, nil
}

// endpointError is a failed call to an authorization server endpoint. Like
// upstream.Error it holds the status and the OAuth2 error code only, never
// the response body.
type endpointError struct {
	// Endpoint names the endpoint, e.g. "token endpoint".
	Endpoint string
	// Status is the HTTP status of the answer; 0 when none came.
	Status int
	// Code is the OAuth2 error code, e.g. "invalid_grant".
	Code string
	// Reason describes failures without an OAuth2 error answer.
	Reason string
	// Transient failures may pass on a later try (no answer, 5xx, 429).
	Transient bool
}

func (e *endpointError) Error() string {
	switch {
	case e.Status != 0 && e.Code != "":
		return fmt.Sprintf("%s answered %d %s", e.Endpoint, e.Status, e.Code)
	case e.Code != "":
		return fmt.Sprintf("%s answered %s", e.Endpoint, e.Code)
	case e.Reason != "":
		return e.Endpoint + " " + e.Reason
	}
	return fmt.Sprintf("%s answered %d", e.Endpoint, e.Status)
}

func transientAnswer(status int, code string) bool {
	return status >= 500 || status == http.StatusTooManyRequests || code == "temporarily_unavailable" || code == "server_error"
}

// classifyEndpointError turns an error of golang.org/x/oauth2 or of the
// policy HTTP client into an *endpointError without any response body.
func classifyEndpointError(endpoint string, err error) *endpointError {
	ee := &endpointError{Endpoint: endpoint}
	var (
		known  *endpointError
		re     *oauth2.RetrieveError
		ue     *upstream.Error
		netErr net.Error
		urlErr *url.Error
	)
	switch {
	case errors.As(err, &known):
		return known
	case errors.As(err, &re):
		if re.Response != nil {
			ee.Status = re.Response.StatusCode
		}
		ee.Code = upstream.SafeCode(re.ErrorCode)
		ee.Transient = transientAnswer(ee.Status, ee.Code)
	case errors.As(err, &ue):
		ee.Reason, ee.Transient = "refused: "+ue.Reason, !ue.Permanent
	case errors.As(err, &netErr) && netErr.Timeout(), errors.Is(err, context.DeadlineExceeded):
		ee.Reason, ee.Transient = "timed out", true
	case errors.As(err, &urlErr):
		ee.Reason, ee.Transient = "unreachable", true
	default:
		ee.Reason = "answered something that is not an OAuth2 answer"
	}
	return ee
}
