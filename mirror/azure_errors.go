package mirror

import (
	"errors"
	"strconv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// azureError classifies an error of the Key Vault or identity SDKs as an
// *Error. It keeps the error code and HTTP status, never the response body
// (azcore.ResponseError and azidentity.AuthenticationFailedError print it).
func azureError(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var mirrorErr *Error
	if errors.As(err, &mirrorErr) {
		return mirrorErr
	}
	e := &Error{Target: NameAzure, Op: op, Name: name}
	var respErr *azcore.ResponseError
	var authErr *azidentity.AuthenticationFailedError
	var nonRetriable interface{ NonRetriable() }
	switch {
	case classifyPolicy(e, err):
	case errors.As(err, &respErr):
		e.Status, e.Code = respErr.StatusCode, respErr.ErrorCode
		if e.Code == "" {
			e.Code = "http_" + strconv.Itoa(e.Status)
		}
		e.Kind, e.Retryable = classifyStatus(e.Status)
	case errors.As(err, &authErr):
		// The token request failed: Entra ID answered with an error.
		e.Kind, e.Code, e.detail = KindAuth, "token_request_failed", "the identity provider refused the token request"
		if authErr.RawResponse != nil {
			e.Status = authErr.RawResponse.StatusCode
			if kind, retry := classifyStatus(e.Status); retry {
				e.Kind, e.Retryable = kind, true
			}
		}
	case classifyTransport(e, err):
	case errors.As(err, &nonRetriable):
		// The credential could not produce a token (e.g. no managed
		// identity); azcore marks such errors non-retriable.
		e.Kind, e.Code, e.detail = KindAuth, "credential_unavailable", "no Azure token could be obtained"
	default:
		e.Kind, e.Code, e.Retryable = KindUnknown, "unknown", true
	}
	return e
}
