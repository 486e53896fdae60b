package platform

import (
	"errors"
	"strings"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Clean returns a new constraint set with every field of c canonicalized,
// for constraints that arrive over the wire. A field whose value is invalid
// keeps its trimmed, lower-cased spelling rather than being freed, so a bad
// constraint never widens a request; it then matches no measured system. Use
// Validate or Normalize to reject such input instead. Clean(nil) returns an
// empty (match-anything) constraint set. c is not modified.
func Clean(c *kilnv1.PlatformConstraints) *kilnv1.PlatformConstraints {
	out, _ := Normalize(c)
	return out
}

// Validate reports every field of c whose value Set would refuse, joined with
// errors.Join; each is a *FieldError. nil constraints are valid.
func Validate(c *kilnv1.PlatformConstraints) error {
	_, err := Normalize(c)
	return err
}

// Normalize is Clean and Validate in one pass: the cleaned copy and the
// joined *FieldError of the fields that were invalid (nil if none).
func Normalize(c *kilnv1.PlatformConstraints) (*kilnv1.PlatformConstraints, error) {
	out := &kilnv1.PlatformConstraints{}
	if c == nil {
		return out, nil
	}
	var errs []error
	for i := range Registry {
		f := &Registry[i]
		raw := f.Constraint(c)
		v, err := Canonical(f.Name, raw)
		if err != nil {
			// Kept as given (char_bit: the same number), never freed.
			errs = append(errs, err)
			v = strings.ToLower(strings.TrimSpace(raw))
		}
		f.set(out, v)
	}
	return out, errors.Join(errs...)
}
