package nebula

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/types"
)

// FuzzCredentialInput drives creds/<name> writes with arbitrary names, types
// and field values. Every input must either be stored and read back without
// its secret, or be refused with a 400 CredentialError that does not echo
// the secret; nothing may panic or answer 500.
//
// The secret text may legitimately appear in an answer for other reasons:
// it is part of the name, type, tags or other value (which errors and reads
// do echo, quoted or not), or of a message's constant text. So a sighting
// counts as a leak only when the same write with a canary secret of the same
// length does not show the sighted text in the same place: the text then
// came from the secret itself. The canary answer is also checked for the
// canary, a second leak check that cannot be confused with other input.
func FuzzCredentialInput(f *testing.F) {
	f.Add("github", "oauth2", "client_id", "cid", "s3cr3t-value", "read,write")
	f.Add("key-1", "api_key", "placement", "query", "k3y-value", "")
	f.Add("b", "basic_auth", "username", "a:b", "pa55", "x")
	f.Add("bad$name", "bearer", "expires_at", "2027-01-01T00:00:00Z", "tok", "")
	f.Add("x", "kerberos", "tags", "a b", "", "\x00")
	f.Add(strings.Repeat("n", 130), "api_key", "metadata", "k=v", "v", "")
	// A secret that validation refuses: its error must not quote it.
	f.Add("nl", "bearer", "tags", "", "first-line\nsecond-line", "")
	// Found by the fuzzer: the secret is part of the (invalid) name, which
	// the error quotes.
	f.Add(" 000000000", "api_key", "metadata", "", "000000000", "")

	f.Fuzz(func(t *testing.T, name, typ, field, value, secret, tags string) {
		if strings.ContainsAny(name, "/?#") || name == "" {
			t.Skip("not a single path segment")
		}
		write := func(secret string) credentialAnswer {
			e := newTestBackend(t)
			data := map[string]any{
				"type": typ, field: value, "tags": tags,
				// Every secret field of every type gets the same secret.
				"api_key": secret, "password": secret, "token": secret, "client_secret": secret,
				"username": "u", "client_id": "c", "token_url": "https://auth.example.com/token",
			}
			resp, err := e.request(t, logical.CreateOperation, "creds/"+name, data)
			if err != nil {
				var ce *CredentialError
				if !errors.As(err, &ce) {
					t.Fatalf("unclassified error %T: %v", err, err)
				}
				if ce.Code() != 400 {
					t.Fatalf("want 400, got %d: %v", ce.Code(), err)
				}
				return credentialAnswer{err: err.Error()}
			}
			read := e.mustRequest(t, logical.ReadOperation, "creds/"+name, nil)
			return credentialAnswer{fields: stringFields(field, resp, read)}
		}
		got := write(secret)
		if len(secret) < 8 {
			return // too short to tell apart from other text
		}
		sightings := got.sightings(secret)
		if len(sightings) == 0 {
			return
		}
		canary, ok := canaryLike(secret, name, typ, field, value, tags)
		if !ok {
			t.Skip("no stand-in secret to tell a leak from an echo")
		}
		control := write(canary)
		if where := control.sightings(canary); len(where) > 0 {
			t.Fatalf("the secret is echoed in %s", strings.Join(where, ", "))
		}
		for _, where := range sightings {
			if !control.holds(where, secret) {
				t.Fatalf("the secret is echoed in %s", where)
			}
		}
	})
}

// credentialAnswer is what one fuzzed write showed its caller: the error
// text, or the string fields of the write's and the read's answers.
type credentialAnswer struct {
	err    string
	fields map[string]string // "write.<key>" / "read.<key>" -> value
}

// stringFields collects the string values of the answers' data, leaving
// out the fuzzed field itself (its value is the caller's own input).
func stringFields(field string, answers ...*logical.Response) map[string]string {
	out := map[string]string{}
	for i, r := range answers {
		if r == nil {
			continue
		}
		prefix := [...]string{"write.", "read."}[i]
		for k, v := range r.Data {
			if s, ok := v.(string); ok && k != field {
				out[prefix+k] = s
			}
		}
	}
	return out
}

// sightings names the places of the answer that contain text, as it is or
// quoted the way %q quotes it.
func (a credentialAnswer) sightings(text string) []string {
	var where []string
	if a.err != "" && containsEither(a.err, text) {
		where = append(where, "the error")
	}
	for k, v := range a.fields {
		if containsEither(v, text) {
			where = append(where, "field "+k)
		}
	}
	return where
}

// holds reports whether the named place of the answer contains text, as it
// is or quoted.
func (a credentialAnswer) holds(where, text string) bool {
	if where == "the error" {
		return containsEither(a.err, text)
	}
	v, ok := a.fields[strings.TrimPrefix(where, "field ")]
	return ok && containsEither(v, text)
}

func containsEither(s, text string) bool {
	quoted := strconv.Quote(text)
	return strings.Contains(s, text) || strings.Contains(s, quoted[1:len(quoted)-1])
}

// canaryLike returns a stand-in for secret that takes the same validation
// path: ASCII letters and digits become one letter secret does not hold,
// other characters become one of the same UTF-8 width (punctuation, spaces
// and control characters stay), so byte and character counts and character
// classes are kept. It must differ from secret and appear in none of the
// other inputs; ok is false when no such stand-in is found.
func canaryLike(secret string, others ...string) (canary string, ok bool) {
	wide := map[int]rune{2: 'é', 3: '€', 4: '😀'}
	for _, c := range "QZXJKVWqzxjkvw" {
		if strings.ContainsRune(secret, c) {
			continue
		}
		var b strings.Builder
		for _, r := range secret {
			switch n := utf8.RuneLen(r); {
			case r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r)):
				b.WriteRune(c)
			case n > 1 && r != utf8.RuneError:
				b.WriteRune(wide[n])
			default:
				b.WriteRune(r)
			}
		}
		canary = b.String()
		if canary == secret || len(canary) != len(secret) {
			continue
		}
		clean := true
		for _, o := range others {
			if strings.Contains(o, canary) {
				clean = false
			}
		}
		if clean {
			return canary, true
		}
	}
	return "", false
}

// FuzzWebhookAnswer feeds arbitrary webhook answers to the parser: it
// must not panic, must accept only string values of the type's secret
// fields (bearer: and expires_at), and must not echo values in errors.
func FuzzWebhookAnswer(f *testing.F) {
	f.Add("api_key", []byte(`{"api_key":"k"}`))
	f.Add("bearer", []byte(`{"token":"t","expires_at":"2027-01-01T00:00:00Z"}`))
	f.Add("basic_auth", []byte(`{"password":"p","username":"u"}`))
	f.Add("api_key", []byte(`{"api_key":1}`))
	f.Add("api_key", []byte(`[]`))
	f.Add("bearer", []byte(`{"token":"a\r\nb"}`))
	f.Fuzz(func(t *testing.T, typ string, raw []byte) {
		tt, ok := types.Lookup(typ)
		if !ok {
			return
		}
		fail := func(format string, args ...any) error {
			return newError(KindRotationFailed, "webhook: "+format, args...)
		}
		values, err := parseWebhookAnswer(tt, raw, fail)
		if err != nil {
			if ErrorKind(err) != KindRotationFailed {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		allowed := map[string]bool{"expires_at": tt == types.Bearer}
		for _, name := range tt.SecretFields() {
			allowed[name] = true
		}
		for name, v := range values {
			if !allowed[name] {
				t.Fatalf("accepted field %q", name)
			}
			if _, ok := v.(string); !ok {
				t.Fatalf("accepted a non-string %q", name)
			}
		}
	})
}
