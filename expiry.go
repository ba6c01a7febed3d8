package nebula

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
)

// maxExpiresIn caps the seconds fields of authorization server answers
// (expires_in, interval), as golang.org/x/oauth2 caps a token answer's
// expires_in (math.MaxInt32 s, about 68 years): a larger value would
// overflow a time.Duration and land the expiry in the past.
const maxExpiresIn = math.MaxInt32

// cappedSeconds reads a seconds field of an answer: 0 when it is missing,
// not an integer or not positive, at most maxExpiresIn.
func cappedSeconds(raw string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0
	}
	return min(max(n, 0), maxExpiresIn)
}

// tokenExpiresIn is a token answer's expires_in in seconds, at most
// maxExpiresIn; 0 when it has none. golang.org/x/oauth2 caps the value of a
// JSON answer itself, but turns a form-encoded answer's into an Expiry that
// overflows for large values, so that one is read from the raw answer.
func tokenExpiresIn(tok *oauth2.Token) int64 {
	if tok.ExpiresIn > 0 {
		return min(tok.ExpiresIn, maxExpiresIn)
	}
	switch v := tok.Extra("expires_in").(type) {
	case int64:
		return min(max(v, 0), maxExpiresIn)
	case string: // beyond int64 in a form-encoded answer
		return cappedSeconds(v)
	}
	return 0
}

// deviceAuthAnswer is a device authorization answer (RFC 8628 section
// 3.2), its seconds fields read as numbers of any size.
type deviceAuthAnswer struct {
	DeviceCode              string      `json:"device_code"`
	UserCode                string      `json:"user_code"`
	VerificationURI         string      `json:"verification_uri"`
	VerificationURL         string      `json:"verification_url"` // a common misspelling (Google)
	VerificationURIComplete string      `json:"verification_uri_complete"`
	ExpiresIn               json.Number `json:"expires_in"`
	Interval                json.Number `json:"interval"`
}

// requestDeviceAuth makes the device authorization request (RFC 8628
// section 3.1) as golang.org/x/oauth2's Config.DeviceAuth does, with the
// HTTP client ctx carries (upstreamContext), but caps expires_in and
// interval (maxExpiresIn): DeviceAuth multiplies expires_in into a
// time.Duration unchecked, so a huge value becomes an expiry in the past.
// Answers that are not a success are *endpointError values.
func requestDeviceAuth(ctx context.Context, conf *oauth2.Config) (*oauth2.DeviceAuthResponse, error) {
	const endpoint = "device authorization endpoint"
	client, _ := ctx.Value(oauth2.HTTPClient).(*http.Client)
	if client == nil {
		return nil, errors.New("no upstream HTTP client in the context")
	}
	form := url.Values{"client_id": {conf.ClientID}}
	if len(conf.Scopes) > 0 {
		form.Set("scope", strings.Join(conf.Scopes, " "))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, conf.Endpoint.DeviceAuthURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, &endpointError{Endpoint: endpoint, Reason: "has an invalid device_url"}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	ee := &endpointError{Endpoint: endpoint, Status: resp.StatusCode}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		ee.Reason, ee.Transient = "answer could not be read", true
		return nil, ee
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var oe struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &oe) != nil {
			if vals, err := url.ParseQuery(string(body)); err == nil {
				oe.Error = vals.Get("error")
			}
		}
		ee.Code = upstream.SafeCode(oe.Error)
		ee.Transient = transientAnswer(ee.Status, ee.Code)
		return nil, ee
	}
	var ans deviceAuthAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		return nil, fmt.Errorf("decoding the device authorization answer: %w", err)
	}
	da := &oauth2.DeviceAuthResponse{
		DeviceCode:              ans.DeviceCode,
		UserCode:                ans.UserCode,
		VerificationURI:         firstNonEmpty(ans.VerificationURI, ans.VerificationURL),
		VerificationURIComplete: ans.VerificationURIComplete,
		Interval:                cappedSeconds(ans.Interval.String()),
	}
	if secs := cappedSeconds(ans.ExpiresIn.String()); secs > 0 {
		da.Expiry = start.Add(time.Duration(secs) * time.Second)
	}
	return da, nil
}
