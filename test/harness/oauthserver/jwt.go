package oauthserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Signed-JWT clients and issuers of every Server.
const (
	// PrivateKeyJWTClientID is a confidential client that authenticates
	// with private_key_jwt (RFC 7523 section 2.2) only, allowed
	// client_credentials, authorization_code and refresh_token. Its key
	// is RSA (RS256).
	PrivateKeyJWTClientID = "jwt-client"
	// JWTProfileIssuer is the issuer (and subject) of JWT bearer grant
	// assertions (RFC 7523 section 2.1) the server trusts, with an EC
	// P-256 key (ES256).
	JWTProfileIssuer = "jwt-issuer"
	// Key ids of the two keys.
	PrivateKeyJWTKeyID = "jwt-client-key"
	JWTProfileKeyID    = "jwt-issuer-key"
)

// Assertions are checked as zitadel does: aud must hold the issuer (the
// server's URL), iss = sub, signature by the registered key, iat at most
// an hour old.

// jwtKeys are the private keys of the signed-JWT client and issuer, made
// once per test binary (RSA generation is slow on a busy machine).
var jwtKeys = sync.OnceValues(func() (*jwtKeyPair, error) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &jwtKeyPair{client: rsaKey, issuer: ecKey}, nil
})

type jwtKeyPair struct {
	client *rsa.PrivateKey
	issuer *ecdsa.PrivateKey
}

// publicJWKs are the public keys by client (or issuer) id and key id.
func (k *jwtKeyPair) publicJWKs() map[string]map[string]*jose.JSONWebKey {
	return map[string]map[string]*jose.JSONWebKey{
		PrivateKeyJWTClientID: {PrivateKeyJWTKeyID: {Key: &k.client.PublicKey, KeyID: PrivateKeyJWTKeyID, Algorithm: "RS256", Use: "sig"}},
		JWTProfileIssuer:      {JWTProfileKeyID: {Key: &k.issuer.PublicKey, KeyID: JWTProfileKeyID, Algorithm: "ES256", Use: "sig"}},
	}
}

func pemOf(key any) string {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err) // RSA and EC keys always marshal
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// PrivateKeyJWTClient returns the private_key_jwt client's id, key id and
// PEM private key (PKCS #8, RSA).
func (s *Server) PrivateKeyJWTClient() (id, keyID, privateKeyPEM string) {
	return PrivateKeyJWTClientID, PrivateKeyJWTKeyID, pemOf(s.store.jwtKeys.client)
}

// JWTProfileKey returns the trusted JWT bearer issuer, its key id and PEM
// private key (PKCS #8, EC P-256).
func (s *Server) JWTProfileKey() (issuer, keyID, privateKeyPEM string) {
	return JWTProfileIssuer, JWTProfileKeyID, pemOf(s.store.jwtKeys.issuer)
}

// Assertion is what the server saw of one signed assertion (client
// assertion or JWT bearer grant assertion), before checking it.
type Assertion struct {
	// Param is "client_assertion" or "assertion".
	Param    string
	Endpoint string // "token" or "revocation"
	JTI      string
	Issuer   string
	Subject  string
	KeyID    string
	Alg      string
}

// Assertions returns the assertions the token and revocation endpoints
// received, in order.
func (s *Server) Assertions() []Assertion {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Assertion(nil), s.assertions...)
}

// recordAssertions notes the assertions of a token or revocation request
// whose form is already parsed, and checks a client_assertion sent with
// the client_credentials grant (zitadel checks them for the other grants
// and for revocation itself, but passes only client_id and client_secret
// to ClientCredentials): a valid one is put on the request's context for
// storage.ClientCredentials.
func (s *Server) recordAssertions(r *http.Request, form url.Values, endpoint string) *http.Request {
	for _, param := range []string{"client_assertion", "assertion"} {
		raw := form.Get(param)
		if raw == "" {
			continue
		}
		a := Assertion{Param: param, Endpoint: endpoint}
		if jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.ES256, jose.ES384, jose.ES512}); err == nil && len(jws.Signatures) == 1 {
			a.KeyID, a.Alg = jws.Signatures[0].Header.KeyID, jws.Signatures[0].Header.Algorithm
			var claims oidc.JWTTokenRequest
			if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err == nil {
				a.JTI, a.Issuer, a.Subject = claims.JWTID, claims.Issuer, claims.Subject
			}
		}
		s.mu.Lock()
		s.assertions = append(s.assertions, a)
		s.mu.Unlock()
	}
	if form.Get("grant_type") != string(oidc.GrantTypeClientCredentials) || form.Get("client_assertion_type") != oidc.ClientAssertionTypeJWTAssertion {
		return r
	}
	v := op.NewJWTProfileVerifier(s.store, s.URL, time.Hour, time.Second)
	req, err := op.VerifyJWTAssertion(r.Context(), form.Get("client_assertion"), v)
	if err != nil {
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), assertedClientKey{}, req.Issuer))
}

// assertedClientKey holds, on a request's context, the client id whose
// client_assertion the server verified.
type assertedClientKey struct{}

// GetKeyByIDAndClientID returns the public key that verifies the
// assertions of a private_key_jwt client or a trusted JWT bearer issuer.
func (s *storage) GetKeyByIDAndClientID(_ context.Context, keyID, clientID string) (*jose.JSONWebKey, error) {
	key, ok := s.jwtKeys.publicJWKs()[clientID][keyID]
	if !ok {
		return nil, errors.New("no such key for this client")
	}
	return key, nil
}

// RevokeGrants revokes every refresh token (and its access token) issued to
// a client, as a user removing the application's access at the provider
// does: the next refresh answers invalid_grant.
func (s *Server) RevokeGrants(clientID string) int {
	s.store.mu.Lock()
	defer s.store.mu.Unlock()
	n := 0
	for id, rt := range s.store.refreshTokens {
		if rt.clientID == clientID {
			delete(s.store.refreshTokens, id)
			delete(s.store.accessTokens, rt.accessTokenID)
			n++
		}
	}
	return n
}
