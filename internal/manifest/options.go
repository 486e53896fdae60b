package manifest

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// OptionType is the type of a compile option.
type OptionType string

// The option types. Canonical spellings: a string is itself; a bool is
// "true" or "false" (accepted: true/false, yes/no, on/off, 1/0, in any
// case); an int is decimal without sign "+" or leading zeros (accepted:
// what strconv.ParseInt takes in base 10, so "007" and "+7" give "7"); a
// choice is one of the declared choices, exactly.
const (
	OptionString OptionType = "string"
	OptionBool   OptionType = "bool"
	OptionInt    OptionType = "int"
	OptionChoice OptionType = "choice"
)

// Option is one declared compile option.
type Option struct {
	// Name matches ^[a-z][a-z0-9_]{0,31}$.
	Name string
	Type OptionType
	// Default is the value when a request does not give one, in canonical
	// spelling.
	Default string
	// Choices are the allowed values of a choice option, in the order
	// declared; nil for other types.
	Choices []string
	// Description is free text for people.
	Description string
}

var optionNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// Canonical returns value in the option's canonical spelling, or the reason
// it is not a valid value.
func (o Option) Canonical(value string) (string, error) {
	if len(value) > MaxOptionValueLen {
		return "", fmt.Errorf("value longer than %d bytes", MaxOptionValueLen)
	}
	switch o.Type {
	case OptionBool:
		switch strings.ToLower(value) {
		case "true", "yes", "on", "1":
			return "true", nil
		case "false", "no", "off", "0":
			return "false", nil
		}
		return "", errors.New("not a boolean (true/false, yes/no, on/off, 1/0)")
	case OptionInt:
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return "", errors.New("integer out of the 64-bit range")
			}
			return "", errors.New("not a decimal integer")
		}
		return strconv.FormatInt(n, 10), nil
	case OptionChoice:
		if slices.Contains(o.Choices, value) {
			return value, nil
		}
		return "", fmt.Errorf("not one of %s", strings.Join(quoteAll(o.Choices), ", "))
	case OptionString:
		if err := checkText(value); err != nil {
			return "", err
		}
		return value, nil
	}
	return "", fmt.Errorf("option has unknown type %q", o.Type)
}

// checkText accepts valid UTF-8 without control characters (tab included):
// values end up in environment variables, cache keys, mail and web pages.
func checkText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return errors.New("contains a control character")
		}
	}
	return nil
}

func quoteAll(ss []string) []string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return q
}

// Normalize validates a request's options against the manifest and returns
// a new map holding every declared option: the given value in canonical
// spelling, or the default. Requests that differ only in option order,
// spelling ("yes" for "true", "007" for "7") or in spelling out a default
// normalize to equal maps. An unknown option, a value invalid for its type,
// more than MaxOptions options, a name longer than MaxOptionNameLen or a
// value longer than MaxOptionValueLen fail with an *[OptionError]; with
// several problems, the one of the alphabetically first option is reported.
// The default recipe declares no options, so it refuses any. opts is not
// modified; a nil opts is fine.
func (m *Manifest) Normalize(opts map[string]string) (map[string]string, error) {
	if len(opts) > MaxOptions {
		return nil, &OptionError{Reason: fmt.Sprintf("%d options given, at most %d allowed", len(opts), MaxOptions)}
	}
	out := make(map[string]string, len(m.Options))
	for _, name := range slices.Sorted(maps.Keys(opts)) {
		value := opts[name]
		if len(name) > MaxOptionNameLen {
			return nil, &OptionError{Option: name, Value: value, Reason: fmt.Sprintf("name longer than %d bytes", MaxOptionNameLen)}
		}
		if len(value) > MaxOptionValueLen {
			return nil, &OptionError{Option: name, Value: value, Reason: fmt.Sprintf("value longer than %d bytes", MaxOptionValueLen)}
		}
		o, ok := m.Option(name)
		if !ok {
			return nil, &OptionError{Option: name, Value: value, Reason: m.unknownReason()}
		}
		canon, err := o.Canonical(value)
		if err != nil {
			return nil, &OptionError{Option: name, Value: value, Reason: err.Error()}
		}
		out[name] = canon
	}
	for _, o := range m.Options {
		if _, ok := out[o.Name]; !ok {
			out[o.Name] = o.Default
		}
	}
	return out, nil
}

// unknownReason says what options exist, to help the requester.
func (m *Manifest) unknownReason() string {
	switch {
	case m.Default:
		return "unknown option: the project has no kiln.yaml, so it takes no options"
	case len(m.Options) == 0:
		return "unknown option: the project's kiln.yaml declares no options"
	}
	names := make([]string, len(m.Options))
	for i, o := range m.Options {
		names[i] = o.Name
	}
	return "unknown option (declared: " + strings.Join(names, ", ") + ")"
}
