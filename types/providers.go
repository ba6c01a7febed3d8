package types

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Provider is an OAuth2 provider preset: the endpoints and defaults an oauth2
// credential gets by naming it in "provider".
type Provider struct {
	Name          string   `json:"name"`
	AuthURL       string   `json:"auth_url,omitempty"`
	TokenURL      string   `json:"token_url,omitempty"`
	DeviceURL     string   `json:"device_url,omitempty"`
	RevocationURL string   `json:"revocation_url,omitempty"`
	Scopes        []string `json:"scopes,omitempty"`
	// PKCE is true when the provider supports (or requires) PKCE S256.
	PKCE bool `json:"pkce"`
	// AuthStyle is "auto", "header" or "body".
	AuthStyle string `json:"auth_style,omitempty"`
	// BuiltIn presets cannot be changed or deleted.
	BuiltIn bool `json:"built_in"`
}

var tenantRe = regexp.MustCompile(`^[A-Za-z0-9.-]{1,128}$`)

// WithTenant returns the preset with "{tenant}" in its URLs replaced. An
// empty tenant means "common" (Microsoft's multi-tenant endpoint).
func (p Provider) WithTenant(tenant string) (Provider, error) {
	if tenant == "" {
		tenant = "common"
	}
	if !tenantRe.MatchString(tenant) {
		return p, errors.New(`field "tenant" must be a tenant id or domain name`)
	}
	for _, u := range []*string{&p.AuthURL, &p.TokenURL, &p.DeviceURL, &p.RevocationURL} {
		*u = strings.ReplaceAll(*u, "{tenant}", tenant)
	}
	return p, nil
}

// Validate checks a custom provider preset.
func (p Provider) Validate() error {
	var errs []error
	if p.TokenURL == "" {
		errs = append(errs, errors.New(`field "token_url" is required`))
	}
	for name, u := range map[string]string{"auth_url": p.AuthURL, "token_url": p.TokenURL, "device_url": p.DeviceURL, "revocation_url": p.RevocationURL} {
		if u == "" {
			continue
		}
		if err := checkURL(u); err != nil {
			errs = append(errs, fmt.Errorf("field %q: %w", name, err))
		}
	}
	if p.AuthStyle != "" && p.AuthStyle != "auto" && p.AuthStyle != "header" && p.AuthStyle != "body" {
		errs = append(errs, errors.New(`field "auth_style" must be one of auto, header, body`))
	}
	if len(p.Scopes) > MaxListItems {
		errs = append(errs, fmt.Errorf(`field "scopes" has %d items; at most %d are allowed`, len(p.Scopes), MaxListItems))
	}
	return errors.Join(errs...)
}

// BuiltinProviders are the presets every mount has.
var BuiltinProviders = map[string]Provider{
	"google": {
		Name:          "google",
		AuthURL:       "https://accounts.google.com/o/oauth2/v2/auth",
		TokenURL:      "https://oauth2.googleapis.com/token",
		DeviceURL:     "https://oauth2.googleapis.com/device/code",
		RevocationURL: "https://oauth2.googleapis.com/revoke",
		Scopes:        []string{"openid", "email"},
		PKCE:          true,
		AuthStyle:     "body",
		BuiltIn:       true,
	},
	// GoogleServiceAccount credentials (grant_type jwt_bearer) take the rest
	// from their service_account_json: issuer, private_key, key_id, and the
	// token URL (the key file's token_uri). Scopes go in the assertion's
	// scope claim, as Google's server-to-server flow wants.
	GoogleServiceAccount: {
		Name:          GoogleServiceAccount,
		TokenURL:      GoogleTokenURL,
		RevocationURL: "https://oauth2.googleapis.com/revoke",
		AuthStyle:     "body",
		BuiltIn:       true,
	},
	"github": {
		Name:      "github",
		AuthURL:   "https://github.com/login/oauth/authorize",
		TokenURL:  "https://github.com/login/oauth/access_token",
		DeviceURL: "https://github.com/login/device/code",
		Scopes:    []string{"read:user"},
		PKCE:      true,
		AuthStyle: "body",
		BuiltIn:   true,
	},
	"microsoft": {
		Name:      "microsoft",
		AuthURL:   "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
		TokenURL:  "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
		DeviceURL: "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode",
		Scopes:    []string{"openid", "offline_access"},
		PKCE:      true,
		AuthStyle: "body",
		BuiltIn:   true,
	},
	"gitlab": {
		Name:          "gitlab",
		AuthURL:       "https://gitlab.com/oauth/authorize",
		TokenURL:      "https://gitlab.com/oauth/token",
		DeviceURL:     "https://gitlab.com/oauth/authorize_device",
		RevocationURL: "https://gitlab.com/oauth/revoke",
		Scopes:        []string{"read_user"},
		PKCE:          true,
		AuthStyle:     "body",
		BuiltIn:       true,
	},
	"slack": {
		Name:          "slack",
		AuthURL:       "https://slack.com/oauth/v2/authorize",
		TokenURL:      "https://slack.com/api/oauth.v2.access",
		RevocationURL: "https://slack.com/api/auth.revoke",
		PKCE:          false,
		AuthStyle:     "body",
		BuiltIn:       true,
	},
}
