package types

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		typ     *Type
		values  Values
		mention []string // empty: valid
	}{
		{"api key", APIKey, Values{"api_key": "k", "placement": "header"}, nil},
		{"api key missing", APIKey, Values{}, []string{`"api_key" is required`}},
		{"api key bad placement", APIKey, Values{"api_key": "k", "placement": "cookie"}, []string{`"placement" must be one of header, query`}},
		{"unknown field", APIKey, Values{"api_key": "k", "password": "p"}, []string{`"password" does not apply to type api_key`}},
		{"basic", BasicAuth, Values{"username": "u", "password": "p"}, nil},
		{"basic colon", BasicAuth, Values{"username": "a:b", "password": "p"}, []string{"colon"}},
		{"bearer time", Bearer, Values{"token": "t", "expires_at": "2027-01-01T00:00:00Z"}, nil},
		{"bearer bad time", Bearer, Values{"token": "t", "expires_at": "soon"}, []string{"RFC 3339"}},
		{"oauth2 all problems at once", OAuth2, Values{"grant_type": "client_credentials"}, []string{`"client_id"`, `"token_url"`, `"client_secret"`}},
		{"oauth2 refresh grant", OAuth2, Values{"grant_type": "refresh_token", "client_id": "c", "token_url": "https://x/t"}, []string{`"refresh_token" is required`}},
		{"oauth2 url scheme", OAuth2, Values{"client_id": "c", "client_secret": "s", "token_url": "ftp://x/t", "grant_type": "client_credentials"}, []string{"http or https"}},
		{"oauth2 url userinfo", OAuth2, Values{"client_id": "c", "client_secret": "s", "token_url": "https://u:p@x/t", "grant_type": "client_credentials"}, []string{"user information"}},
		{"oauth2 scopes list", OAuth2, Values{"client_id": "c", "client_secret": "s", "provider": "google", "grant_type": "client_credentials", "scopes": []any{"a", 1}}, []string{"list of strings"}},
		{"generated", Generated, Values{"length": 32, "charset": "hex"}, nil},
		{"generated from storage", Generated, Values{"length": json.Number("64"), "charset": "hex"}, nil},
		{"generated too short", Generated, Values{"length": 8, "charset": "hex"}, []string{`"length"`}},
		{"header injection", APIKey, Values{"api_key": "k\r\nX: y"}, []string{"line breaks"}},
		{"oversized secret", Bearer, Values{"token": strings.Repeat("t", MaxSecretLength+1)}, []string{"at most"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.typ.Check(tc.values)
			if len(tc.mention) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, m := range tc.mention {
				require.Contains(t, err.Error(), m)
			}
		})
	}
}

func TestTokens(t *testing.T) {
	tok, err := APIKey.Token(Values{"api_key": "k", "placement": "query"})
	require.NoError(t, err)
	require.Equal(t, Token{AccessToken: "k", TokenType: "api_key", QueryParam: "api_key"}, tok)

	tok, err = BasicAuth.Token(Values{"username": "Aladdin", "password": "open sesame"})
	require.NoError(t, err)
	require.Equal(t, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", tok.HeaderValue, "RFC 7617 example")

	tok, err = Bearer.Token(Values{"token": "t", "expires_at": "2027-01-01T00:00:00Z"})
	require.NoError(t, err)
	require.Equal(t, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), tok.ExpiresAt)

	_, err = OAuth2.Token(Values{})
	require.Error(t, err, "oauth2 tokens come from the upstream")
}

func TestGenerate(t *testing.T) {
	for charset, re := range map[string]string{
		"alphanumeric": `^[A-Za-z0-9]{48}$`, "hex": `^[0-9a-f]{48}$`, "base64url": `^[A-Za-z0-9_-]{48}$`,
	} {
		v, err := Generated.Generate(Values{"length": 48, "charset": charset})
		require.NoError(t, err)
		require.Regexp(t, re, v.String("value"))
	}
	a, _ := Generated.Generate(Values{"length": 32, "charset": "alphanumeric"})
	b, _ := Generated.Generate(Values{"length": 32, "charset": "alphanumeric"})
	require.NotEqual(t, a.String("value"), b.String("value"))
	_, err := APIKey.Generate(Values{})
	require.Error(t, err)
}

func TestValuesAccessorsAcceptStorageForms(t *testing.T) {
	var v Values
	require.NoError(t, json.Unmarshal([]byte(`{"n": 5, "list": ["a","b"], "b": true}`), &v))
	require.Equal(t, 5, v.Int("n"))
	require.Equal(t, []string{"a", "b"}, v.Strings("list"))
	require.True(t, v.Bool("b"))
	require.Equal(t, 7, Values{"n": json.Number("7")}.Int("n"))
	require.Zero(t, Values{"n": 1.5}.Int("n"))

	public, secret := Values{"api_key": "k", "param_name": "X"}.Split(APIKey)
	require.Equal(t, Values{"param_name": "X"}, public)
	require.Equal(t, Values{"api_key": "k"}, secret)
}

func TestProviders(t *testing.T) {
	ms, err := BuiltinProviders["microsoft"].WithTenant("")
	require.NoError(t, err)
	require.Contains(t, ms.TokenURL, "/common/")
	_, err = BuiltinProviders["microsoft"].WithTenant("../evil")
	require.Error(t, err)

	require.NoError(t, Provider{TokenURL: "https://x/token", AuthStyle: "body"}.Validate())
	err = Provider{AuthURL: "nope", AuthStyle: "weird"}.Validate()
	require.ErrorContains(t, err, `"token_url" is required`)
	require.ErrorContains(t, err, `"auth_url"`)
	require.ErrorContains(t, err, `"auth_style"`)
	for name, p := range BuiltinProviders {
		require.NoError(t, p.Validate(), name)
	}
}
