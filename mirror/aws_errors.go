package mirror

import (
	"errors"
	"strconv"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// AWS error codes by classification. Codes not listed are classified by HTTP
// status.
var (
	awsAuthCodes = map[string]bool{
		"AccessDeniedException":       true,
		"AccessDenied":                true, // STS AssumeRole
		"UnrecognizedClientException": true,
		"InvalidClientTokenId":        true,
		"InvalidSignatureException":   true,
		"SignatureDoesNotMatch":       true,
		"IncompleteSignature":         true,
		"MissingAuthenticationToken":  true,
		"ExpiredToken":                true,
		"ExpiredTokenException":       true,
		"NotAuthorized":               true,
	}
	awsThrottleCodes = map[string]bool{
		"ThrottlingException":      true,
		"Throttling":               true,
		"TooManyRequestsException": true,
		"RequestLimitExceeded":     true,
	}
	awsUnavailableCodes = map[string]bool{
		"InternalServiceError":        true,
		"InternalFailure":             true,
		"ServiceUnavailable":          true,
		"ServiceUnavailableException": true,
	}
)

// awsErrorCode returns the AWS error code of err ("" when err is not an AWS
// API error).
func awsErrorCode(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode()
	}
	return ""
}

// awsError classifies an error of the AWS SDK as an *Error. It keeps the
// error code and HTTP status, never the upstream message.
func awsError(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var mirrorErr *Error
	if errors.As(err, &mirrorErr) {
		return mirrorErr
	}
	e := &Error{Target: NameAWS, Op: op, Name: name}
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) {
		e.Status = respErr.HTTPStatusCode()
	}
	var apiErr smithy.APIError
	switch {
	case classifyPolicy(e, err):
	case errors.As(err, &apiErr):
		e.Code = apiErr.ErrorCode()
		e.Kind, e.Retryable = classifyAWSCode(e.Code, e.Status, apiErr.ErrorFault())
	case e.Status != 0:
		e.Code = "http_" + strconv.Itoa(e.Status)
		e.Kind, e.Retryable = classifyStatus(e.Status)
	case classifyTransport(e, err):
	case isSigningError(err):
		e.Kind, e.Code, e.detail = KindAuth, "credentials", "no AWS credentials could be obtained"
	default:
		e.Kind, e.Code, e.Retryable = KindUnknown, "unknown", true
	}
	return e
}

// awsConflict classifies err as a retryable conflict.
func awsConflict(op, name string, err error) error {
	e := awsError(op, name, err).(*Error)
	e.Kind, e.Retryable = KindConflict, true
	return e
}

func classifyAWSCode(code string, status int, fault smithy.ErrorFault) (Kind, bool) {
	switch {
	case awsAuthCodes[code]:
		return KindAuth, false
	case awsThrottleCodes[code]:
		return KindThrottled, true
	case awsUnavailableCodes[code]:
		return KindUnreachable, true
	case status != 0:
		return classifyStatus(status)
	case fault == smithy.FaultServer:
		return KindUnreachable, true
	}
	return KindRejected, false
}

func isSigningError(err error) bool {
	var signErr *v4.SigningError
	return errors.As(err, &signErr)
}
