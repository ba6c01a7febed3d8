package types

import (
	"errors"
	"fmt"
	"slices"
)

// OAuth2 grant types.
const (
	GrantClientCredentials = "client_credentials"
	GrantRefreshToken      = "refresh_token"
	GrantAuthorizationCode = "authorization_code"
	GrantDeviceCode        = "device_code"
	// GrantJWTBearer is the JWT bearer grant (RFC 7523 section 2.1): the
	// engine signs an assertion with private_key for every token request.
	GrantJWTBearer = "jwt_bearer"
)

// AuthStylePrivateKeyJWT authenticates the client with a JWT signed by
// private_key (RFC 7523 section 2.2, OpenID Connect Core section 9).
const AuthStylePrivateKeyJWT = "private_key_jwt"

// GoogleServiceAccount is the provider preset whose credentials take a
// Google service-account JSON key (service_account_json).
const GoogleServiceAccount = "google-service-account"

// OAuth2 is an OAuth 2.0 client (RFC 6749) whose access tokens the engine
// obtains and refreshes.
var OAuth2 = register(&Type{
	Name:        "oauth2",
	Description: "An OAuth 2.0 client (RFC 6749); the engine obtains, caches and refreshes its access tokens.",
	Refreshable: true,
	Rotatable:   true,
	Grants:      []string{GrantClientCredentials, GrantRefreshToken, GrantAuthorizationCode, GrantDeviceCode, GrantJWTBearer},
	Fields: []Field{
		{Name: "grant_type", Kind: KindString, Default: GrantClientCredentials,
			Allowed:     []string{GrantClientCredentials, GrantRefreshToken, GrantAuthorizationCode, GrantDeviceCode, GrantJWTBearer},
			Description: "How tokens are obtained: client_credentials, refresh_token, authorization_code, device_code or jwt_bearer (RFC 7523: a signed assertion per token request)."},
		{Name: "provider", Kind: KindString, MaxLength: 128, Description: "Name of a provider preset (see providers/) that supplies the URLs and default scopes."},
		{Name: "tenant", Kind: KindString, MaxLength: 128, Description: `Tenant for provider presets whose URLs name one (microsoft); defaults to "common".`},
		{Name: "client_id", Kind: KindString, MaxLength: 1024, Description: "The OAuth2 client identifier; required except for jwt_bearer without client authentication."},
		{Name: "client_secret", Kind: KindString, Secret: true, Description: "The OAuth2 client secret; required for client_credentials unless auth_style is private_key_jwt."},
		{Name: "token_url", Kind: KindString, URL: true, Description: "Token endpoint; required unless the provider preset has one."},
		{Name: "auth_url", Kind: KindString, URL: true, Description: "Authorization endpoint, for the authorization_code grant."},
		{Name: "device_url", Kind: KindString, URL: true, Description: "Device authorization endpoint (RFC 8628), for the device_code grant."},
		{Name: "revocation_url", Kind: KindString, URL: true, Description: "Token revocation endpoint (RFC 7009)."},
		{Name: "scopes", Kind: KindStringList, MaxLength: 256, Description: "Scopes to request; defaults to the provider preset's."},
		{Name: "audience", Kind: KindString, MaxLength: 1024, Description: "Audience parameter sent with token requests, for providers that need it; for jwt_bearer, the assertion's aud (default the token URL)."},
		{Name: "auth_style", Kind: KindString, Default: "auto", Allowed: []string{"auto", "header", "body", AuthStylePrivateKeyJWT},
			Description: "How the client authenticates to the token endpoint: auto, header (HTTP basic), body (form parameters) or private_key_jwt (a JWT signed by private_key, RFC 7523)."},
		{Name: "refresh_token", Kind: KindString, Secret: true, Description: "A refresh token; required for the refresh_token grant."},
		{Name: "private_key", Kind: KindString, Secret: true, Multiline: true,
			Description: "PEM private key (RSA of at least 2048 bits, or EC P-256/P-384/P-521) that signs assertions: the client's for auth_style private_key_jwt, the issuer's for jwt_bearer."},
		{Name: "key_id", Kind: KindString, MaxLength: 256, Description: "Key id (JWK kid) put in the header of signed assertions, so the server finds the public key."},
		{Name: "signing_alg", Kind: KindString, Allowed: SigningAlgs,
			Description: "JWS algorithm of signed assertions; defaults to RS256 for RSA keys and ES256 (ES384, ES512) for EC keys."},
		{Name: "assertion_audience", Kind: KindString, MaxLength: 1024,
			Description: "The aud claim of private_key_jwt client assertions; defaults to the URL called (token, device authorization or revocation endpoint). Some servers want their issuer URL."},
		{Name: "issuer", Kind: KindString, MaxLength: 1024, Description: "The iss claim of jwt_bearer assertions."},
		{Name: "subject", Kind: KindString, MaxLength: 1024, Description: "The sub claim of jwt_bearer assertions; defaults to issuer (for google-service-account: the user to act as, domain-wide delegation)."},
		{Name: "service_account_json", Kind: KindString, Secret: true, Multiline: true,
			Description: "A Google service-account JSON key, for provider google-service-account (grant_type jwt_bearer): it supplies issuer, private_key, key_id and the token URL."},
	},
	validate: validateOAuth2,
})

// usesKey reports whether the values sign assertions with private_key.
func usesKey(v Values) bool {
	return v.String("auth_style") == AuthStylePrivateKeyJWT || v.String("grant_type") == GrantJWTBearer && v.isEmpty("service_account_json")
}

func validateOAuth2(v Values) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	grant, style := v.String("grant_type"), v.String("auth_style")
	if v.String("provider") == "" && v.String("token_url") == "" {
		add(`field "token_url" is required when no "provider" is set`)
	}
	if grant != GrantJWTBearer && v.isEmpty("client_id") || style == AuthStylePrivateKeyJWT && v.isEmpty("client_id") {
		add(`field "client_id" is required for type oauth2`)
	}
	switch grant {
	case GrantClientCredentials:
		if v.isEmpty("client_secret") && style != AuthStylePrivateKeyJWT {
			add(`field "client_secret" is required for grant_type %s (or use auth_style %s)`, grant, AuthStylePrivateKeyJWT)
		}
	case GrantRefreshToken:
		if v.isEmpty("refresh_token") {
			add(`field "refresh_token" is required for grant_type %s`, grant)
		}
	case GrantJWTBearer:
		if v.isEmpty("service_account_json") && v.isEmpty("issuer") {
			add(`field "issuer" is required for grant_type %s`, grant)
		}
	}
	if v.String("provider") == GoogleServiceAccount {
		if v.isEmpty("service_account_json") {
			add(`field "service_account_json" is required for provider %s`, GoogleServiceAccount)
		}
		if grant != GrantJWTBearer {
			add(`provider %s needs grant_type %s`, GoogleServiceAccount, GrantJWTBearer)
		}
	}
	if !v.isEmpty("service_account_json") {
		if grant != GrantJWTBearer {
			add(`field "service_account_json" applies to grant_type %s only`, GrantJWTBearer)
		}
		if _, err := ParseServiceAccount(v.String("service_account_json")); err != nil {
			errs = append(errs, fieldErrors("service_account_json", err)...)
		}
		for _, name := range []string{"issuer", "private_key"} {
			if !v.isEmpty(name) {
				add(`field %q cannot be set with "service_account_json", which supplies it`, name)
			}
		}
	}
	if usesKey(v) {
		if v.isEmpty("private_key") {
			add(`field "private_key" is required for %s`, keyUse(v))
		} else if key, err := ParsePrivateKey(v.String("private_key")); err != nil {
			add(`field "private_key" %v`, err)
		} else if _, err := SigningAlg(key, v.String("signing_alg")); err != nil {
			add(`field "signing_alg": %v`, err)
		}
	}
	if slices.Contains([]string{GrantAuthorizationCode, GrantDeviceCode, GrantRefreshToken, GrantClientCredentials}, grant) &&
		style != AuthStylePrivateKeyJWT && !v.isEmpty("private_key") {
		add(`field "private_key" applies only to auth_style %s or grant_type %s`, AuthStylePrivateKeyJWT, GrantJWTBearer)
	}
	return errors.Join(errs...)
}

// keyUse names what private_key is for in v, for messages.
func keyUse(v Values) string {
	if v.String("auth_style") == AuthStylePrivateKeyJWT {
		return "auth_style " + AuthStylePrivateKeyJWT
	}
	return "grant_type " + GrantJWTBearer
}

// fieldErrors prefixes each of err's joined problems with the field name.
func fieldErrors(field string, err error) []error {
	var list []error
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			list = append(list, fmt.Errorf("field %q %v", field, e))
		}
		return list
	}
	return []error{fmt.Errorf("field %q %v", field, err)}
}
