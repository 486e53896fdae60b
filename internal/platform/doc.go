// Package platform is Kiln's vocabulary for "what a build target is" and
// "what a request asks for": it canonicalizes and validates platform
// constraints, decides whether a measured system satisfies them, and encodes a
// system's identity for cache keys.
//
// The package is pure logic with no I/O; all four programs use it. Measuring a
// machine is package sysinfo's job.
//
// # Fields
//
// [Registry] is the one list of platform fields: their names, flags,
// getters, and whether they filter build lists, are pinned by default or
// enter the identity. Every other list ([Fields], [IdentityFields],
// [FilterFields], [DefaultPinnedFields]) and every package that iterates
// platform fields derives from it, so adding a field is one entry there
// (plus its proto fields).
//
// A constraint pins some of the fields listed in [Fields] to exact values; an
// empty field is free ("any"). A [kilnv1.SystemInfo] satisfies constraints when
// every pinned field equals its measured value ([Satisfies], [Unmet]).
// Comparisons are exact string equality on canonical spellings, so constraints
// arriving from outside must first go through [Set], [Clean] or [Normalize],
// and measured values must be produced in canonical form (package sysinfo
// does this with [CanonicalArch] and [DataModel]).
//
// Canonical spellings:
//
//	os                lower case, e.g. "linux"
//	arch              see CanonicalArch: x86_64, i686, aarch64, armv7, s390x, ppc, ppc64, ppc64le, riscv64, ...
//	endian            "little" or "big"
//	data_model        ILP32, LP64, LLP64, ILP64 or LP32 (upper case)
//	libc, compiler    lower case, e.g. "glibc", "musl", "gcc", "clang"
//	*_version         lower case, e.g. "2.36", "12.2.0"
//	char_bit          decimal, e.g. "8"
//	char_signed       "signed" or "unsigned" (an optional bool in the protos)
//	align_*, sizeof_long_double, sizeof_size_t, sizeof_wchar_t, page_size
//	                  decimal bytes, e.g. "4"
//
// # Identity
//
// [IdentityKey] is the canonical byte encoding of a system's identity fields
// (the fields above but sizeof_size_t and page_size; never tools, cpus,
// memory, labels or emulation). Two
// targets with equal identity keys produce interchangeable binaries, which is
// what the artifact cache relies on.
package platform
