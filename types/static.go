package types

import (
	"encoding/base64"
	"errors"
	"strings"
	"time"
)

// APIKey is a static API key sent in a header or a query parameter.
var APIKey = register(&Type{
	Name:        "api_key",
	Description: "A static API key sent in a request header or query parameter.",
	Rotatable:   true,
	Fields: []Field{
		{Name: "api_key", Kind: KindString, Secret: true, Required: true, Description: "The API key."},
		{Name: "param_name", Kind: KindString, MaxLength: 256, Description: `Header or query parameter name; defaults to "X-API-Key" for header placement and "api_key" for query placement.`},
		{Name: "placement", Kind: KindString, Default: "header", Allowed: []string{"header", "query"}, Description: `Where the key goes: "header" or "query".`},
	},
	token: func(v Values) (Token, error) {
		key := v.String("api_key")
		t := Token{AccessToken: key, TokenType: "api_key"}
		param := v.String("param_name")
		if v.String("placement") == "query" {
			t.QueryParam = cmpOr(param, "api_key")
			return t, nil
		}
		t.HeaderName = cmpOr(param, "X-API-Key")
		t.HeaderValue = key
		return t, nil
	},
})

// BasicAuth is an HTTP basic authentication user name and password
// (RFC 7617).
var BasicAuth = register(&Type{
	Name:        "basic_auth",
	Description: "HTTP basic authentication (RFC 7617): a user name and a password.",
	Rotatable:   true,
	Fields: []Field{
		{Name: "username", Kind: KindString, Required: true, MaxLength: 256, Description: "The user name; must not contain a colon."},
		{Name: "password", Kind: KindString, Secret: true, Required: true, Description: "The password."},
	},
	validate: func(v Values) error {
		if strings.Contains(v.String("username"), ":") {
			return errors.New(`field "username" must not contain a colon (RFC 7617)`)
		}
		return nil
	},
	token: func(v Values) (Token, error) {
		pair := v.String("username") + ":" + v.String("password")
		return Token{
			AccessToken: v.String("password"),
			TokenType:   "Basic",
			HeaderName:  "Authorization",
			HeaderValue: "Basic " + base64.StdEncoding.EncodeToString([]byte(pair)),
		}, nil
	},
})

// Bearer is a static bearer token (RFC 6750), optionally with an expiry.
var Bearer = register(&Type{
	Name:        "bearer",
	Description: "A static bearer token (RFC 6750), optionally with an expiry time.",
	Rotatable:   true,
	Fields: []Field{
		{Name: "token", Kind: KindString, Secret: true, Required: true, Description: "The bearer token."},
		{Name: "expires_at", Kind: KindTime, Description: "When the token stops working (RFC 3339); empty means never."},
	},
	token: func(v Values) (Token, error) {
		token := v.String("token")
		return Token{
			AccessToken: token,
			TokenType:   "Bearer",
			HeaderName:  "Authorization",
			HeaderValue: "Bearer " + token,
			ExpiresAt:   v.Time("expires_at"),
		}, nil
	},
})

// ExpiresAt reports when a static credential stops working, from its
// values; zero means never.
func ExpiresAt(v Values) time.Time { return v.Time("expires_at") }

func cmpOr(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}
