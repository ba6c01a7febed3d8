package upstream

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// countingTLSServer is an https token endpoint on 127.0.0.1 that counts the
// connections it accepts (before any TLS handshake).
type countingTLSServer struct {
	*httptest.Server
	accepted atomic.Int64
}

func newCountingTLSServer(tb testing.TB) *countingTLSServer {
	tb.Helper()
	s := &countingTLSServer{Server: httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"at","token_type":"bearer","expires_in":60}`))
	}))}
	s.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.accepted.Add(1)
		}
	}
	s.StartTLS()
	tb.Cleanup(s.Close)
	return s
}

func (s *countingTLSServer) roots() *http.Transport { return s.Client().Transport.(*http.Transport) }

// anyHTTPS allows https to any host, as an empty allowed_hosts does.
func anyHTTPS(scheme, _ string) bool { return scheme == "https" }

func TestUnlistedLoopbackIsNotDialled(t *testing.T) {
	srv := newCountingTLSServer(t)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	c := New(testPolicy{allowed: anyHTTPS}, srv.roots().TLSClientConfig.RootCAs, nil)
	c.Attempts = 1
	for _, tokenURL := range []string{
		srv.URL + "/token",
		"https://localhost:" + port + "/token", // a name that resolves to loopback
		"https://[::ffff:127.0.0.1]:" + port + "/token",
	} {
		_, err := c.Token(context.Background(), Request{Grant: "client_credentials", ClientID: "c", ClientSecret: "s3cr3t", TokenURL: tokenURL})
		var ue *Error
		require.ErrorAs(t, err, &ue, tokenURL)
		require.True(t, ue.Permanent, "a refusal is not retried")
		require.Contains(t, ue.Error(), "loopback address")
		require.Contains(t, ue.Error(), "allowed_hosts")
		require.NotContains(t, ue.Error(), "s3cr3t")
		require.Zero(t, srv.accepted.Load(), "%s: no connection may be opened", tokenURL)
	}
	require.ErrorContains(t, c.Revoke(context.Background(), Request{ClientID: "c", ClientSecret: "s"}, srv.URL, "rt", "refresh_token"), "loopback")
	require.Zero(t, srv.accepted.Load())

	// The same server, listed, is called.
	listed := New(testPolicy{allowed: anyHTTPS, listed: []string{"127.0.0.1"}}, srv.roots().TLSClientConfig.RootCAs, nil)
	tok, err := listed.Token(context.Background(), Request{Grant: "client_credentials", ClientID: "c", ClientSecret: "s", TokenURL: srv.URL + "/token"})
	require.NoError(t, err)
	require.Equal(t, "at", tok.AccessToken)
	require.EqualValues(t, 1, srv.accepted.Load())
}

func TestPrivateAddressRefusalNamesTheOptIn(t *testing.T) {
	msg := refusal("idp.corp:443", &refusedAddress{addr: netip.MustParseAddr("10.1.2.3"), class: RangePrivate}, false)
	require.Equal(t, "the host policy refused the connection: host idp.corp resolves to 10.1.2.3, a private address; "+
		"list the host in allowed_hosts (https) or insecure_http_hosts (http) to allow it, or set allow_private_networks", msg)
	msg = refusal("0.0.0.0:443", &refusedAddress{addr: netip.MustParseAddr("0.0.0.0"), class: RangeUnspecified}, true)
	require.Contains(t, msg, "connection: 0.0.0.0 is an unspecified address; list the host")
	require.NotContains(t, msg, "allow_private_networks")
}

func TestAddressClass(t *testing.T) {
	for _, tc := range []struct {
		addr  string
		class string
	}{
		{"93.184.216.34", ""},
		{"8.8.8.8", ""},
		{"2606:4700:4700::1111", ""},
		{"127.0.0.1", RangeLoopback},
		{"127.255.0.9", RangeLoopback},
		{"::1", RangeLoopback},
		{"::ffff:127.0.0.1", RangeLoopback},
		{"64:ff9b::7f00:1", RangeLoopback},  // NAT64 of 127.0.0.1
		{"2002:7f00:1::1", RangeLoopback},   // 6to4 of 127.0.0.1
		{"2002:5db8:d822::1", ""},           // 6to4 of a public address
		{"169.254.169.254", RangeLinkLocal}, // cloud instance metadata
		{"::ffff:169.254.169.254", RangeLinkLocal},
		{"fe80::1", RangeLinkLocal},
		{"fe80::1%eth0", RangeLinkLocal},
		{"febf::1", RangeLinkLocal},
		{"10.0.0.1", RangePrivate},
		{"10.255.255.255", RangePrivate},
		{"172.16.0.1", RangePrivate},
		{"172.31.255.1", RangePrivate},
		{"172.32.0.1", ""},
		{"192.168.1.1", RangePrivate},
		{"::ffff:192.168.1.1", RangePrivate},
		{"100.64.0.1", RangePrivate},
		{"100.127.255.255", RangePrivate},
		{"100.128.0.1", ""},
		{"fc00::1", RangePrivate},
		{"fd12:3456::1", RangePrivate},
		{"0.0.0.0", RangeUnspecified},
		{"0.1.2.3", RangeUnspecified},
		{"::", RangeUnspecified},
		{"::ffff:0.0.0.0", RangeUnspecified},
		{"224.0.0.1", RangeMulticast},
		{"239.255.255.250", RangeMulticast},
		{"ff02::1", RangeMulticast},
		{"255.255.255.255", RangeBroadcast},
		{"240.0.0.1", RangeReserved},
		{"192.0.2.1", RangeReserved},
		{"198.18.0.1", RangeReserved},
		{"::7f00:1", RangeReserved}, // IPv4-compatible
		{"2001:db8::1", RangeReserved},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			require.Equal(t, tc.class, AddressClass(netip.MustParseAddr(tc.addr)))
		})
	}
	require.Equal(t, RangeReserved, AddressClass(netip.Addr{}))
}

func TestRefusedRangeAllowPrivateNetworks(t *testing.T) {
	for _, tc := range []struct {
		addr            string
		denied, private string // RefusedRange without and with allow_private_networks
	}{
		{"93.184.216.34", "", ""},
		{"10.1.2.3", RangePrivate, ""},
		{"192.168.0.10", RangePrivate, ""},
		{"172.20.0.1", RangePrivate, ""},
		{"100.64.0.1", RangePrivate, ""},
		{"fc00::1", RangePrivate, ""},
		{"::ffff:10.0.0.1", RangePrivate, ""},
		// allow_private_networks never opens these:
		{"127.0.0.1", RangeLoopback, RangeLoopback},
		{"::ffff:127.0.0.1", RangeLoopback, RangeLoopback},
		{"169.254.169.254", RangeLinkLocal, RangeLinkLocal},
		{"fe80::1", RangeLinkLocal, RangeLinkLocal},
		{"0.0.0.0", RangeUnspecified, RangeUnspecified},
		{"::", RangeUnspecified, RangeUnspecified},
		{"224.0.0.1", RangeMulticast, RangeMulticast},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			ip := netip.MustParseAddr(tc.addr)
			require.Equal(t, tc.denied, RefusedRange(ip, false))
			require.Equal(t, tc.private, RefusedRange(ip, true))
		})
	}
}
