package nebula

import (
	"fmt"

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
