// Package types describes the credential types nebula-credential manages:
// their fields (which are secret, which are required), how their input is
// validated, whether they can be refreshed or rotated, and what the
// ready-to-use token of a static credential looks like.
//
// The package is pure: no storage, no network. The engine parses a request
// into Values, asks the Type to Check them, and stores the secret fields apart
// from the others.
package types

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

// FieldKind is the kind of value a field holds.
type FieldKind string

// The field kinds. Values hold them as: string; []string; int; bool;
// time as an RFC 3339 string.
const (
	KindString     FieldKind = "string"
	KindStringList FieldKind = "string_list"
	KindInt        FieldKind = "int"
	KindBool       FieldKind = "bool"
	KindTime       FieldKind = "time"
)

// Size limits of field values; a Field may set a smaller MaxLength.
const (
	// MaxStringLength bounds a non-secret string field, in bytes.
	MaxStringLength = 4096
	// MaxSecretLength bounds a secret field, in bytes (JWT bearer tokens can
	// be several kilobytes).
	MaxSecretLength = 16384
	// MaxListItems bounds a list field.
	MaxListItems = 64
)

// Field describes one input field of a credential type.
type Field struct {
	Name        string
	Kind        FieldKind
	Description string
	// Secret fields are stored seal-wrapped, apart from the credential's
	// metadata, and are returned only as a token.
	Secret bool
	// Required fields must be present once the credential exists (on create,
	// or from the stored value on update).
	Required bool
	// Default is used on create when the field is absent; nil means none.
	Default any
	// Allowed, when set, lists the only values the field may take.
	Allowed []string
	// MaxLength overrides MaxStringLength / MaxSecretLength when non-zero.
	MaxLength int
	// URL fields must hold an absolute http(s) URL.
	URL bool
	// Multiline fields may hold line breaks (PEM keys, JSON key files);
	// they are secret and never rendered into a header.
	Multiline bool
}

func (f Field) maxLength() int {
	switch {
	case f.MaxLength > 0:
		return f.MaxLength
	case f.Secret:
		return MaxSecretLength
	default:
		return MaxStringLength
	}
}

// Token is the ready-to-use form of a credential: what a caller puts on the
// wire.
type Token struct {
	// AccessToken is the secret value itself: the API key, the bearer or
	// access token, or the password of basic auth.
	AccessToken string
	// TokenType is "Bearer", "Basic" or "api_key".
	TokenType string
	// HeaderName is where the value goes, e.g. "Authorization", "X-API-Key".
	// Empty when the value goes into a query parameter (QueryParam).
	HeaderName string
	// HeaderValue is the header's value, e.g. "Bearer abc" or the raw key.
	HeaderValue string
	// QueryParam names the query parameter for api keys placed in the query.
	QueryParam string
	// ExpiresAt is when the token stops working; zero means it does not
	// expire.
	ExpiresAt time.Time
}

// Type is a credential type.
type Type struct {
	Name        string
	Description string
	Fields      []Field
	// Refreshable types obtain tokens from an upstream that can issue new
	// ones (oauth2).
	Refreshable bool
	// Rotatable types can get a new secret version through rotate/<name>.
	Rotatable bool
	// Grants lists the OAuth2 grant types a type supports.
	Grants []string
	// validate checks relations between fields, after each field on its own
	// passed. It sees the full set of values (stored merged with supplied).
	validate func(Values) error
	// token renders the ready-to-use token of a static credential; nil for
	// types whose tokens come from an upstream.
	token func(Values) (Token, error)
	// generate makes new secret values, for types that make their own.
	generate func(Values) (Values, error)
}

// Field returns the named field of the type.
func (t *Type) Field(name string) (Field, bool) {
	for _, f := range t.Fields {
		if f.Name == name {
			return f, true
		}
	}
	return Field{}, false
}

// SecretFields lists the names of the type's secret fields.
func (t *Type) SecretFields() []string {
	var names []string
	for _, f := range t.Fields {
		if f.Secret {
			names = append(names, f.Name)
		}
	}
	return names
}

// IsStatic reports whether the token is rendered from stored fields alone.
func (t *Type) IsStatic() bool { return t.token != nil }

// Token renders the ready-to-use token of a static credential from its full
// set of values (secret and not).
func (t *Type) Token(v Values) (Token, error) {
	if t.token == nil {
		return Token{}, fmt.Errorf("type %s has no static token", t.Name)
	}
	return t.token(v)
}

// CheckInput validates values supplied on a request, field by field: every
// name belongs to the type, and every value has its kind, length and allowed
// values. All problems are reported at once (errors.Join).
func (t *Type) CheckInput(v Values) error {
	var errs []error
	for _, name := range v.Names() {
		f, ok := t.Field(name)
		if !ok {
			errs = append(errs, fmt.Errorf("field %q does not apply to type %s", name, t.Name))
			continue
		}
		if err := f.check(v[name]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Check validates the full set of values of a credential: CheckInput, every
// required field present, and the type's own rules.
func (t *Type) Check(v Values) error {
	errs := []error{t.CheckInput(v)}
	for _, f := range t.Fields {
		if f.Required && v.isEmpty(f.Name) {
			errs = append(errs, fmt.Errorf("field %q is required for type %s", f.Name, t.Name))
		}
	}
	if t.validate != nil {
		errs = append(errs, t.validate(v))
	}
	return errors.Join(errs...)
}

// ApplyDefaults sets the default of every absent field that has one.
func (t *Type) ApplyDefaults(v Values) {
	for _, f := range t.Fields {
		if _, ok := v[f.Name]; !ok && f.Default != nil {
			v[f.Name] = f.Default
		}
	}
}

func (f Field) check(value any) error {
	switch f.Kind {
	case KindString, KindTime:
		s, ok := value.(string)
		if !ok {
			return fmt.Errorf("field %q must be a string", f.Name)
		}
		return f.checkString(s)
	case KindStringList:
		list, ok := asStrings(value)
		if !ok {
			return fmt.Errorf("field %q must be a list of strings", f.Name)
		}
		if len(list) > MaxListItems {
			return fmt.Errorf("field %q has %d items; at most %d are allowed", f.Name, len(list), MaxListItems)
		}
		var errs []error
		for _, s := range list {
			errs = append(errs, f.checkString(s))
		}
		return errors.Join(errs...)
	case KindInt:
		if _, ok := asInt(value); !ok {
			return fmt.Errorf("field %q must be an integer", f.Name)
		}
	case KindBool:
		if _, ok := value.(bool); !ok {
			return fmt.Errorf("field %q must be a boolean", f.Name)
		}
	}
	return nil
}

func (f Field) checkString(s string) error {
	if len(s) > f.maxLength() {
		return fmt.Errorf("field %q is %d bytes long; at most %d are allowed", f.Name, len(s), f.maxLength())
	}
	if strings.Contains(s, "\x00") || !f.Multiline && strings.ContainsAny(s, "\r\n") {
		return fmt.Errorf("field %q must not contain NUL or line breaks", f.Name)
	}
	if len(f.Allowed) > 0 && !slices.Contains(f.Allowed, s) {
		return fmt.Errorf("field %q must be one of %s", f.Name, strings.Join(f.Allowed, ", "))
	}
	if f.URL && s != "" {
		if err := checkURL(s); err != nil {
			return fmt.Errorf("field %q: %w", f.Name, err)
		}
	}
	if f.Kind == KindTime && s != "" {
		if _, err := time.Parse(time.RFC3339, s); err != nil {
			return fmt.Errorf("field %q must be an RFC 3339 time", f.Name)
		}
	}
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return errors.New("must be an http or https URL")
	}
	if u.Host == "" {
		return errors.New("must be an absolute URL with a host")
	}
	if u.User != nil {
		return errors.New("must not carry user information")
	}
	return nil
}

var registry = map[string]*Type{}

func register(t *Type) *Type {
	registry[t.Name] = t
	return t
}

// Lookup returns the type with the given name.
func Lookup(name string) (*Type, bool) {
	t, ok := registry[name]
	return t, ok
}

// Names lists the supported type names, sorted.
func Names() []string {
	names := make([]string, 0, len(registry))
	for name := range registry {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// AllFields returns one Field per distinct field name across all types, for
// building the request schema of paths that accept any type. Where types
// share a name, the first type's description wins and Secret is true if any
// type marks it secret.
func AllFields() []Field {
	seen := map[string]int{}
	var all []Field
	for _, name := range Names() {
		for _, f := range registry[name].Fields {
			if i, ok := seen[f.Name]; ok {
				all[i].Secret = all[i].Secret || f.Secret
				continue
			}
			seen[f.Name] = len(all)
			all = append(all, f)
		}
	}
	return all
}
