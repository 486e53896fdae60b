package platform

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Fields lists the constraint field names in their canonical order. Every
// function that reports or iterates fields (Unmet, DescribeConstraints,
// IdentityKey) uses this order. Command lines spell them with dashes
// (--data-model); see FlagName.
var Fields = []string{"os", "arch", "endian", "data_model", "libc", "libc_version", "compiler", "compiler_version", "char_bit"}

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
	if c == nil {
		return ""
	}
	switch field {
	case "os":
		return c.Os
	case "arch":
		return c.Arch
	case "endian":
		return c.Endian
	case "data_model":
		return c.DataModel
	case "libc":
		return c.Libc
	case "libc_version":
		return c.LibcVersion
	case "compiler":
		return c.Compiler
	case "compiler_version":
		return c.CompilerVersion
	case "char_bit":
		if c.CharBit == 0 {
			return ""
		}
		return strconv.FormatUint(uint64(c.CharBit), 10)
	}
	return ""
}

// Value returns the measured value of field in info, in the same spelling Get
// uses, or "" when info is nil, the field is unknown or not measured.
func Value(info *kilnv1.SystemInfo, field string) string {
	if info == nil {
		return ""
	}
	switch field {
	case "os":
		return info.Os
	case "arch":
		return info.Arch
	case "endian":
		return info.Endian
	case "data_model":
		return info.DataModel
	case "libc":
		return info.Libc
	case "libc_version":
		return info.LibcVersion
	case "compiler":
		return info.Compiler
	case "compiler_version":
		return info.CompilerVersion
	case "char_bit":
		if info.CharBit == 0 {
			return ""
		}
		return strconv.FormatUint(uint64(info.CharBit), 10)
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
	switch field {
	case "os", "libc", "compiler":
		return canonicalToken(field, v, "a lower-case name like linux, glibc or gcc, or any")
	case "libc_version", "compiler_version":
		return canonicalToken(field, v, "a version like 2.36 or 12.2.0, or any")
	case "arch":
		if v == "" {
			return "", nil
		}
		return canonicalToken(field, CanonicalArch(v), "an architecture like x86_64, i686, aarch64, armv7, s390x, ppc, ppc64, ppc64le, riscv64, or any")
	case "endian":
		switch v = strings.ToLower(v); v {
		case "", "little", "big":
			return v, nil
		}
		return "", badValue(field, value, "little, big or any")
	case "data_model":
		v = strings.ToUpper(v)
		if v == "" {
			return "", nil
		}
		for _, m := range DataModels {
			if v == m {
				return v, nil
			}
		}
		return "", badValue(field, value, strings.Join(DataModels, ", ")+" or any")
	case "char_bit":
		if v == "" {
			return "", nil
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || (n != 0 && (n < 8 || n > 64)) {
			return "", badValue(field, value, "a decimal number of bits from 8 to 64, or any")
		}
		if n == 0 {
			return "", nil
		}
		return strconv.FormatUint(n, 10), nil
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
	switch field {
	case "os":
		c.Os = v
	case "arch":
		c.Arch = v
	case "endian":
		c.Endian = v
	case "data_model":
		c.DataModel = v
	case "libc":
		c.Libc = v
	case "libc_version":
		c.LibcVersion = v
	case "compiler":
		c.Compiler = v
	case "compiler_version":
		c.CompilerVersion = v
	case "char_bit":
		n, _ := strconv.ParseUint(v, 10, 32)
		c.CharBit = uint32(n)
	}
}
