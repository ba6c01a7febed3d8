package client

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/hashicorp/vault/api"
)

// Kind classifies an Error. The kinds mirror the engine's CredentialError
// kinds; each has one HTTP status and one stable code that starts the
// engine's error message ("not_found: credential \"x\" does not exist").
type Kind int

// The error kinds of the CredentialManager API. Unknown is the zero value:
// an error Vault answered without a code this client knows and whose status
// does not name a kind.
const (
	Unknown Kind = iota
	InvalidInput
	UnsupportedType
	InvalidCallback
	AccessDenied
	NotFound
	Duplicate
	RotationInProgress
	InteractionRequired
	FlowExpired
	Expired
	NoToken
	NoRefreshToken
	RefreshNotSupported
	RefreshFailed
	RotationFailed
	Unavailable
	Storage
)

var kindInfo = [...]struct {
	status int
	code   string
}{
	Unknown:             {0, "unknown"},
	InvalidInput:        {http.StatusBadRequest, "invalid_input"},
	UnsupportedType:     {http.StatusBadRequest, "unsupported_type"},
	InvalidCallback:     {http.StatusBadRequest, "invalid_callback"},
	AccessDenied:        {http.StatusForbidden, "access_denied"},
	NotFound:            {http.StatusNotFound, "not_found"},
	Duplicate:           {http.StatusConflict, "duplicate"},
	RotationInProgress:  {http.StatusConflict, "rotation_in_progress"},
	InteractionRequired: {http.StatusConflict, "interaction_required"},
	FlowExpired:         {http.StatusGone, "flow_expired"},
	Expired:             {http.StatusGone, "expired"},
	NoToken:             {http.StatusUnprocessableEntity, "no_token"},
	NoRefreshToken:      {http.StatusUnprocessableEntity, "no_refresh_token"},
	RefreshNotSupported: {http.StatusUnprocessableEntity, "refresh_not_supported"},
	RefreshFailed:       {http.StatusBadGateway, "refresh_failed"},
	RotationFailed:      {http.StatusBadGateway, "rotation_failed"},
	Unavailable:         {http.StatusServiceUnavailable, "unavailable"},
	Storage:             {http.StatusInternalServerError, "storage_error"},
}

// kindByCode finds a kind by its code prefix.
var kindByCode = func() map[string]Kind {
	m := make(map[string]Kind, len(kindInfo))
	for k := InvalidInput; int(k) < len(kindInfo); k++ {
		m[kindInfo[k].code] = k
	}
	return m
}()

func (k Kind) valid() bool { return k >= 0 && int(k) < len(kindInfo) }

// String is the kind's code, e.g. "not_found"; "unknown" for Unknown.
func (k Kind) String() string {
	if !k.valid() {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindInfo[k].code
}

// Status is the HTTP status the engine answers with for the kind; 0 for
// Unknown.
func (k Kind) Status() int {
	if !k.valid() {
		return 0
	}
	return kindInfo[k].status
}

// Error is a failure the engine (or Vault in front of it) answered. Branch
// on Kind, with errors.Is and the Err* sentinels or with errors.As:
//
//	tok, err := c.GetToken(ctx, "github", nil)
//	switch {
//	case errors.Is(err, client.ErrInteractionRequired):
//		// start a flow
//	case errors.Is(err, client.ErrNotFound):
//		// create the credential
//	}
//
// The engine's messages never hold secret material.
type Error struct {
	// Kind classifies the error.
	Kind Kind
	// Status is the HTTP status Vault answered with. It is 0 when the
	// client found the problem before sending, and the kind's status for
	// per-item errors of batch operations and refresh runs.
	Status int
	// Code is the code prefix of the engine's message ("not_found"); empty
	// when the message had none (Vault's own "permission denied").
	Code string
	// Message is the text after the code prefix.
	Message string
}

// Error renders the error as "nebula: <code>: <message>", with the HTTP
// status when there is one.
func (e *Error) Error() string {
	code := e.Code
	if code == "" {
		code = e.Kind.String()
	}
	if e.Status != 0 {
		return fmt.Sprintf("nebula: %s: %s (HTTP %d)", code, e.Message, e.Status)
	}
	return fmt.Sprintf("nebula: %s: %s", code, e.Message)
}

// Is reports whether target is an *Error of the same Kind, so that
// errors.Is(err, client.ErrNotFound) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind
}

// Sentinels for errors.Is, one per kind.
var (
	ErrInvalidInput        = &Error{Kind: InvalidInput, Code: "invalid_input"}
	ErrUnsupportedType     = &Error{Kind: UnsupportedType, Code: "unsupported_type"}
	ErrInvalidCallback     = &Error{Kind: InvalidCallback, Code: "invalid_callback"}
	ErrAccessDenied        = &Error{Kind: AccessDenied, Code: "access_denied"}
	ErrNotFound            = &Error{Kind: NotFound, Code: "not_found"}
	ErrDuplicate           = &Error{Kind: Duplicate, Code: "duplicate"}
	ErrRotationInProgress  = &Error{Kind: RotationInProgress, Code: "rotation_in_progress"}
	ErrInteractionRequired = &Error{Kind: InteractionRequired, Code: "interaction_required"}
	ErrFlowExpired         = &Error{Kind: FlowExpired, Code: "flow_expired"}
	ErrExpired             = &Error{Kind: Expired, Code: "expired"}
	ErrNoToken             = &Error{Kind: NoToken, Code: "no_token"}
	ErrNoRefreshToken      = &Error{Kind: NoRefreshToken, Code: "no_refresh_token"}
	ErrRefreshNotSupported = &Error{Kind: RefreshNotSupported, Code: "refresh_not_supported"}
	ErrRefreshFailed       = &Error{Kind: RefreshFailed, Code: "refresh_failed"}
	ErrRotationFailed      = &Error{Kind: RotationFailed, Code: "rotation_failed"}
	ErrUnavailable         = &Error{Kind: Unavailable, Code: "unavailable"}
	ErrStorage             = &Error{Kind: Storage, Code: "storage_error"}
)

// ErrorKind returns the Kind of err, or Unknown when err is not an *Error.
func ErrorKind(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Unknown
}

// multierrorRe matches the wrapper Vault puts around errors a plugin
// returns without a coded response ("1 error occurred:\n\t* ...").
var multierrorRe = regexp.MustCompile(`^\d+ errors? occurred:\s*\*\s*`)

// parseMessage splits an error message into its code and text. A message
// without a known code prefix answers Unknown with the whole text.
func parseMessage(msg string) (Kind, string, string) {
	msg = strings.TrimSpace(msg)
	if loc := multierrorRe.FindStringIndex(msg); loc != nil {
		msg = strings.TrimSpace(msg[loc[1]:])
	}
	code, text, ok := strings.Cut(msg, ":")
	if ok {
		if k, known := kindByCode[code]; known {
			return k, code, strings.TrimSpace(text)
		}
	}
	return Unknown, "", msg
}

// kindForStatus names the kind of an uncoded error where the status leaves
// no doubt: Vault's own 400s (bad field values), 403 (permission denied),
// 404 (no such path) and 503 (sealed, standby).
func kindForStatus(status int) Kind {
	switch status {
	case http.StatusBadRequest:
		return InvalidInput
	case http.StatusForbidden:
		return AccessDenied
	case http.StatusNotFound:
		return NotFound
	case http.StatusServiceUnavailable:
		return Unavailable
	}
	return Unknown
}

// newResponseError builds an *Error from a status and Vault's error
// messages; the first message carries the code.
func newResponseError(status int, messages []string) *Error {
	e := &Error{Status: status}
	if len(messages) == 0 {
		e.Kind = kindForStatus(status)
		e.Message = http.StatusText(status)
		return e
	}
	e.Kind, e.Code, e.Message = parseMessage(messages[0])
	if e.Kind == Unknown {
		e.Kind = kindForStatus(status)
	}
	for _, m := range messages[1:] {
		e.Message += "; " + strings.TrimSpace(m)
	}
	return e
}

// itemError parses the error string of one item of a batch or refresh run
// ("<code>: <message>"); Status is the kind's status.
func itemError(msg string) error {
	if msg == "" {
		return nil
	}
	k, code, text := parseMessage(msg)
	return &Error{Kind: k, Status: k.Status(), Code: code, Message: text}
}

// clientError is a problem the client found before sending a request.
func clientError(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: kind.String(), Message: fmt.Sprintf(format, args...)}
}

// fromAPI turns an error of the Vault API client into an *Error when Vault
// answered, and wraps transport errors.
func fromAPI(op string, err error) error {
	if err == nil {
		return nil
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		messages := re.Errors
		if re.RawError {
			messages = nil // an unparsable body (a proxy's page) holds no code
		}
		return newResponseError(re.StatusCode, messages)
	}
	return fmt.Errorf("nebula: %s: %w", op, err)
}
