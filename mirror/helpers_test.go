package mirror

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// The secret used as mirrored content in tests; no error may contain it.
const testSecret = "s3cr3t-t0ken-value"

// testContent returns a mirrored document of version v.
func testContent(v int) []byte {
	return []byte(`{"access_token":"` + testSecret + `-v` + strconv.Itoa(v) + `","token_type":"Bearer"}`)
}

// assertMirrorError checks that err is an *Error of kind with retryable, and
// that its message holds no secret content and none of the upstream texts.
func assertMirrorError(tb testing.TB, err error, kind Kind, retryable bool, upstream ...string) *Error {
	tb.Helper()
	var e *Error
	if !errors.As(err, &e) {
		tb.Fatalf("error %v (%T) is not a *mirror.Error", err, err)
	}
	if e.Kind != kind || e.Retryable != retryable {
		tb.Fatalf("error %q: kind %s retryable %v, want kind %s retryable %v", e, e.Kind, e.Retryable, kind, retryable)
	}
	if IsRetryable(err) != retryable {
		tb.Fatalf("IsRetryable(%q) = %v", e, !retryable)
	}
	msg := err.Error()
	for _, s := range append(upstream, testSecret) {
		if strings.Contains(msg, s) {
			tb.Fatalf("error message %q contains %q", msg, s)
		}
	}
	return e
}
