package types

import (
	"errors"
	"fmt"
)

// OAuth2 grant types.
const (
	GrantClientCredentials = "client_credentials"
	GrantRefreshToken      = "refresh_token"
	GrantAuthorizationCode = "authorization_code"
	GrantDeviceCode        = "device_code"
)

// OAuth2 is an OAuth 2.0 client (RFC 6749) whose access tokens the engine
// obtains and refreshes.
var OAuth2 = register(&Type{
	Name:        "oauth2",
	Description: "An OAuth 2.0 client (RFC 6749); the engine obtains, caches and refreshes its access tokens.",
	Refreshable: true,
	Rotatable:   true,
	Grants:      []string{GrantClientCredentials, GrantRefreshToken, GrantAuthorizationCode, GrantDeviceCode},
	Fields: []Field{
		{Name: "grant_type", Kind: KindString, Default: GrantClientCredentials,
			Allowed:     []string{GrantClientCredentials, GrantRefreshToken, GrantAuthorizationCode, GrantDeviceCode},
			Description: "How tokens are obtained: client_credentials, refresh_token, authorization_code or device_code."},
		{Name: "provider", Kind: KindString, MaxLength: 128, Description: "Name of a provider preset (see providers/) that supplies the URLs and default scopes."},
		{Name: "tenant", Kind: KindString, MaxLength: 128, Description: `Tenant for provider presets whose URLs name one (microsoft); defaults to "common".`},
		{Name: "client_id", Kind: KindString, Required: true, MaxLength: 1024, Description: "The OAuth2 client identifier."},
		{Name: "client_secret", Kind: KindString, Secret: true, Description: "The OAuth2 client secret; required for client_credentials."},
		{Name: "token_url", Kind: KindString, URL: true, Description: "Token endpoint; required unless the provider preset has one."},
		{Name: "auth_url", Kind: KindString, URL: true, Description: "Authorization endpoint, for the authorization_code grant."},
		{Name: "device_url", Kind: KindString, URL: true, Description: "Device authorization endpoint (RFC 8628), for the device_code grant."},
		{Name: "revocation_url", Kind: KindString, URL: true, Description: "Token revocation endpoint (RFC 7009)."},
		{Name: "scopes", Kind: KindStringList, MaxLength: 256, Description: "Scopes to request; defaults to the provider preset's."},
		{Name: "audience", Kind: KindString, MaxLength: 1024, Description: "Audience parameter sent with token requests, for providers that need it."},
		{Name: "auth_style", Kind: KindString, Default: "auto", Allowed: []string{"auto", "header", "body"},
			Description: "How the client authenticates to the token endpoint: auto, header (HTTP basic) or body (form parameters)."},
		{Name: "refresh_token", Kind: KindString, Secret: true, Description: "A refresh token; required for the refresh_token grant."},
	},
	validate: validateOAuth2,
})

func validateOAuth2(v Values) error {
	var errs []error
	if v.String("provider") == "" && v.String("token_url") == "" {
		errs = append(errs, errors.New(`field "token_url" is required when no "provider" is set`))
	}
	switch grant := v.String("grant_type"); grant {
	case GrantClientCredentials:
		if v.isEmpty("client_secret") {
			errs = append(errs, fmt.Errorf(`field "client_secret" is required for grant_type %s`, grant))
		}
	case GrantRefreshToken:
		if v.isEmpty("refresh_token") {
			errs = append(errs, fmt.Errorf(`field "refresh_token" is required for grant_type %s`, grant))
		}
	}
	return errors.Join(errs...)
}
