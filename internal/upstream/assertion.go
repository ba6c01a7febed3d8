package upstream

import (
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/nebula-credential/nebula-credential/types"
)

// Assertion parameters of RFC 7523.
const (
	// ClientAssertionType is the client_assertion_type of private_key_jwt
	// client authentication (RFC 7523 section 2.2).
	ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// JWTBearerGrant is the grant_type of the JWT bearer grant (RFC 7523
	// section 2.1).
	JWTBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
)

// AssertionLifetime is how long a signed assertion is valid: one token
// request's worth (a new one is signed for every request).
const AssertionLifetime = 60 * time.Second

// SigningKey signs assertions: a parsed private key, its JWS algorithm
// and its key id (the JWK kid servers look the public key up by).
type SigningKey struct {
	key   crypto.Signer
	alg   string
	keyID string
}

// NewSigningKey parses a PEM private key (RSA or EC) and checks that alg
// suits it; an empty alg means RS256 for RSA keys, ES256 (ES384, ES512)
// for EC keys. Errors never quote the key.
func NewSigningKey(pemText, keyID, alg string) (*SigningKey, error) {
	key, err := types.ParsePrivateKey(pemText)
	if err != nil {
		return nil, fmt.Errorf("private_key %v", err)
	}
	alg, err = types.SigningAlg(key, alg)
	if err != nil {
		return nil, fmt.Errorf("signing_alg: %v", err)
	}
	return &SigningKey{key: key, alg: alg, keyID: keyID}, nil
}

// Alg is the key's JWS algorithm.
func (k *SigningKey) Alg() string { return k.alg }

// Claims are the claims of an assertion the engine signs.
type Claims struct {
	Issuer   string
	Subject  string
	Audience string
	// Scope, when set, is put in a "scope" claim (Google's service
	// accounts take the scopes there).
	Scope string
}

// Sign makes a new assertion with the claims, issued at now and valid for
// AssertionLifetime, with a unique jti (128 random bits), so a server that
// remembers jtis (RFC 7523 section 3, item 7) never sees one twice.
func (k *SigningKey) Sign(c Claims, now time.Time) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{
		Algorithm: jose.SignatureAlgorithm(k.alg),
		Key:       jose.JSONWebKey{Key: k.key, KeyID: k.keyID, Algorithm: k.alg},
	}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("preparing the assertion signer: %v", err)
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("reading randomness: %v", err)
	}
	std := jwt.Claims{
		Issuer:    c.Issuer,
		Subject:   c.Subject,
		Audience:  jwt.Audience{c.Audience},
		Expiry:    jwt.NewNumericDate(now.Add(AssertionLifetime)),
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now.Add(-5 * time.Second)), // a little clock skew
		ID:        hex.EncodeToString(jti),
	}
	b := jwt.Signed(signer).Claims(std)
	if c.Scope != "" {
		b = b.Claims(map[string]any{"scope": c.Scope})
	}
	out, err := b.Serialize()
	if err != nil {
		return "", fmt.Errorf("signing the assertion: %v", err)
	}
	return out, nil
}

// BearerAssertion describes the assertion of a JWT bearer grant request.
type BearerAssertion struct {
	Key     *SigningKey
	Issuer  string
	Subject string
	// Audience is the aud claim; empty means the token URL.
	Audience string
	// ScopeClaim puts the scopes in the assertion's scope claim instead of
	// the request's scope parameter (Google).
	ScopeClaim bool
}

// clientAssertion adds private_key_jwt client authentication for a
// request to endpoint: client_assertion_type and a fresh client_assertion
// (iss = sub = client id, aud = the endpoint).
func clientAssertion(params map[string][]string, key *SigningKey, clientID, endpoint string, now time.Time) error {
	a, err := key.Sign(Claims{Issuer: clientID, Subject: clientID, Audience: endpoint}, now)
	if err != nil {
		return &Error{Reason: "client assertion: " + err.Error(), Permanent: true}
	}
	params["client_assertion_type"] = []string{ClientAssertionType}
	params["client_assertion"] = []string{a}
	return nil
}
