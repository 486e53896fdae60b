package sysinfo

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// probeOS reads the operating system from the compiler's macros.
func probeOS(_ context.Context, env *probeEnv, info *kilnv1.SystemInfo) error {
	info.Os = env.prog.values["os"]
	if info.Os == "" {
		return errors.New("compiler defines no known operating system macro")
	}
	return nil
}

// probeArch reads the architecture from the compiler's macros; a cross
// target whose compiler defines none falls back to its triple's arch.
func probeArch(_ context.Context, env *probeEnv, info *kilnv1.SystemInfo) error {
	arch := env.prog.values["arch"]
	if arch == "" && env.spec.Kind == KindCross {
		arch = tripleArch(env.spec.Triple)
	}
	if arch == "" {
		return errors.New("compiler defines no known architecture macro")
	}
	info.Arch = platform.CanonicalArch(arch)
	return nil
}

// probeSizes reads CHAR_BIT and the type sizes and derives the data model.
func probeSizes(_ context.Context, env *probeEnv, info *kilnv1.SystemInfo) error {
	v := env.prog.values
	fields := []struct {
		key string
		dst *uint32
	}{
		{"char_bit", &info.CharBit},
		{"sizeof_short", &info.SizeofShort},
		{"sizeof_int", &info.SizeofInt},
		{"sizeof_long", &info.SizeofLong},
		{"sizeof_long_long", &info.SizeofLongLong},
		{"sizeof_pointer", &info.SizeofPointer},
	}
	for _, f := range fields {
		n, err := strconv.ParseUint(v[f.key], 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("%s=%q is not a positive number", f.key, v[f.key])
		}
		*f.dst = uint32(n)
	}
	info.DataModel = platform.DataModel(info.SizeofShort, info.SizeofInt, info.SizeofLong, info.SizeofLongLong, info.SizeofPointer)
	if info.DataModel == "" {
		return fmt.Errorf("unknown data model: int=%d long=%d long long=%d pointer=%d",
			info.SizeofInt, info.SizeofLong, info.SizeofLongLong, info.SizeofPointer)
	}
	return nil
}

// probeABI reads what bites portable code beyond the data model: whether
// plain char is signed, the struct alignments of long long, double and
// pointers, the sizes of long double, size_t and wchar_t, and the page
// size the running program sees.
func probeABI(_ context.Context, env *probeEnv, info *kilnv1.SystemInfo) error {
	v := env.prog.values
	switch s := v["char_signed"]; s {
	case "0", "1":
		signed := s == "1"
		info.CharSigned = &signed
	default:
		return fmt.Errorf("char_signed=%q is neither 0 nor 1", s)
	}
	for _, f := range []struct {
		key string
		dst *uint32
	}{
		{"align_long_long", &info.AlignLongLong},
		{"align_double", &info.AlignDouble},
		{"align_pointer", &info.AlignPointer},
		{"sizeof_long_double", &info.SizeofLongDouble},
		{"sizeof_size_t", &info.SizeofSizeT},
		{"sizeof_wchar_t", &info.SizeofWcharT},
		{"page_size", &info.PageSize},
	} {
		n, err := strconv.ParseUint(v[f.key], 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("%s=%q is not a positive number", f.key, v[f.key])
		}
		*f.dst = uint32(n)
	}
	return nil
}

// probeEndian reads the byte order the running program observed.
func probeEndian(_ context.Context, env *probeEnv, info *kilnv1.SystemInfo) error {
	switch e := env.prog.values["endian"]; e {
	case "little", "big":
		info.Endian = e
		return nil
	default:
		return fmt.Errorf("byte order neither little nor big (%q)", e)
	}
}

// probeCompiler reads the compiler family and version from its macros.
// An unknown compiler leaves both empty.
func probeCompiler(_ context.Context, env *probeEnv, info *kilnv1.SystemInfo) error {
	info.Compiler = env.prog.values["compiler"]
	info.CompilerVersion = env.prog.values["compiler_version"]
	return nil
}

// probeEmulated marks cross targets and any target of a foreign arch.
func probeEmulated(_ context.Context, env *probeEnv, info *kilnv1.SystemInfo) error {
	info.Emulated = env.spec.Kind == KindCross || info.Arch != env.hostArch
	return nil
}
