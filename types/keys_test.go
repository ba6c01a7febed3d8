package types

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSignedJWTCombinations(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ecDER, err := x509.MarshalECPrivateKey(ek)
	require.NoError(t, err)
	rsaPEM := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}))
	ecPEM := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}))
	sa, err := json.Marshal(map[string]string{"type": "service_account", "client_email": "a@b", "private_key": rsaPEM, "private_key_id": "k"})
	require.NoError(t, err)
	base := func(extra Values) Values {
		v := Values{"token_url": "https://idp.example/token", "auth_style": "auto", "grant_type": GrantClientCredentials}
		for k, x := range extra {
			v[k] = x
		}
		return v
	}
	for _, tc := range []struct {
		name    string
		values  Values
		mention []string
	}{
		{"private_key_jwt needs no secret", base(Values{"client_id": "c", "auth_style": "private_key_jwt", "private_key": rsaPEM, "key_id": "k1"}), nil},
		{"private_key_jwt EC", base(Values{"client_id": "c", "auth_style": "private_key_jwt", "private_key": ecPEM, "signing_alg": "ES256"}), nil},
		{"private_key_jwt without key", base(Values{"client_id": "c", "auth_style": "private_key_jwt"}), []string{`"private_key" is required for auth_style private_key_jwt`}},
		{"private_key_jwt without client_id", base(Values{"auth_style": "private_key_jwt", "private_key": rsaPEM}), []string{`"client_id" is required`}},
		{"alg does not suit the key", base(Values{"client_id": "c", "auth_style": "private_key_jwt", "private_key": ecPEM, "signing_alg": "RS256"}), []string{`"signing_alg"`, "EC key"}},
		{"key without a use", base(Values{"client_id": "c", "client_secret": "s", "private_key": rsaPEM}), []string{`"private_key" applies only`}},
		{"jwt_bearer without client", Values{"token_url": "https://idp.example/token", "grant_type": GrantJWTBearer, "issuer": "i", "private_key": ecPEM}, nil},
		{"jwt_bearer all problems", Values{"token_url": "https://idp.example/token", "grant_type": GrantJWTBearer, "private_key": "x", "signing_alg": "ES256"}, []string{`"issuer" is required`, `"private_key" is not a PEM private key`}},
		{"google preset", Values{"provider": GoogleServiceAccount, "grant_type": GrantJWTBearer, "service_account_json": string(sa)}, nil},
		{"google preset needs the key and the grant", Values{"provider": GoogleServiceAccount, "grant_type": GrantClientCredentials, "client_id": "c", "client_secret": "s"}, []string{`"service_account_json" is required`, "needs grant_type jwt_bearer"}},
		{"service account with issuer", Values{"provider": GoogleServiceAccount, "grant_type": GrantJWTBearer, "service_account_json": string(sa), "issuer": "x"}, []string{`"issuer" cannot be set`}},
		{"bad service account", Values{"provider": GoogleServiceAccount, "grant_type": GrantJWTBearer, "service_account_json": `{"type":"authorized_user"}`}, []string{"not a service_account key", "no client_email", "no private_key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := OAuth2.Check(tc.values)
			if len(tc.mention) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, m := range tc.mention {
				require.Contains(t, err.Error(), m)
			}
			require.False(t, strings.Contains(err.Error(), "PRIVATE KEY"), "no key material in messages")
		})
	}
	f, _ := OAuth2.Field("private_key")
	require.True(t, f.Secret)
	f, _ = OAuth2.Field("service_account_json")
	require.True(t, f.Secret)
}
