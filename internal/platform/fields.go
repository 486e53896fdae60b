package platform

import (
	"errors"
	"fmt"
	"strings"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// DataModels lists the data models Kiln knows, as DataModel returns them.
var DataModels = []string{"ILP32", "LP64", "LLP64", "ILP64", "LP32"}

// Any is the value that frees a constraint field, as does the empty string.
const Any = "any"

// maxValueLen bounds a constraint value; real values are a few bytes long.
const maxValueLen = 64

// ErrUnknownField is wrapped by a *FieldError whose field is not in Fields.
var ErrUnknownField = errors.New("platform: unknown constraint field")

// ErrBadValue is wrapped by a *FieldError whose value is not allowed for its
// field.
var ErrBadValue = errors.New("platform: bad constraint value")

// FieldError reports a constraint that cannot be set. It unwraps to
// ErrUnknownField or ErrBadValue; Field and Allowed are meant for status
// details and user messages.
type FieldError struct {
	Field   string // the field name as given
	Value   string // the rejected value
	Allowed string // human description of the allowed values
	err     error  // ErrUnknownField or ErrBadValue
}

// Error names the field, the value and what would have been allowed.
func (e *FieldError) Error() string {
	if errors.Is(e.err, ErrUnknownField) {
		return fmt.Sprintf("unknown platform field %q (allowed: %s)", e.Field, e.Allowed)
	}
	return fmt.Sprintf("bad value %q for platform field %s (allowed: %s)", e.Value, e.Field, e.Allowed)
}

// Unwrap returns ErrUnknownField or ErrBadValue.
func (e *FieldError) Unwrap() error { return e.err }

// FlagName returns the command-line spelling of field: underscores become
// dashes ("data_model" -> "data-model").
func FlagName(field string) string { return strings.ReplaceAll(field, "_", "-") }

// FieldName maps a command-line spelling back to the field name
// ("data-model" -> "data_model"). It does not check that the field exists.
func FieldName(flag string) string { return strings.ReplaceAll(strings.ToLower(flag), "-", "_") }

// Get returns the value c pins for field, or "" when the field is free, the
// field is unknown or c is nil. char_bit is returned in decimal.
func Get(c *kilnv1.PlatformConstraints, field string) string {
	if f, ok := byName[field]; ok {
		return f.Constraint(c)
	}
	return ""
}

// Value returns the measured value of field in info, in the same spelling Get
// uses, or "" when info is nil, the field is unknown or not measured.
func Value(info *kilnv1.SystemInfo, field string) string {
	if f, ok := byName[field]; ok {
		return f.Measured(info)
	}
	return ""
}

// Set validates value for field, canonicalizes it and stores it in c. "any"
// (in any case) and "" free the field. On error c is unchanged and the error
// is a *FieldError naming the field and the allowed values. c must not be nil.
func Set(c *kilnv1.PlatformConstraints, field, value string) error {
	v, err := Canonical(field, value)
	if err != nil {
		return err
	}
	put(c, field, v)
	return nil
}

// Canonical returns the canonical spelling of value for field, "" for a free
// field, or a *FieldError. It is Set without the store.
func Canonical(field, value string) (string, error) {
	v := strings.TrimSpace(value)
	if strings.EqualFold(v, Any) {
		v = ""
	}
	if f, ok := byName[field]; ok {
		return f.canonical(field, value, v)
	}
	return "", &FieldError{Field: field, Value: value, Allowed: strings.Join(Fields, ", "), err: ErrUnknownField}
}

// canonicalToken lower-cases v and checks it is a plain token: letters,
// digits and . _ + - starting with a letter or digit.
func canonicalToken(field, v, allowed string) (string, error) {
	v = strings.ToLower(v)
	if v == "" {
		return "", nil
	}
	if len(v) > maxValueLen {
		return "", badValue(field, v, allowed)
	}
	for i := 0; i < len(v); i++ {
		b := v[i]
		switch {
		case b >= 'a' && b <= 'z', b >= '0' && b <= '9':
		case i > 0 && (b == '.' || b == '_' || b == '+' || b == '-'):
		default:
			return "", badValue(field, v, allowed)
		}
	}
	return v, nil
}

func badValue(field, value, allowed string) error {
	return &FieldError{Field: field, Value: value, Allowed: allowed, err: ErrBadValue}
}

// put stores an already canonical value; unknown fields are ignored.
func put(c *kilnv1.PlatformConstraints, field, v string) {
	if f, ok := byName[field]; ok {
		f.set(c, v)
	}
}
