package platform

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestSet(t *testing.T) {
	tests := []struct {
		name, field, value string
		want               string // Get after Set; ignored on error
		err                error
	}{
		{"an arch alias is canonicalized", "arch", "amd64", "x86_64", nil},
		{"a triple's arch is canonicalized", "arch", "powerpc64le-linux-gnu", "ppc64le", nil},
		{"arch is case-insensitive", "arch", "S390X", "s390x", nil},
		{"an unknown arch is kept lower-cased", "arch", "Xtensa", "xtensa", nil},
		{"an arch with a space is refused", "arch", "x86 64", "", ErrBadValue},
		{"endian is lower-cased", "endian", "BIG", "big", nil},
		{"a middle endian is refused", "endian", "middle", "", ErrBadValue},
		{"data model is upper-cased", "data_model", "lp64", "LP64", nil},
		{"an unknown data model is refused", "data_model", "LP128", "", ErrBadValue},
		{"char_bit takes decimal", "char_bit", "8", "8", nil},
		{"char_bit drops leading zeros", "char_bit", "016", "16", nil},
		{"char_bit refuses hex", "char_bit", "0x8", "", ErrBadValue},
		{"char_bit refuses fewer than 8 bits", "char_bit", "7", "", ErrBadValue},
		{"char_bit zero frees the field", "char_bit", "0", "", nil},
		{"any frees a field", "libc", "any", "", nil},
		{"ANY frees a field too", "os", "ANY", "", nil},
		{"empty frees a field", "compiler", "", "", nil},
		{"surrounding space is trimmed", "libc_version", " 2.36 ", "2.36", nil},
		{"a version with a plus is kept", "compiler_version", "12.2.0+deb1", "12.2.0+deb1", nil},
		{"a version starting with a dot is refused", "libc_version", ".36", "", ErrBadValue},
		{"a shell metacharacter is refused", "os", "linux;rm", "", ErrBadValue},
		{"an overlong value is refused", "compiler", strings.Repeat("g", 65), "", ErrBadValue},
		{"an unknown field is refused", "kernel", "6.1", "", ErrUnknownField},
		{"a dashed field name is refused (use FieldName)", "data-model", "LP64", "", ErrUnknownField},
		{"char signedness: unsigned", "char_signed", "Unsigned", "unsigned", nil},
		{"char signedness: signed", "char_signed", "signed", "signed", nil},
		{"char signedness: any frees it", "char_signed", "any", "", nil},
		{"char signedness: a boolean is refused", "char_signed", "true", "", ErrBadValue},
		{"an alignment in bytes", "align_double", "4", "4", nil},
		{"an alignment over 64 bytes is refused", "align_pointer", "128", "", ErrBadValue},
		{"a long double of 3 bytes is refused", "sizeof_long_double", "3", "", ErrBadValue},
		{"wchar_t of 2 bytes", "sizeof_wchar_t", "2", "2", nil},
		{"a page size", "page_size", "65536", "65536", nil},
		{"a page size under 512 bytes is refused", "page_size", "256", "", ErrBadValue},
		{"a size that is no number is refused", "sizeof_size_t", "eight", "", ErrBadValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &kilnv1.PlatformConstraints{Os: "plan9", Arch: "mips", Endian: "little", DataModel: "ILP32", Libc: "x", LibcVersion: "1", Compiler: "y", CompilerVersion: "2", CharBit: 9}
			before := proto.Clone(c)
			err := Set(c, tt.field, tt.value)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Set err = %v, want %v", err, tt.err)
				}
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tt.field || fe.Allowed == "" || !strings.Contains(err.Error(), tt.field) {
					t.Errorf("error %q does not name the field and allowed values", err)
				}
				if !proto.Equal(c, before) {
					t.Errorf("failed Set changed constraints to %v", c)
				}
				return
			}
			if err != nil {
				t.Fatalf("Set: %v", err)
			}
			if got := Get(c, tt.field); got != tt.want {
				t.Errorf("Get = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEveryFieldRoundTrips(t *testing.T) {
	info := s390x()
	for _, f := range Fields {
		c := &kilnv1.PlatformConstraints{}
		if err := Set(c, f, Value(info, f)); err != nil {
			t.Fatalf("Set(%s, %q): %v", f, Value(info, f), err)
		}
		if Get(c, f) != Value(info, f) || Get(c, f) == "" {
			t.Errorf("%s: Get = %q, Value = %q", f, Get(c, f), Value(info, f))
		}
	}
}

func TestFlagNames(t *testing.T) {
	for _, f := range Fields {
		if FieldName(FlagName(f)) != f {
			t.Errorf("%s does not round-trip through %s", f, FlagName(f))
		}
	}
	if FlagName("data_model") != "data-model" {
		t.Errorf("FlagName(data_model) = %q", FlagName("data_model"))
	}
}

func TestClean(t *testing.T) {
	tests := []struct {
		name    string
		in      *kilnv1.PlatformConstraints
		want    *kilnv1.PlatformConstraints
		invalid []string
	}{
		{"nil becomes empty", nil, &kilnv1.PlatformConstraints{}, nil},
		{"aliases and cases are canonicalized",
			&kilnv1.PlatformConstraints{Os: "Linux", Arch: "arm64", Endian: "Little", DataModel: "lp64", Libc: "any", CharBit: 8},
			&kilnv1.PlatformConstraints{Os: "linux", Arch: "aarch64", Endian: "little", DataModel: "LP64", CharBit: 8}, nil},
		{"invalid values are kept, never freed, and reported",
			&kilnv1.PlatformConstraints{Endian: "Middle", DataModel: "LP128", CharBit: 4, Os: "linux"},
			&kilnv1.PlatformConstraints{Endian: "middle", DataModel: "lp128", CharBit: 4, Os: "linux"},
			[]string{"endian", "data_model", "char_bit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Clean(tt.in)
			if !proto.Equal(got, tt.want) {
				t.Errorf("Clean = %v, want %v", got, tt.want)
			}
			err := Validate(tt.in)
			if (err != nil) != (len(tt.invalid) > 0) {
				t.Fatalf("Validate = %v, want errors for %v", err, tt.invalid)
			}
			for _, f := range tt.invalid {
				if !strings.Contains(err.Error(), f) || !errors.Is(err, ErrBadValue) {
					t.Errorf("Validate error %q does not report %s", err, f)
				}
			}
		})
	}
}

func TestCleanDoesNotModifyItsInput(t *testing.T) {
	in := &kilnv1.PlatformConstraints{Arch: "AMD64"}
	_ = Clean(in)
	if in.Arch != "AMD64" {
		t.Errorf("input changed to %q", in.Arch)
	}
}
