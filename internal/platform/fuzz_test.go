package platform

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// FuzzSet checks that constraint parsing never panics, that a refused value
// leaves the constraints alone with a typed error, and that an accepted value
// is canonical: setting it again changes nothing, and it validates.
func FuzzSet(f *testing.F) {
	for _, s := range [][2]string{
		{"arch", "amd64"}, {"arch", "powerpc64le-linux-gnu"}, {"endian", "BIG"},
		{"data_model", "lp64"}, {"char_bit", "08"}, {"char_bit", "4294967296"},
		{"libc", "any"}, {"compiler_version", "12.2.0"}, {"os", ""}, {"kernel", "6"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, field, value string) {
		c := &kilnv1.PlatformConstraints{}
		err := Set(c, field, value)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || !(errors.Is(err, ErrBadValue) || errors.Is(err, ErrUnknownField)) {
				t.Fatalf("untyped error %v", err)
			}
			if !proto.Equal(c, &kilnv1.PlatformConstraints{}) {
				t.Fatalf("refused Set changed constraints: %v", c)
			}
			return
		}
		got := Get(c, field)
		again := &kilnv1.PlatformConstraints{}
		if err := Set(again, field, got); err != nil {
			t.Fatalf("canonical %q refused: %v", got, err)
		}
		if !proto.Equal(c, again) {
			t.Fatalf("Set not idempotent: %v then %v", c, again)
		}
		if err := Validate(c); err != nil {
			t.Fatalf("Validate after Set: %v", err)
		}
		if !proto.Equal(Clean(c), c) {
			t.Fatalf("Clean changed canonical constraints %v", c)
		}
	})
}
