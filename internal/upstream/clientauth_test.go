package upstream

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/require"
)

// seenRequest is one request a clientAuthServer answered.
type seenRequest struct {
	path string
	form url.Values
	auth string // the Authorization header
}

// clientAuthServer plays the three endpoints whose requests the engine
// builds itself: /device answers a device code, /token authorization_pending,
// /revoke 200. It records every request.
type clientAuthServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []seenRequest
}

func startClientAuthServer(tb testing.TB) *clientAuthServer {
	s := &clientAuthServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.seen = append(s.seen, seenRequest{path: r.URL.Path, form: r.PostForm, auth: r.Header.Get("Authorization")})
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/device":
			_, _ = w.Write([]byte(`{"device_code":"dc","user_code":"UC","verification_uri":"https://example.com/device","expires_in":600,"interval":5}`))
		case "/token":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"authorization_pending"}`))
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	tb.Cleanup(s.Close)
	return s
}

// TestEngineBuiltRequestsAuthenticateTheClient: device authorization,
// device polling and revocation carry the client authentication the
// credential chose, as the token requests x/oauth2 builds do: HTTP Basic
// with form-encoded id and secret, client_secret in the body, a client
// assertion whose aud is the endpoint called, or nothing for a public
// client. Before, the device authorization request carried only client_id.
func TestEngineBuiltRequestsAuthenticateTheClient(t *testing.T) {
	priv := testKeys()["p256"]
	key, err := NewSigningKey(pemKey(t, priv), "k1", "")
	require.NoError(t, err)
	const id, secret = "client:1", "s3cret/+="
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))

	for _, tc := range []struct {
		name  string
		req   Request
		check func(t *testing.T, r seenRequest)
	}{
		{"header", Request{ClientID: id, ClientSecret: secret, AuthStyle: "header"}, func(t *testing.T, r seenRequest) {
			require.Equal(t, basic, r.auth)
			require.NotContains(t, r.form, "client_secret")
		}},
		{"auto", Request{ClientID: id, ClientSecret: secret, AuthStyle: "auto"}, func(t *testing.T, r seenRequest) {
			require.Equal(t, basic, r.auth)
			require.NotContains(t, r.form, "client_secret")
		}},
		{"body", Request{ClientID: id, ClientSecret: secret, AuthStyle: "body"}, func(t *testing.T, r seenRequest) {
			require.Empty(t, r.auth)
			require.Equal(t, secret, r.form.Get("client_secret"))
			require.Equal(t, id, r.form.Get("client_id"))
		}},
		{"private_key_jwt", Request{ClientID: id, ClientSecret: "must-not-be-sent", AuthStyle: "auto", ClientKey: key}, func(t *testing.T, r seenRequest) {
			require.Empty(t, r.auth)
			require.NotContains(t, r.form, "client_secret")
			require.Equal(t, id, r.form.Get("client_id"))
			require.Equal(t, ClientAssertionType, r.form.Get("client_assertion_type"))
			std, _, _ := assertionClaims(t, r.form.Get("client_assertion"), priv)
			require.Equal(t, id, std.Issuer)
			require.NotEmpty(t, std.Audience)
		}},
		{"public client", Request{ClientID: id, AuthStyle: "header"}, func(t *testing.T, r seenRequest) {
			require.Empty(t, r.auth, "no Basic header with an empty secret")
			require.NotContains(t, r.form, "client_secret")
			require.Equal(t, id, r.form.Get("client_id"), "a public client names itself")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startClientAuthServer(t)
			c, ctx := testClient(), context.Background()
			r := tc.req
			r.TokenURL = srv.URL + "/token"
			_, err := c.DeviceAuth(ctx, DeviceAuthRequest{Request: r, DeviceURL: srv.URL + "/device"})
			require.NoError(t, err)
			poll, err := c.PollDevice(ctx, r, "dc")
			require.NoError(t, err)
			require.Equal(t, DevicePending, poll.State)
			require.NoError(t, c.Revoke(ctx, r, srv.URL+"/revoke", "tok", "refresh_token"))

			require.Len(t, srv.seen, 3)
			for i, path := range []string{"/device", "/token", "/revoke"} {
				seen := srv.seen[i]
				require.Equal(t, path, seen.path)
				tc.check(t, seen)
				if tc.req.ClientKey != nil {
					std, _, _ := assertionClaims(t, seen.form.Get("client_assertion"), priv)
					require.Equal(t, jwt.Audience{srv.URL + path}, std.Audience, "aud is the endpoint called")
				}
			}
		})
	}
}
