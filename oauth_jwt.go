package nebula

import (
	"fmt"
	"net/url"

	"golang.org/x/oauth2"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/types"
)

// signedJWTRequest sets the signed-JWT parts of an upstream request from a
// credential's (or flow's) values: the client key of auth_style
// private_key_jwt, and the assertion of grant_type jwt_bearer (from
// issuer, subject, private_key and key_id, or from a Google
// service-account key, which also names the token URL). Errors name the
// field, never its value.
func signedJWTRequest(v types.Values, req *upstream.Request) error {
	if v.String("auth_style") == types.AuthStylePrivateKeyJWT {
		key, err := upstream.NewSigningKey(v.String("private_key"), v.String("key_id"), v.String("signing_alg"))
		if err != nil {
			return err
		}
		req.ClientKey, req.AssertionAudience = key, v.String("assertion_audience")
		req.ClientSecret = ""
	}
	if v.String("grant_type") != types.GrantJWTBearer {
		return nil
	}
	ba := &upstream.BearerAssertion{Issuer: v.String("issuer"), Subject: v.String("subject"), Audience: v.String("audience")}
	if raw := v.String("service_account_json"); raw != "" {
		sa, err := types.ParseServiceAccount(raw)
		if err != nil {
			return fmt.Errorf("service_account_json %v", err)
		}
		// Google signs service-account assertions with RS256 and takes the
		// scopes in the assertion's scope claim.
		if ba.Key, err = upstream.NewSigningKey(sa.PrivateKey, sa.PrivateKeyID, ""); err != nil {
			return fmt.Errorf("service_account_json: %v", err)
		}
		ba.Issuer, ba.ScopeClaim = sa.ClientEmail, true
		req.TokenURL = sa.TokenURI
	} else {
		key, err := upstream.NewSigningKey(v.String("private_key"), v.String("key_id"), v.String("signing_alg"))
		if err != nil {
			return err
		}
		ba.Key = key
	}
	req.Bearer = ba
	req.Audience = "" // the assertion's aud, not a request parameter
	return nil
}

// clientAssertionKey is the private_key_jwt key of a flow's values; nil
// for other client authentication.
func clientAssertionKey(v types.Values) (*upstream.SigningKey, error) {
	if v.String("auth_style") != types.AuthStylePrivateKeyJWT {
		return nil, nil
	}
	return upstream.NewSigningKey(v.String("private_key"), v.String("key_id"), v.String("signing_alg"))
}

// withClientAssertion adds private_key_jwt client authentication for a
// code exchange at tokenURL to opts, when the flow's values use it.
func withClientAssertion(opts []oauth2.AuthCodeOption, v types.Values, tokenURL string) ([]oauth2.AuthCodeOption, error) {
	key, err := clientAssertionKey(v)
	if err != nil || key == nil {
		return opts, err
	}
	params, err := upstream.ClientAssertionParams(key, v.String("client_id"), firstNonEmpty(v.String("assertion_audience"), tokenURL))
	if err != nil {
		return nil, err
	}
	for k, vals := range params {
		opts = append(opts, oauth2.SetAuthURLParam(k, vals[0]))
	}
	return opts, nil
}

// addClientAssertion adds private_key_jwt client authentication (key, or
// the error of parsing it) to a device poll's form.
func addClientAssertion(form url.Values, key *upstream.SigningKey, keyErr error, clientID, tokenURL string) error {
	if keyErr != nil {
		return &endpointError{Endpoint: "token endpoint", Reason: "not called: " + keyErr.Error()}
	}
	params, err := upstream.ClientAssertionParams(key, clientID, tokenURL)
	if err != nil {
		return &endpointError{Endpoint: "token endpoint", Reason: "not called: " + err.Error()}
	}
	for k, vals := range params {
		form[k] = vals
	}
	return nil
}
