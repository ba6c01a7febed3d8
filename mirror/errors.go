package mirror

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
)

// Kind classifies why a mirror operation failed.
type Kind string

// Kinds of *Error.
const (
	// KindUnreachable: the target could not be reached or failed on its side
	// (connection refused or reset, timeout, HTTP 5xx). Retryable, except TLS
	// certificate failures.
	KindUnreachable Kind = "unreachable"
	// KindThrottled: the target asked the caller to slow down (HTTP 429,
	// ThrottlingException). Retryable.
	KindThrottled Kind = "throttled"
	// KindAuth: the credentials were refused or lack a permission (HTTP 401
	// or 403, a bad signature, a failed token request). Permanent until the
	// configuration changes.
	KindAuth Kind = "auth"
	// KindConflict: the remote secret is in a transitional state (being
	// deleted or recovered). Retryable.
	KindConflict Kind = "conflict"
	// KindForeign: a secret with the rendered name exists and is not managed
	// by this engine for this credential. Permanent.
	KindForeign Kind = "foreign"
	// KindRejected: the target refused the request as invalid (HTTP 4xx
	// other than the above, e.g. a quota or a KMS key problem). Permanent.
	KindRejected Kind = "rejected"
	// KindInvalid: the request was not sent because its input is invalid
	// (content not JSON or too large, a rendered name the target does not
	// accept). Permanent.
	KindInvalid Kind = "invalid"
	// KindPolicy: the engine's outbound host policy refused the request
	// before any connection was opened (a host or address that is not
	// allowed). Permanent until the configuration changes.
	KindPolicy Kind = "policy"
	// KindUnknown: none of the above. Retryable.
	KindUnknown Kind = "unknown"
)

// describe returns the kind as a phrase for messages.
func (k Kind) describe() string {
	switch k {
	case KindUnreachable:
		return "target unreachable"
	case KindThrottled:
		return "throttled"
	case KindAuth:
		return "auth failure"
	case KindConflict:
		return "conflict"
	case KindForeign:
		return "secret not managed by nebula-credential"
	case KindRejected:
		return "request rejected"
	case KindInvalid:
		return "invalid input"
	case KindPolicy:
		return "refused by the host policy"
	}
	return "failed"
}

// Error is the error of a failed mirror operation. Its message names the
// target, operation, remote secret name and classification; it never holds
// secret content or upstream response bodies.
type Error struct {
	Target string // "aws" or "azure"
	Op     string // "put" or "delete"
	Name   string // the remote secret name
	Kind   Kind
	// Code is the upstream error code (an AWS error type such as
	// "AccessDeniedException", a Key Vault error code such as "Forbidden"), or
	// a code of this package ("connection_failed", "timeout", ...).
	Code string
	// Status is the HTTP status the target answered with; zero when it did
	// not answer.
	Status int
	// Retryable reports whether the same call may succeed later without a
	// configuration change.
	Retryable bool

	detail string // safe detail: a network error or a local reason
	cause  error  // context or network error, never an upstream response
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mirror %s: %s %q: %s", e.Target, e.Op, e.Name, e.Kind.describe())
	var parts []string
	if e.Code != "" {
		parts = append(parts, e.Code)
	}
	if e.Status != 0 {
		parts = append(parts, "HTTP "+strconv.Itoa(e.Status))
	}
	if e.Retryable {
		parts = append(parts, "retryable")
	} else {
		parts = append(parts, "permanent")
	}
	fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	if e.detail != "" {
		b.WriteString(": ")
		b.WriteString(e.detail)
	}
	return b.String()
}

// Unwrap returns the context or network error behind e, if any, so
// errors.Is(err, context.DeadlineExceeded) works.
func (e *Error) Unwrap() error { return e.cause }

// IsRetryable reports whether err is an *Error that may succeed when retried.
func IsRetryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Retryable
}

// localError is an error found before any request was sent.
func localError(target, op, name, code, detail string) *Error {
	return &Error{Target: target, Op: op, Name: name, Kind: KindInvalid, Code: code, detail: detail}
}

// foreignError reports a remote secret this engine does not own.
func foreignError(target, op, name, credential string) *Error {
	return &Error{
		Target: target, Op: op, Name: name, Kind: KindForeign, Code: "not_managed",
		detail: "the secret exists and its ownership tag does not name credential " + strconv.Quote(credential),
	}
}

// classifyStatus classifies an HTTP error status.
func classifyStatus(status int) (Kind, bool) {
	switch {
	case status == 401 || status == 403:
		return KindAuth, false
	case status == 429:
		return KindThrottled, true
	case status == 408 || status >= 500:
		return KindUnreachable, true
	case status == 409:
		return KindConflict, true
	case status >= 400:
		return KindRejected, false
	}
	return KindUnknown, true
}

// classifyPolicy fills e from a refusal of the engine's host policy (the
// transport the engine hands to NewAWS and NewAzure) and reports whether err
// was one.
func classifyPolicy(e *Error, err error) bool {
	var refused *upstream.Error
	if !errors.As(err, &refused) || !refused.Permanent {
		return false
	}
	e.Kind, e.Code, e.Retryable, e.detail = KindPolicy, "host_policy", false, refused.Error()
	return true
}

// classifyTransport fills e from a context or network error and reports
// whether err was one.
func classifyTransport(e *Error, err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		e.Kind, e.Code, e.Retryable, e.cause = KindUnreachable, "timeout", true, context.DeadlineExceeded
		return true
	case errors.Is(err, context.Canceled):
		e.Kind, e.Code, e.Retryable, e.cause = KindUnreachable, "canceled", true, context.Canceled
		return true
	}
	if detail, ok := tlsFailure(err); ok {
		e.Kind, e.Code, e.Retryable, e.detail = KindUnreachable, "tls_verification", false, detail
		return true
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &dnsErr):
		e.Kind, e.Code, e.Retryable, e.detail, e.cause = KindUnreachable, "dns", true, dnsErr.Error(), dnsErr
	case errors.As(err, &opErr):
		e.Kind, e.Code, e.Retryable, e.detail, e.cause = KindUnreachable, "connection_failed", true, opErr.Error(), opErr
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		e.Kind, e.Code, e.Retryable, e.detail = KindUnreachable, "connection_closed", true, "connection closed by the target"
	case errors.As(err, &netErr):
		e.Kind, e.Code, e.Retryable, e.detail = KindUnreachable, "network", true, netErr.Error()
	default:
		return false
	}
	return true
}

// tlsFailure reports a certificate verification failure: retrying does not
// help until the target's certificate or the trust store changes.
func tlsFailure(err error) (string, bool) {
	var verr *tls.CertificateVerificationError
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	var cerr x509.CertificateInvalidError
	switch {
	case errors.As(err, &verr):
		return verr.Error(), true
	case errors.As(err, &uerr):
		return uerr.Error(), true
	case errors.As(err, &herr):
		return herr.Error(), true
	case errors.As(err, &cerr):
		return cerr.Error(), true
	}
	return "", false
}
