package types

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Signing algorithms (JWA, RFC 7518 section 3.1) of assertions the engine
// signs with a private_key.
var (
	rsaAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	ecAlgs  = map[string]string{"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
)

// SigningAlgs lists the signing_alg values the oauth2 type accepts.
var SigningAlgs = append(slices.Clone(rsaAlgs), "ES256", "ES384", "ES512")

// minRSABits is the smallest RSA key the engine signs with (RFC 7518
// section 3.3 requires 2048 bits).
const minRSABits = 2048

// ParsePrivateKey parses a PEM private key, RSA or EC (PKCS #1, SEC 1 or
// PKCS #8). A key pasted with literal "\n" escapes instead of line breaks
// (as in a JSON file) is accepted too. Errors never quote the key.
func ParsePrivateKey(pemText string) (crypto.Signer, error) {
	if !strings.Contains(pemText, "\n") && strings.Contains(pemText, `\n`) {
		pemText = strings.ReplaceAll(pemText, `\n`, "\n")
	}
	block, _ := pem.Decode([]byte(strings.TrimSpace(pemText)))
	if block == nil {
		return nil, errors.New("is not a PEM private key")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("is a PEM block of type %q; want a private key (RSA or EC)", block.Type)
	}
	if err != nil {
		return nil, errors.New("is not a valid RSA or EC private key")
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("is an RSA key of %d bits; at least %d are required", k.N.BitLen(), minRSABits)
		}
		return k, nil
	case *ecdsa.PrivateKey:
		if _, ok := ecAlgs[k.Curve.Params().Name]; !ok {
			return nil, errors.New("is an EC key on an unsupported curve; use P-256, P-384 or P-521")
		}
		return k, nil
	}
	return nil, errors.New("is neither an RSA nor an EC private key")
}

// SigningAlg returns the JWS algorithm to sign with key: alg when set (it
// must suit the key), else RS256 for RSA keys and the curve's ES algorithm
// for EC keys (ES256 for P-256).
func SigningAlg(key crypto.Signer, alg string) (string, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if alg == "" {
			return "RS256", nil
		}
		if !slices.Contains(rsaAlgs, alg) {
			return "", fmt.Errorf("%s does not suit an RSA key; use one of %s", alg, strings.Join(rsaAlgs, ", "))
		}
		return alg, nil
	case *ecdsa.PrivateKey:
		want := ecAlgs[k.Curve.Params().Name]
		if alg != "" && alg != want {
			return "", fmt.Errorf("%s does not suit an EC key on %s; use %s", alg, k.Curve.Params().Name, want)
		}
		return want, nil
	}
	return "", errors.New("unsupported key type")
}

// ServiceAccount is what the engine uses of a Google service-account JSON
// key file.
type ServiceAccount struct {
	Type         string `json:"type"`
	ClientEmail  string `json:"client_email"`
	PrivateKey   string `json:"private_key"`
	PrivateKeyID string `json:"private_key_id"`
	TokenURI     string `json:"token_uri"`
}

// GoogleTokenURL is where Google's service accounts get tokens when their
// key file names no token_uri.
const GoogleTokenURL = "https://oauth2.googleapis.com/token"

// ParseServiceAccount parses a Google service-account JSON key and checks
// the fields the JWT bearer grant needs. Errors never quote the file.
func ParseServiceAccount(raw string) (*ServiceAccount, error) {
	var sa ServiceAccount
	if err := json.Unmarshal([]byte(raw), &sa); err != nil {
		return nil, errors.New("is not a JSON object")
	}
	var errs []error
	if sa.Type != "" && sa.Type != "service_account" {
		errs = append(errs, errors.New("is not a service_account key (its type differs)"))
	}
	if sa.ClientEmail == "" {
		errs = append(errs, errors.New("has no client_email"))
	}
	if sa.PrivateKey == "" {
		errs = append(errs, errors.New("has no private_key"))
	} else if _, err := ParsePrivateKey(sa.PrivateKey); err != nil {
		errs = append(errs, fmt.Errorf("has a private_key that %v", err))
	}
	if sa.TokenURI == "" {
		sa.TokenURI = GoogleTokenURL
	} else if err := checkURL(sa.TokenURI); err != nil {
		errs = append(errs, fmt.Errorf("has a token_uri that %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &sa, nil
}
