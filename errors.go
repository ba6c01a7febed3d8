package nebula

import (
	"errors"
	"fmt"
	"net/http"
)

// Kind classifies a CredentialError. Each kind has one HTTP status and one
// stable code that starts the error message, so clients can branch on it
// (DESIGN.md, "Errors").
type Kind int

// The error kinds of the CredentialManager API.
const (
	KindInvalidInput Kind = iota + 1
	KindUnsupportedType
	KindInvalidCallback
	KindAccessDenied
	KindNotFound
	KindDuplicate
	KindRotationInProgress
	KindInteractionRequired
	KindFlowExpired
	KindExpired
	KindNoToken
	KindNoRefreshToken
	KindRefreshNotSupported
	KindRefreshFailed
	KindRotationFailed
	KindUnavailable
	KindStorage
)

var kindInfo = map[Kind]struct {
	status int
	code   string
}{
	KindInvalidInput:        {http.StatusBadRequest, "invalid_input"},
	KindUnsupportedType:     {http.StatusBadRequest, "unsupported_type"},
	KindInvalidCallback:     {http.StatusBadRequest, "invalid_callback"},
	KindAccessDenied:        {http.StatusForbidden, "access_denied"},
	KindNotFound:            {http.StatusNotFound, "not_found"},
	KindDuplicate:           {http.StatusConflict, "duplicate"},
	KindRotationInProgress:  {http.StatusConflict, "rotation_in_progress"},
	KindInteractionRequired: {http.StatusConflict, "interaction_required"},
	KindFlowExpired:         {http.StatusGone, "flow_expired"},
	KindExpired:             {http.StatusGone, "expired"},
	KindNoToken:             {http.StatusUnprocessableEntity, "no_token"},
	KindNoRefreshToken:      {http.StatusUnprocessableEntity, "no_refresh_token"},
	KindRefreshNotSupported: {http.StatusUnprocessableEntity, "refresh_not_supported"},
	KindRefreshFailed:       {http.StatusBadGateway, "refresh_failed"},
	KindRotationFailed:      {http.StatusBadGateway, "rotation_failed"},
	KindUnavailable:         {http.StatusServiceUnavailable, "unavailable"},
	KindStorage:             {http.StatusInternalServerError, "storage_error"},
}

// Code is the stable code prefix of the kind, e.g. "invalid_input".
func (k Kind) Code() string { return kindInfo[k].code }

// Status is the HTTP status Vault answers with for the kind.
func (k Kind) Status() int { return kindInfo[k].status }

// CredentialError is the error every handler returns for a failure a caller
// can act on. It implements logical.HTTPCodedError, so the status survives the
// plugin's gRPC boundary and reaches the HTTP client; the message is
// "<code>: <text>".
//
// Msg must never hold secret material or upstream response bodies. Err, the
// cause, is kept for errors.Is/As and for logs that know it is safe; it is not
// part of the message.
type CredentialError struct {
	Kind Kind
	Msg  string
	Err  error
}

func (e *CredentialError) Error() string { return e.Kind.Code() + ": " + e.Msg }

// Code implements logical.HTTPCodedError.
func (e *CredentialError) Code() int { return e.Kind.Status() }

func (e *CredentialError) Unwrap() error { return e.Err }

// newError builds a CredentialError with a formatted message.
func newError(kind Kind, format string, args ...any) *CredentialError {
	return &CredentialError{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// invalidInput turns a validation error (possibly joined, see errors.Join)
// into one invalid_input error listing every problem.
func invalidInput(err error) *CredentialError {
	return &CredentialError{Kind: KindInvalidInput, Msg: joinedMessage(err), Err: err}
}

// storageError reports a failure of Vault's storage. The cause names a
// storage key at most, never a value.
func storageError(op string, err error) *CredentialError {
	return &CredentialError{Kind: KindStorage, Msg: fmt.Sprintf("%s: %v", op, err), Err: err}
}

// joinedMessage renders an errors.Join tree as "a; b; c".
func joinedMessage(err error) string {
	var multi interface{ Unwrap() []error }
	if !errors.As(err, &multi) {
		return err.Error()
	}
	msg := ""
	for _, e := range multi.Unwrap() {
		if msg != "" {
			msg += "; "
		}
		msg += joinedMessage(e)
	}
	return msg
}

// ErrorKind returns the kind of err, or 0 when err is not a CredentialError.
func ErrorKind(err error) Kind {
	var ce *CredentialError
	if errors.As(err, &ce) {
		return ce.Kind
	}
	return 0
}
