// Package upstream obtains OAuth2 tokens from authorization servers through
// golang.org/x/oauth2, with the engine's network policy: allowed hosts,
// https unless a host is listed for plain http, no connection to loopback,
// link-local, private or unspecified addresses of hosts that are not listed
// (checked on the resolved address when connecting), no redirects to other
// hosts, timeouts, and bounded retries with backoff for transient failures.
// Every outbound call of the engine uses the transport of NewTransport.
//
// All of the engine's calls to OAuth2 endpoints are here: token requests
// (Token), revocation (Revoke), and the interactive flows' code exchange
// (Exchange), device authorization (DeviceAuth) and device polling
// (PollDevice).
//
// Errors never carry upstream response bodies: a *Error holds the status
// code and the OAuth2 error code (RFC 6749 section 5.2) only.
//
// One rule says which failures are transient (Transient, classify), for
// every endpoint:
//   - transient: no answer (unreachable, timed out, cancelled, an answer
//     that could not be read, a Retry-After pause the request could not
//     wait for), a 5xx or 429 answer (the host limiter honours a 429's or
//     503's Retry-After before the next request to that host), and an
//     answer with the OAuth2 code temporarily_unavailable or server_error
//     whatever its status;
//   - permanent: any other answer (other 4xx, a 2xx or 3xx that carries an
//     OAuth2 error code, lacks the fields asked for or is not an OAuth2
//     answer), policy refusals, and requests that could not be built (an
//     invalid URL, a key that cannot sign).
//
// Token retries transient failures; the flows' calls are made once.
// The device flow's authorization_pending and slow_down answers are not
// errors but states of a DevicePoll.
package upstream

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// HostPolicy decides whether a URL's scheme and host may be called (the
// HostAllowed half of a Policy), for checks of URLs when they are written.
type HostPolicy func(scheme, hostport string) bool

// Client calls token endpoints. The zero value is not usable; use New.
type Client struct {
	http *http.Client
	// Attempts is how many times a transiently failing request is tried.
	Attempts int
	// Backoff is the wait before the second attempt; it doubles after.
	Backoff time.Duration
}

// Default limits of upstream calls.
const (
	DefaultTimeout  = 10 * time.Second
	DefaultAttempts = 3
	DefaultBackoff  = 250 * time.Millisecond
	// DialTimeout bounds connecting to an upstream host (a request's
	// context, bounded by the timeouts below, usually ends first).
	DialTimeout = 30 * time.Second
	// DialKeepAlive is the TCP keep-alive period of upstream connections.
	DialKeepAlive = 30 * time.Second
)

// Bounds of whole operations that make outbound calls, attempts and backoff
// included (each attempt is bounded by DefaultTimeout). They are one policy:
// an operation gives up after 30 seconds.
const (
	// TokenRequestTimeout bounds one token request to a token endpoint.
	TokenRequestTimeout = 30 * time.Second
	// FlowCallTimeout bounds one interactive flow's call to an
	// authorization server (code exchange, device authorization, polling).
	FlowCallTimeout = 30 * time.Second
	// MirrorTimeout bounds one mirror write or delete to a mirror target.
	MirrorTimeout = 30 * time.Second
)

// New returns a Client whose requests go only where policy allows (see
// NewTransport), through a per-host limit of requests in flight: limits,
// or a HostLimiter of its own with the default limit when limits is nil.
// A backend passes its one limiter to every client it builds (one per
// configuration), so they share the per-host slots and pauses. roots, when
// not nil, replaces the system's trusted CAs (tests, private CAs).
func New(policy Policy, roots *x509.CertPool, limits *HostLimiter) *Client {
	return limitHosts(&Client{http: NewHTTPClient(policy, roots), Attempts: DefaultAttempts, Backoff: DefaultBackoff}, limits)
}

// HTTPClient is the policy-enforcing HTTP client, for other upstream calls
// (webhooks, mirrors, notifications).
func (c *Client) HTTPClient() *http.Client { return c.http }

// CheckURL reports whether a URL is allowed by the policy.
func CheckURL(policy HostPolicy, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New("not an absolute URL")
	}
	if !policy(u.Scheme, u.Host) {
		return fmt.Errorf("%s://%s is not allowed: use https, or list the host in insecure_http_hosts (and allowed_hosts, when set)", u.Scheme, u.Host)
	}
	return nil
}

// Request describes a token request.
type Request struct {
	Grant        string // "client_credentials", "refresh_token" or "jwt_bearer"
	ClientID     string
	ClientSecret string
	TokenURL     string
	Scopes       []string
	// Audience is sent as the "audience" parameter (client_credentials).
	Audience string
	// AuthStyle is "auto", "header" or "body".
	AuthStyle string
	// RefreshToken is used by the refresh_token grant.
	RefreshToken string
	// Params are extra token request parameters (client_credentials).
	Params url.Values
	// ClientKey, when set, authenticates the client with a JWT it signs
	// afresh for every request (private_key_jwt, RFC 7523 section 2.2)
	// instead of ClientSecret and AuthStyle.
	ClientKey *SigningKey
	// AssertionAudience is the aud of client assertions; empty means the
	// URL of the endpoint called.
	AssertionAudience string
	// Bearer is the assertion of the jwt_bearer grant (RFC 7523 section
	// 2.1), signed afresh for every request.
	Bearer *BearerAssertion
}

// Error is a failed call to an OAuth2 endpoint.
type Error struct {
	// Endpoint names the endpoint that answered Status, e.g. "device
	// authorization endpoint"; empty means TokenEndpoint.
	Endpoint string
	// Status is the HTTP status of the endpoint's answer; 0 when no
	// answer came.
	Status int
	// Code is the OAuth2 error code, e.g. "invalid_client".
	Code string
	// Reason describes failures without an answer (network, policy).
	Reason string
	// Permanent errors are not retried (see the package doc for the rule).
	Permanent bool
}

// RetryableError tells SDK retry loops (the AWS SDK's) whether to retry a
// request that failed with e: policy refusals and other permanent errors are
// not retried.
func (e *Error) RetryableError() bool { return !e.Permanent }

func (e *Error) Error() string {
	endpoint := firstNonEmpty(e.Endpoint, TokenEndpoint)
	switch {
	case e.Status != 0 && e.Code != "":
		return fmt.Sprintf("%s answered %d %s", endpoint, e.Status, e.Code)
	case e.Status != 0 && e.Reason != "":
		return fmt.Sprintf("%s (%d)", e.Reason, e.Status)
	case e.Status != 0:
		return fmt.Sprintf("%s answered %d", endpoint, e.Status)
	}
	return e.Reason
}

// Transient reports whether an endpoint's answer with status and OAuth2
// error code code may pass on a later try: 5xx, 429, or the codes
// temporarily_unavailable and server_error.
func Transient(status int, code string) bool {
	return status >= 500 || status == http.StatusTooManyRequests || code == "temporarily_unavailable" || code == "server_error"
}

func endpointAuthStyle(style string) oauth2.AuthStyle {
	switch style {
	case "header":
		return oauth2.AuthStyleInHeader
	case "body":
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleAutoDetect
}

// Token obtains a token, retrying transient failures with backoff.
func (c *Client) Token(ctx context.Context, r Request) (*oauth2.Token, error) {
	var lastErr error
	wait := c.Backoff
	for attempt := 1; attempt <= max(c.Attempts, 1); attempt++ {
		tok, err := c.tokenOnce(ctx, r)
		if err == nil {
			return tok, nil
		}
		lastErr = err
		var ue *Error
		if errors.As(err, &ue) && ue.Permanent || attempt == c.Attempts {
			break
		}
		select {
		case <-ctx.Done():
			return nil, &Error{Reason: "token request cancelled: " + ctx.Err().Error()}
		case <-time.After(wait):
		}
		wait *= 2
	}
	return nil, lastErr
}

func (c *Client) tokenOnce(ctx context.Context, r Request) (*oauth2.Token, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.http)
	var (
		tok *oauth2.Token
		err error
	)
	now := time.Now()
	params := url.Values{}
	for k, v := range r.Params {
		params[k] = v
	}
	style, secret := endpointAuthStyle(r.AuthStyle), r.ClientSecret
	if r.ClientKey != nil {
		// No hook of x/oauth2 takes an assertion: it goes as parameters,
		// and x/oauth2 sends no client_secret when the secret is empty
		// (AuthStyleInParams), only client_id.
		if err := clientAssertion(params, r.ClientKey, r.ClientID, firstNonEmpty(r.AssertionAudience, r.TokenURL), now); err != nil {
			return nil, err
		}
		style, secret = oauth2.AuthStyleInParams, ""
	}
	if r.ClientID == "" && secret == "" {
		style = oauth2.AuthStyleInParams // no client authentication at all
	}
	switch r.Grant {
	case "client_credentials":
		if r.Audience != "" {
			params.Set("audience", r.Audience)
		}
		cc := clientcredentials.Config{
			ClientID: r.ClientID, ClientSecret: secret, TokenURL: r.TokenURL,
			Scopes: r.Scopes, EndpointParams: params, AuthStyle: style,
		}
		tok, err = cc.Token(ctx)
	case "refresh_token":
		if r.RefreshToken == "" {
			return nil, &Error{Reason: "no refresh token", Permanent: true}
		}
		if r.ClientKey != nil {
			// x/oauth2's refresh takes no extra parameters; its client
			// credentials source lets grant_type be replaced.
			params.Set("grant_type", "refresh_token")
			params.Set("refresh_token", r.RefreshToken)
			cc := clientcredentials.Config{ClientID: r.ClientID, TokenURL: r.TokenURL, EndpointParams: params, AuthStyle: style}
			tok, err = cc.Token(ctx)
			break
		}
		conf := oauth2.Config{
			ClientID: r.ClientID, ClientSecret: r.ClientSecret, Scopes: r.Scopes,
			Endpoint: oauth2.Endpoint{TokenURL: r.TokenURL, AuthStyle: endpointAuthStyle(r.AuthStyle)},
		}
		// An expired token makes the source refresh at once.
		tok, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: r.RefreshToken, Expiry: time.Unix(1, 0)}).Token()
	case "jwt_bearer":
		if r.Bearer == nil || r.Bearer.Key == nil {
			return nil, &Error{Reason: "no assertion key", Permanent: true}
		}
		claims := Claims{Issuer: r.Bearer.Issuer, Subject: firstNonEmpty(r.Bearer.Subject, r.Bearer.Issuer), Audience: firstNonEmpty(r.Bearer.Audience, r.TokenURL)}
		scopes := r.Scopes
		if r.Bearer.ScopeClaim {
			claims.Scope, scopes = strings.Join(r.Scopes, " "), nil
		}
		assertion, err := r.Bearer.Key.Sign(claims, now)
		if err != nil {
			return nil, &Error{Reason: "assertion: " + err.Error(), Permanent: true}
		}
		params.Set("grant_type", JWTBearerGrant)
		params.Set("assertion", assertion)
		cc := clientcredentials.Config{ClientID: r.ClientID, ClientSecret: secret, TokenURL: r.TokenURL, Scopes: scopes, EndpointParams: params, AuthStyle: style}
		tok, err = cc.Token(ctx)
		if err != nil {
			return nil, classify(err)
		}
	default:
		return nil, &Error{Reason: fmt.Sprintf("grant %q cannot be requested without a user", r.Grant), Permanent: true}
	}
	if err != nil {
		return nil, classify(err)
	}
	if tok.AccessToken == "" {
		return nil, &Error{Reason: "token endpoint answered without an access token", Permanent: true}
	}
	return tok, nil
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// classify is classifyAt for the token endpoint.
func classify(err error) error { return classifyAt(TokenEndpoint, err) }

// classifyAt turns an oauth2 or transport error of a call to endpoint into
// an *Error without any response body, transient or permanent by the
// package's rule.
func classifyAt(endpoint string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		code := SafeCode(re.ErrorCode)
		e := &Error{Status: status, Code: code, Permanent: !Transient(status, code)}
		if endpoint != TokenEndpoint {
			e.Endpoint = endpoint
		}
		return e
	}
	var ue *Error
	if errors.As(err, &ue) {
		return ue
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return &Error{Reason: endpoint + " timed out"}
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		var inner *Error
		if errors.As(urlErr.Err, &inner) {
			return inner
		}
		return &Error{Reason: endpoint + " unreachable: " + urlErr.Op + " " + redact(urlErr.URL)}
	}
	if strings.HasPrefix(err.Error(), "oauth2: cannot fetch token:") {
		// x/oauth2 could not read the answer's body.
		return &Error{Reason: endpoint + " answer could not be read"}
	}
	// An answer came that x/oauth2 could not use as a token answer
	// (cannot parse it, no access_token).
	return &Error{Reason: endpoint + " answered something that is not a token answer", Permanent: true}
}

// SafeCode keeps an OAuth2 error code only when it has the RFC 6749 form
// (printable ASCII without quotes or backslash, short).
func SafeCode(code string) string {
	if len(code) > 64 {
		return ""
	}
	for _, r := range code {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return ""
		}
	}
	return code
}

// redact drops the query of a URL (it may carry parameters).
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return u.String()
}

// Revoke asks a revocation endpoint (RFC 7009) to revoke a token, with the
// client authentication of r (see clientAuth); a client that does not
// authenticate with HTTP Basic names itself with client_id in the body.
// hint is "access_token" or "refresh_token".
func (c *Client) Revoke(ctx context.Context, r Request, revocationURL, token, hint string) error {
	form := url.Values{"token": {token}, "token_type_hint": {hint}}
	auth, err := r.clientAuth(form, revocationURL)
	if err != nil {
		return err
	}
	if auth == nil {
		form.Set("client_id", r.ClientID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, revocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return &Error{Reason: "invalid revocation URL", Permanent: true}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if auth != nil {
		auth(req)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return classifyAt(RevocationEndpoint, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		code := answerCode(body)
		return &Error{Endpoint: RevocationEndpoint, Status: resp.StatusCode, Code: code, Reason: "revocation refused", Permanent: !Transient(resp.StatusCode, code)}
	}
	return nil
}
