package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/stretchr/testify/assert"
)

func TestClassifyStatus(t *testing.T) {
	tests := []struct {
		status    int
		kind      Kind
		retryable bool
	}{
		{400, KindRejected, false},
		{401, KindAuth, false},
		{403, KindAuth, false},
		{404, KindRejected, false},
		{408, KindUnreachable, true},
		{409, KindConflict, true},
		{429, KindThrottled, true},
		{500, KindUnreachable, true},
		{502, KindUnreachable, true},
		{503, KindUnreachable, true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			kind, retryable := classifyStatus(tc.status)
			assert.Equal(t, tc.kind, kind)
			assert.Equal(t, tc.retryable, retryable)
		})
	}
}

// awsResponseError builds the error the AWS SDK returns for an API error
// answered with status.
func awsResponseError(status int, code, msg string) error {
	resp := &smithyhttp.Response{Response: &http.Response{StatusCode: status}}
	return &smithy.OperationError{ServiceID: "Secrets Manager", OperationName: "PutSecretValue",
		Err: &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{Response: resp,
			Err: &smithy.GenericAPIError{Code: code, Message: msg}}}}
}

func TestAWSErrorClassification(t *testing.T) {
	refused := &url.Error{Op: "Post", URL: "https://x", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	tests := []struct {
		name      string
		err       error
		kind      Kind
		retryable bool
		code      string
	}{
		{"access denied", awsResponseError(400, "AccessDeniedException", testSecret), KindAuth, false, "AccessDeniedException"},
		{"expired token", awsResponseError(400, "ExpiredTokenException", ""), KindAuth, false, "ExpiredTokenException"},
		{"throttled", awsResponseError(400, "ThrottlingException", ""), KindThrottled, true, "ThrottlingException"},
		{"internal", awsResponseError(500, "InternalServiceError", testSecret), KindUnreachable, true, "InternalServiceError"},
		{"kms", awsResponseError(400, "EncryptionFailure", ""), KindRejected, false, "EncryptionFailure"},
		{"limit", awsResponseError(400, "LimitExceededException", ""), KindRejected, false, "LimitExceededException"},
		{"unknown 503", awsResponseError(503, "Whatever", ""), KindUnreachable, true, "Whatever"},
		{"refused", &smithyhttp.RequestSendError{Err: refused}, KindUnreachable, true, "connection_failed"},
		{"eof", &smithyhttp.RequestSendError{Err: io.EOF}, KindUnreachable, true, "connection_closed"},
		{"deadline", fmt.Errorf("op: %w", context.DeadlineExceeded), KindUnreachable, true, "timeout"},
		{"other", errors.New("boom " + testSecret), KindUnknown, true, "unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := awsError(opPut, "nebula/x", tc.err)
			e := assertMirrorError(t, err, tc.kind, tc.retryable)
			assert.Equal(t, tc.code, e.Code)
			assert.Equal(t, "aws", e.Target)
			assert.True(t, strings.HasPrefix(err.Error(), `mirror aws: put "nebula/x": `), err.Error())
		})
	}
	assert.NoError(t, awsError(opPut, "x", nil))
}

func TestAzureErrorClassification(t *testing.T) {
	respErr := func(status int) error {
		resp := &http.Response{
			StatusCode: status,
			Header:     http.Header{"Content-Type": {"application/json"}},
			Body:       io.NopCloser(strings.NewReader(`{"error":{"code":"Forbidden","message":"` + testSecret + `"}}`)),
			Request:    &http.Request{Method: "PUT", URL: &url.URL{Scheme: "https", Host: "v", Path: "/secrets/x"}},
		}
		return runtime.NewResponseError(resp)
	}
	err := azureError(opPut, "nebula-x", respErr(403))
	e := assertMirrorError(t, err, KindAuth, false)
	assert.Equal(t, "Forbidden", e.Code)
	assert.Equal(t, 403, e.Status)
	assert.Contains(t, respErr(403).Error(), testSecret, "the SDK error holds the body; ours must not")

	err = azureError(opPut, "nebula-x", fmt.Errorf("wrapped: %w", io.ErrUnexpectedEOF))
	assertMirrorError(t, err, KindUnreachable, true)
	err = azureError(opDelete, "nebula-x", context.Canceled)
	e = assertMirrorError(t, err, KindUnreachable, true)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, "delete", e.Op)
	assert.NoError(t, azureError(opPut, "x", nil))
}
