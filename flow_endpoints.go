package nebula

import (
	"context"
	"errors"
	"fmt"

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

// flowRequest is the upstream request of a flow's client (values v) at
// its token endpoint: client_id and client_secret with the endpoint's
// auth_style, or the private_key_jwt key. Errors name the field, never its
// value.
func flowRequest(ep oauthEndpoints, v types.Values) (upstream.Request, error) {
	r := upstream.Request{
		ClientID: v.String("client_id"), ClientSecret: v.String("client_secret"),
		TokenURL: ep.TokenURL, AuthStyle: ep.AuthStyle, Scopes: ep.Scopes,
	}
	err := signedJWTRequest(v, &r)
	return r, err
}

// flowCallError is the CredentialError of a failed call to an
// authorization server: kind when it is permanent, KindUnavailable when
// it is transient (see internal/upstream's rule).
func flowCallError(err error, kind Kind, doing string) *CredentialError {
	var ue *upstream.Error
	if errors.As(err, &ue) && !ue.Permanent {
		kind = KindUnavailable
	}
	return &CredentialError{Kind: kind, Msg: fmt.Sprintf("%s: %v", doing, err), Err: err}
}

// exchangeCode exchanges an authorization code with the flow's PKCE
// verifier at the token endpoint.
func (b *backend) exchangeCode(ctx context.Context, s logical.Storage, cfg *Config, f *flow, code string) (*oauth2.Token, error) {
	ep, err := b.flowEndpoints(ctx, s, f.upstreamValues())
	if err != nil {
		return nil, err
	}
	r, err := flowRequest(ep, f.Values)
	if err != nil {
		return nil, newError(KindInvalidCallback, "the code could not be exchanged: %v", err)
	}
	tok, err := b.upstream(cfg).Exchange(ctx, upstream.ExchangeRequest{Request: r, Code: code, Verifier: f.Verifier, RedirectURI: f.RedirectURI})
	if err != nil {
		return nil, flowCallError(err, KindInvalidCallback, "the authorization server did not accept the code")
	}
	return tok, nil
}

// startDevice asks the device authorization endpoint for a device code
// and the user code to show (RFC 8628 section 3.1), authenticating the
// client as its token requests do.
func (b *backend) startDevice(ctx context.Context, cfg *Config, ep oauthEndpoints, v types.Values) (*oauth2.DeviceAuthResponse, error) {
	r, err := flowRequest(ep, v)
	if err != nil {
		return nil, invalidInput(err)
	}
	da, err := b.upstream(cfg).DeviceAuth(ctx, upstream.DeviceAuthRequest{Request: r, DeviceURL: ep.DeviceURL})
	if err != nil {
		return nil, flowCallError(err, KindInvalidInput, "starting the device flow")
	}
	return da, nil
}

// pollDevice makes one device access token request for the flow (see
// upstream.Client.PollDevice): a token, a state (authorization_pending,
// slow_down), or an error, an *upstream.Error for every failure of the
// call itself.
func (b *backend) pollDevice(ctx context.Context, s logical.Storage, cfg *Config, f *flow) (*upstream.DevicePoll, error) {
	ep, err := b.flowEndpoints(ctx, s, f.upstreamValues())
	if err != nil {
		return nil, err
	}
	r, err := flowRequest(ep, f.Values)
	if err != nil {
		return nil, &upstream.Error{Reason: "token endpoint not called: " + err.Error(), Permanent: true}
	}
	return b.upstream(cfg).PollDevice(ctx, r, f.DeviceCode)
}
