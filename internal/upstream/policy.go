package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/hashicorp/go-cleanhttp"
)

// Policy is the engine's outbound host policy. Every outbound call (token,
// revocation, device authorization, webhooks, mirrors) goes through a
// transport built from one (NewTransport), which enforces it on each request
// and on each connection it opens.
type Policy interface {
	// HostAllowed reports whether a URL with this scheme and host (host or
	// host:port) may be called: https to an allowed host, plain http only to
	// a host listed for it.
	HostAllowed(scheme, hostport string) bool
	// HostListed reports whether the host (host or host:port) is listed by
	// name or address in the configuration. A listed host may resolve to
	// any address; any other host is refused at dial time when it resolves
	// to a loopback, link-local, private, unspecified, multicast or reserved
	// address.
	HostListed(hostport string) bool
	// PrivateNetworksAllowed reports whether hosts that are not listed may
	// resolve to private addresses (RFC 1918, RFC 6598 shared address
	// space, IPv6 unique local addresses).
	PrivateNetworksAllowed() bool
}

// Address classes the policy refuses for hosts that are not listed.
const (
	RangeUnspecified = "unspecified"
	RangeLoopback    = "loopback"
	RangeLinkLocal   = "link-local"
	RangePrivate     = "private"
	RangeMulticast   = "multicast"
	RangeBroadcast   = "broadcast"
	RangeReserved    = "reserved"
)

// specialRanges are the IPv4 and IPv6 blocks of the IANA special-purpose
// registries (RFC 6890) that the policy refuses, each with its class. IPv4
// blocks are matched after unmapping IPv4-mapped IPv6 addresses.
var specialRanges = []struct {
	prefix netip.Prefix
	class  string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), RangeUnspecified},    // "this network"
	{netip.MustParsePrefix("10.0.0.0/8"), RangePrivate},       // RFC 1918
	{netip.MustParsePrefix("100.64.0.0/10"), RangePrivate},    // RFC 6598 shared (CGNAT)
	{netip.MustParsePrefix("127.0.0.0/8"), RangeLoopback},     //
	{netip.MustParsePrefix("169.254.0.0/16"), RangeLinkLocal}, // cloud metadata lives here
	{netip.MustParsePrefix("172.16.0.0/12"), RangePrivate},    // RFC 1918
	{netip.MustParsePrefix("192.0.0.0/24"), RangeReserved},    // IETF protocol assignments
	{netip.MustParsePrefix("192.0.2.0/24"), RangeReserved},    // documentation
	{netip.MustParsePrefix("192.168.0.0/16"), RangePrivate},   // RFC 1918
	{netip.MustParsePrefix("198.18.0.0/15"), RangeReserved},   // benchmarking
	{netip.MustParsePrefix("198.51.100.0/24"), RangeReserved}, // documentation
	{netip.MustParsePrefix("203.0.113.0/24"), RangeReserved},  // documentation
	{netip.MustParsePrefix("224.0.0.0/4"), RangeMulticast},    //
	{netip.MustParsePrefix("255.255.255.255/32"), RangeBroadcast},
	{netip.MustParsePrefix("240.0.0.0/4"), RangeReserved}, // future use
	{netip.MustParsePrefix("::/128"), RangeUnspecified},
	{netip.MustParsePrefix("::1/128"), RangeLoopback},
	{netip.MustParsePrefix("::/96"), RangeReserved},         // IPv4-compatible (deprecated)
	{netip.MustParsePrefix("100::/64"), RangeReserved},      // discard-only
	{netip.MustParsePrefix("2001:db8::/32"), RangeReserved}, // documentation
	{netip.MustParsePrefix("fc00::/7"), RangePrivate},       // unique local
	{netip.MustParsePrefix("fe80::/10"), RangeLinkLocal},
	{netip.MustParsePrefix("fec0::/10"), RangePrivate}, // site-local (deprecated)
	{netip.MustParsePrefix("ff00::/8"), RangeMulticast},
}

// Prefixes whose addresses embed an IPv4 address that is classified instead:
// NAT64 (RFC 6052, the address in the last 32 bits) and 6to4 (RFC 3056, in
// bits 16 to 48).
var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
)

// AddressClass returns the special range ip is in ("loopback", "private",
// ...), or "" for a public address. IPv4-mapped IPv6 addresses (and NAT64 and
// 6to4 ones) are classified by the IPv4 address they carry.
func AddressClass(ip netip.Addr) string {
	if !ip.IsValid() {
		return RangeReserved
	}
	ip = ip.WithZone("").Unmap()
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64Prefix.Contains(ip):
			ip = netip.AddrFrom4([4]byte(b[12:16]))
		case sixToFour.Contains(ip):
			ip = netip.AddrFrom4([4]byte(b[2:6]))
		}
	}
	for _, r := range specialRanges {
		if r.prefix.Contains(ip) {
			return r.class
		}
	}
	return ""
}

// RefusedRange returns the class of ip when a host that is not listed must
// not connect to it, or "" when it may: public addresses, and private ones
// when allowPrivate.
func RefusedRange(ip netip.Addr, allowPrivate bool) string {
	class := AddressClass(ip)
	if class == RangePrivate && allowPrivate {
		return ""
	}
	return class
}

// refusedAddress is the Control hook's refusal of one resolved address.
type refusedAddress struct {
	addr  netip.Addr
	class string
}

func (r *refusedAddress) Error() string {
	return fmt.Sprintf("%s is %s address", r.addr, withArticle(r.class))
}

// withArticle prefixes a class with "a" or "an".
func withArticle(class string) string {
	if class == RangeUnspecified {
		return "an " + class
	}
	return "a " + class
}

// policyDialer opens the connections of a policy transport.
type policyDialer struct {
	policy Policy
	plain  *net.Dialer // for listed hosts
}

// DialContext dials addr (the request's host:port). A listed host is dialled
// as is; any other host is dialled with a Control hook that checks every
// address it resolved to just before connecting, so a DNS answer that changes
// between checks (rebinding) cannot reach a refused address.
func (d *policyDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.policy.HostListed(addr) {
		return d.plain.DialContext(ctx, network, addr)
	}
	allowPrivate := d.policy.PrivateNetworksAllowed()
	checked := *d.plain
	checked.Control = func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return &refusedAddress{class: RangeReserved}
		}
		if class := RefusedRange(ap.Addr(), allowPrivate); class != "" {
			return &refusedAddress{addr: ap.Addr().WithZone(""), class: class}
		}
		return nil
	}
	conn, err := checked.DialContext(ctx, network, addr)
	var refused *refusedAddress
	if err != nil && errors.As(err, &refused) {
		return nil, &Error{Reason: refusal(addr, refused, allowPrivate), Permanent: true}
	}
	return conn, err
}

// refusal explains a refused connection and how to allow it.
func refusal(addr string, r *refusedAddress, allowPrivate bool) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	what := fmt.Sprintf("%s is %s address", host, withArticle(r.class))
	if r.addr.IsValid() && r.addr.String() != host {
		what = fmt.Sprintf("host %s resolves to %s, %s address", host, r.addr, withArticle(r.class))
	}
	allow := "list the host in allowed_hosts (https) or insecure_http_hosts (http) to allow it"
	if r.class == RangePrivate && !allowPrivate {
		allow += ", or set allow_private_networks"
	}
	return "the host policy refused the connection: " + what + "; " + allow
}

// NewTransport returns the transport of every outbound call: it refuses
// requests whose scheme and host policy does not allow, and connections to
// refused addresses of hosts policy does not list. It uses no proxy (a
// proxy would hide the address the policy checks). roots, when not nil,
// replaces the system's trusted CAs (tests, private CAs).
func NewTransport(policy Policy, roots *x509.CertPool) http.RoundTripper {
	transport := cleanhttp.DefaultPooledTransport()
	transport.Proxy = nil
	transport.DialContext = (&policyDialer{
		policy: policy,
		plain:  &net.Dialer{Timeout: DialTimeout, KeepAlive: DialKeepAlive},
	}).DialContext
	if roots != nil {
		transport.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	transport.TLSHandshakeTimeout = 5 * time.Second
	transport.ResponseHeaderTimeout = DefaultTimeout
	return &policyTransport{next: transport, policy: policy}
}

// NewHTTPClient returns an HTTP client on NewTransport(policy, roots) that
// follows redirects only to the same host (at most 3) and gives up on a
// request after DefaultTimeout.
func NewHTTPClient(policy Policy, roots *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout:   DefaultTimeout,
		Transport: NewTransport(policy, roots),
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host != via[0].URL.Host {
				return fmt.Errorf("redirect to another host (%s) refused", req.URL.Host)
			}
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			return nil
		},
	}
}

// policyTransport refuses requests the host policy does not allow.
type policyTransport struct {
	next   *http.Transport
	policy Policy
}

func (t *policyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.policy.HostAllowed(req.URL.Scheme, req.URL.Host) {
		return nil, &Error{Reason: fmt.Sprintf("%s://%s is not allowed by config (allowed_hosts, insecure_http_hosts)", req.URL.Scheme, req.URL.Host), Permanent: true}
	}
	return t.next.RoundTrip(req)
}

// CloseIdleConnections closes the transport's idle connections (called by
// http.Client.CloseIdleConnections).
func (t *policyTransport) CloseIdleConnections() { t.next.CloseIdleConnections() }
