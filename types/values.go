package types

import (
	"encoding/json"
	"maps"
	"math"
	"slices"
	"time"
)

// Values holds a credential's field values by field name. Strings are
// string, lists []string, integers int, booleans bool and times RFC 3339
// strings. Values decoded from JSON storage may hold []any and float64;
// the accessors accept both.
type Values map[string]any

// Names lists the field names present, sorted.
func (v Values) Names() []string {
	return slices.Sorted(maps.Keys(v))
}

// String returns a string field, or "" when absent.
func (v Values) String(name string) string {
	s, _ := v[name].(string)
	return s
}

// Strings returns a list field, or nil when absent.
func (v Values) Strings(name string) []string {
	list, _ := asStrings(v[name])
	return list
}

// Int returns an integer field, or 0 when absent.
func (v Values) Int(name string) int {
	n, _ := asInt(v[name])
	return n
}

// Bool returns a boolean field, or false when absent.
func (v Values) Bool(name string) bool {
	b, _ := v[name].(bool)
	return b
}

// Time returns a time field, or the zero time when absent or unparsable.
func (v Values) Time(name string) time.Time {
	t, _ := time.Parse(time.RFC3339, v.String(name))
	return t
}

// Split divides the values into the type's secret and non-secret fields.
func (v Values) Split(t *Type) (public, secret Values) {
	public, secret = Values{}, Values{}
	for name, value := range v {
		if f, ok := t.Field(name); ok && f.Secret {
			secret[name] = value
		} else {
			public[name] = value
		}
	}
	return public, secret
}

// Merge returns a copy of v with every value of over set on top.
func (v Values) Merge(over Values) Values {
	out := make(Values, len(v)+len(over))
	maps.Copy(out, v)
	maps.Copy(out, over)
	return out
}

func (v Values) isEmpty(name string) bool {
	switch value := v[name].(type) {
	case nil:
		return true
	case string:
		return value == ""
	case []string:
		return len(value) == 0
	case []any:
		return len(value) == 0
	}
	return false
}

func asStrings(value any) ([]string, bool) {
	switch list := value.(type) {
	case []string:
		return list, true
	case []any:
		out := make([]string, 0, len(list))
		for _, item := range list {
			s, ok := item.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

func asInt(value any) (int, bool) {
	switch n := value.(type) {
	case int:
		return n, true
	case int64:
		return int(n), true
	case float64:
		if n != math.Trunc(n) || math.Abs(n) > math.MaxInt32 {
			return 0, false
		}
		return int(n), true
	case json.Number: // Vault's storage decoding keeps numbers as json.Number
		i, err := n.Int64()
		if err != nil || i > math.MaxInt32 || i < math.MinInt32 {
			return 0, false
		}
		return int(i), true
	}
	return 0, false
}
