package upstream

import (
	"errors"
	"math"
	"strconv"
	"strings"

	"golang.org/x/oauth2"
)

// MaxExpiresIn caps the seconds fields of authorization server answers
// (expires_in, interval), as golang.org/x/oauth2 caps a token answer's
// expires_in (math.MaxInt32 s, about 68 years): a larger value would
// overflow a time.Duration and land the expiry in the past.
const MaxExpiresIn = math.MaxInt32

// cappedSeconds reads a seconds field of an answer: 0 when it is missing,
// not an integer or not positive, at most MaxExpiresIn.
func cappedSeconds(raw string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0
	}
	return min(max(n, 0), MaxExpiresIn)
}

// TokenExpiresIn is a token answer's expires_in in seconds, at most
// MaxExpiresIn; 0 when it has none. golang.org/x/oauth2 caps the value of a
// JSON answer itself, but turns a form-encoded answer's into an Expiry that
// overflows for large values, so that one is read from the raw answer.
func TokenExpiresIn(tok *oauth2.Token) int64 {
	if tok.ExpiresIn > 0 {
		return min(tok.ExpiresIn, MaxExpiresIn)
	}
	switch v := tok.Extra("expires_in").(type) {
	case int64:
		return min(max(v, 0), MaxExpiresIn)
	case string: // beyond int64 in a form-encoded answer
		return cappedSeconds(v)
	}
	return 0
}
