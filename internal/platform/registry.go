package platform

import (
	"fmt"
	"strconv"
	"strings"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Field is one platform field: what a build target measures
// (kilnv1.SystemInfo), what a request may pin (kilnv1.PlatformConstraints),
// and what the rest of Kiln does with it. [Registry] lists them, and every
// list of platform fields in Kiln is derived from it.
//
// Adding a field costs one entry in Registry, plus its proto fields: in
// PlatformConstraints and SystemInfo, and in ListBuildsRequest when
// Filterable, each named Name. Then startcompile offers its flag, requests
// validate and match it, /builds, ListBuilds and the store filter by it, the
// metrics count targets by it, and it enters the cache key if IdentityOrder
// says so.
type Field struct {
	// Name is the field's name in snake_case ("data_model"): the name of its
	// proto fields, of its /builds query parameter and of its metrics label.
	Name string
	// Flag is how startcompile's command line spells it: FlagName(Name)
	// ("data-model"), but "char" for char_signed (`--char unsigned`); ""
	// when startcompile offers no flag for it.
	Flag string
	// Constraint returns the value c pins, "" when the field is free; c may
	// be nil.
	Constraint func(c *kilnv1.PlatformConstraints) string
	// Measured returns info's measured value in the spelling Constraint
	// uses, "" when it was not measured; info may be nil.
	Measured func(info *kilnv1.SystemInfo) string
	// Filterable fields are the coarse ones people tell platforms apart by:
	// builds are listed by them (ListBuildsRequest, /builds,
	// store.BuildFilter) and connected targets counted by them (the
	// kiln_connected_targets labels). Each needs a string field Name in
	// ListBuildsRequest.
	Filterable bool
	// DefaultPinned fields are pinned by startcompile to the local
	// machine's measured values unless the user sets or frees them, and
	// their combinations are the platforms `startcompile check` builds on.
	DefaultPinned bool
	// CPU fields describe one CPU together: setting one of them on
	// startcompile's command line stops the others from being pinned to
	// the local machine by default (arch implies endianness and data model).
	CPU bool
	// IdentityOrder is the field's place in IdentityKey, counting from 1;
	// 0 leaves the field out of a target's identity. The key is hashed
	// into cache keys: never renumber, append.
	IdentityOrder int

	// set stores a canonical value into c.
	set func(c *kilnv1.PlatformConstraints, v string)
	// canonical checks and canonicalizes v, which is trimmed and "" for
	// Any; value is the input as given, for the error.
	canonical func(name, value, v string) (string, error)
}

// Registry is every platform field, in canonical order: the order of
// [Fields], of Unmet, DescribeConstraints and of startcompile's flags. Do
// not modify it.
var Registry = []Field{
	{Name: "os", Flag: "os", Filterable: true, DefaultPinned: true, IdentityOrder: 1,
		Constraint: (*kilnv1.PlatformConstraints).GetOs, Measured: (*kilnv1.SystemInfo).GetOs,
		set: func(c *kilnv1.PlatformConstraints, v string) { c.Os = v }, canonical: nameToken},
	{Name: "arch", Flag: "arch", Filterable: true, DefaultPinned: true, CPU: true, IdentityOrder: 2,
		Constraint: (*kilnv1.PlatformConstraints).GetArch, Measured: (*kilnv1.SystemInfo).GetArch,
		set: func(c *kilnv1.PlatformConstraints, v string) { c.Arch = v }, canonical: canonicalArch},
	{Name: "endian", Flag: "endian", Filterable: true, DefaultPinned: true, CPU: true, IdentityOrder: 3,
		Constraint: (*kilnv1.PlatformConstraints).GetEndian, Measured: (*kilnv1.SystemInfo).GetEndian,
		set: func(c *kilnv1.PlatformConstraints, v string) { c.Endian = v }, canonical: canonicalEndian},
	{Name: "data_model", Flag: "data-model", Filterable: true, DefaultPinned: true, CPU: true, IdentityOrder: 4,
		Constraint: (*kilnv1.PlatformConstraints).GetDataModel, Measured: (*kilnv1.SystemInfo).GetDataModel,
		set: func(c *kilnv1.PlatformConstraints, v string) { c.DataModel = v }, canonical: canonicalDataModel},
	{Name: "libc", Flag: "libc", Filterable: true, DefaultPinned: true, IdentityOrder: 6,
		Constraint: (*kilnv1.PlatformConstraints).GetLibc, Measured: (*kilnv1.SystemInfo).GetLibc,
		set: func(c *kilnv1.PlatformConstraints, v string) { c.Libc = v }, canonical: nameToken},
	{Name: "libc_version", Flag: "libc-version", IdentityOrder: 7,
		Constraint: (*kilnv1.PlatformConstraints).GetLibcVersion, Measured: (*kilnv1.SystemInfo).GetLibcVersion,
		set: func(c *kilnv1.PlatformConstraints, v string) { c.LibcVersion = v }, canonical: versionToken},
	{Name: "compiler", Flag: "compiler", IdentityOrder: 8,
		Constraint: (*kilnv1.PlatformConstraints).GetCompiler, Measured: (*kilnv1.SystemInfo).GetCompiler,
		set: func(c *kilnv1.PlatformConstraints, v string) { c.Compiler = v }, canonical: nameToken},
	{Name: "compiler_version", Flag: "compiler-version", IdentityOrder: 9,
		Constraint: (*kilnv1.PlatformConstraints).GetCompilerVersion, Measured: (*kilnv1.SystemInfo).GetCompilerVersion,
		set: func(c *kilnv1.PlatformConstraints, v string) { c.CompilerVersion = v }, canonical: versionToken},
	// char_bit is pinned with `startcompile check --platform char_bit=16`,
	// not by a flag of its own.
	{Name: "char_bit", IdentityOrder: 5,
		Constraint: func(c *kilnv1.PlatformConstraints) string { return decimal(c.GetCharBit()) },
		Measured:   func(i *kilnv1.SystemInfo) string { return decimal(i.GetCharBit()) },
		set: func(c *kilnv1.PlatformConstraints, v string) {
			n, _ := strconv.ParseUint(v, 10, 32)
			c.CharBit = uint32(n)
		},
		canonical: canonicalCharBit},
	// The fields below were added in the second version of the identity
	// (IdentityOrder 10 on): see IdentityKey for how a system that has not
	// measured them keeps its key. They describe the CPU's C ABI, so
	// pinning one frees the CPU fields startcompile would otherwise pin to
	// the local machine (`--char unsigned` reaches arm, powerpc, s390x).
	// Whether plain char is signed: "signed" or "unsigned" (--char).
	{Name: "char_signed", Flag: "char", CPU: true, IdentityOrder: 10,
		Constraint: func(c *kilnv1.PlatformConstraints) string {
			if c == nil {
				return ""
			}
			return signedness(c.CharSigned)
		},
		Measured: func(i *kilnv1.SystemInfo) string {
			if i == nil {
				return ""
			}
			return signedness(i.CharSigned)
		},
		set: func(c *kilnv1.PlatformConstraints, v string) {
			c.CharSigned = nil
			if v != "" {
				b := v == "signed"
				c.CharSigned = &b
			}
		},
		canonical: canonicalSignedness},
	// Alignments and sizes in bytes as the ABI lays them out: a struct
	// layout changes with each of them (-malign-double, -mlong-double-64,
	// -fshort-wchar), so they enter the identity. size_t follows from the
	// data model and page_size is the machine's, not the ABI's: they stay
	// out of it.
	countField("align_long_long", identityOrder(11), (*kilnv1.PlatformConstraints).GetAlignLongLong, (*kilnv1.SystemInfo).GetAlignLongLong,
		func(c *kilnv1.PlatformConstraints, n uint32) { c.AlignLongLong = n }, 1, 64),
	countField("align_double", identityOrder(12), (*kilnv1.PlatformConstraints).GetAlignDouble, (*kilnv1.SystemInfo).GetAlignDouble,
		func(c *kilnv1.PlatformConstraints, n uint32) { c.AlignDouble = n }, 1, 64),
	countField("align_pointer", identityOrder(13), (*kilnv1.PlatformConstraints).GetAlignPointer, (*kilnv1.SystemInfo).GetAlignPointer,
		func(c *kilnv1.PlatformConstraints, n uint32) { c.AlignPointer = n }, 1, 64),
	countField("sizeof_long_double", identityOrder(14), (*kilnv1.PlatformConstraints).GetSizeofLongDouble, (*kilnv1.SystemInfo).GetSizeofLongDouble,
		func(c *kilnv1.PlatformConstraints, n uint32) { c.SizeofLongDouble = n }, 4, 64),
	countField("sizeof_size_t", 0, (*kilnv1.PlatformConstraints).GetSizeofSizeT, (*kilnv1.SystemInfo).GetSizeofSizeT,
		func(c *kilnv1.PlatformConstraints, n uint32) { c.SizeofSizeT = n }, 1, 64),
	countField("sizeof_wchar_t", identityOrder(15), (*kilnv1.PlatformConstraints).GetSizeofWcharT, (*kilnv1.SystemInfo).GetSizeofWcharT,
		func(c *kilnv1.PlatformConstraints, n uint32) { c.SizeofWcharT = n }, 1, 64),
	countField("page_size", 0, (*kilnv1.PlatformConstraints).GetPageSize, (*kilnv1.SystemInfo).GetPageSize,
		func(c *kilnv1.PlatformConstraints, n uint32) { c.PageSize = n }, 512, 1<<30),
}

// identityOrder is a Field's IdentityOrder, named at countField's call.
type identityOrder int

// countField is a field holding a count of bytes, 0 when unset or not
// measured, spelled in decimal, between lo and hi when set; its flag is
// FlagName(name), and it is one of the CPU fields.
func countField(name string, order identityOrder, get func(*kilnv1.PlatformConstraints) uint32, measured func(*kilnv1.SystemInfo) uint32,
	put func(*kilnv1.PlatformConstraints, uint32), lo, hi uint64) Field {
	return Field{Name: name, Flag: FlagName(name), CPU: true, IdentityOrder: int(order),
		Constraint: func(c *kilnv1.PlatformConstraints) string { return decimal(get(c)) },
		Measured:   func(i *kilnv1.SystemInfo) string { return decimal(measured(i)) },
		set: func(c *kilnv1.PlatformConstraints, v string) {
			n, _ := strconv.ParseUint(v, 10, 32)
			put(c, uint32(n))
		},
		canonical: func(field, value, v string) (string, error) {
			if v == "" {
				return "", nil
			}
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n != 0 && (n < lo || n > hi) {
				return "", badValue(field, value, fmt.Sprintf("a decimal number of bytes from %d to %d, or any", lo, hi))
			}
			return decimal(uint32(n)), nil
		}}
}

// signedness spells a measured or pinned char signedness: "signed",
// "unsigned", or "" when absent.
func signedness(b *bool) string {
	switch {
	case b == nil:
		return ""
	case *b:
		return "signed"
	}
	return "unsigned"
}

func canonicalSignedness(name, value, v string) (string, error) {
	switch v = strings.ToLower(v); v {
	case "", "signed", "unsigned":
		return v, nil
	}
	return "", badValue(name, value, "signed, unsigned or any")
}

// Lists derived from Registry, in Registry order (IdentityFields in
// IdentityOrder). Do not modify them.
var (
	// Fields lists every field name: the constraint fields.
	Fields = names(func(f Field) bool { return true })
	// FilterFields lists the Filterable fields.
	FilterFields = names(func(f Field) bool { return f.Filterable })
	// DefaultPinnedFields lists the DefaultPinned fields.
	DefaultPinnedFields = names(func(f Field) bool { return f.DefaultPinned })
	// IdentityFields are the SystemInfo fields that make up a target's
	// identity, in the order IdentityKey encodes them.
	IdentityFields = identityFields()
)

// byName indexes Registry.
var byName = func() map[string]*Field {
	m := make(map[string]*Field, len(Registry))
	for i := range Registry {
		m[Registry[i].Name] = &Registry[i]
	}
	return m
}()

// Lookup returns the field called name.
func Lookup(name string) (Field, bool) {
	f, ok := byName[name]
	if !ok {
		return Field{}, false
	}
	return *f, true
}

func names(keep func(Field) bool) []string {
	var out []string
	for _, f := range Registry {
		if keep(f) {
			out = append(out, f.Name)
		}
	}
	return out
}

func identityFields() []string {
	var out []string
	for n := 1; n <= len(Registry); n++ {
		for _, f := range Registry {
			if f.IdentityOrder == n {
				out = append(out, f.Name)
			}
		}
	}
	return out
}

// decimal spells a count as Get and Value do: "" for 0 (unset).
func decimal(n uint32) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(n), 10)
}

func nameToken(name, _, v string) (string, error) {
	return canonicalToken(name, v, "a lower-case name like linux, glibc or gcc, or any")
}

func versionToken(name, _, v string) (string, error) {
	return canonicalToken(name, v, "a version like 2.36 or 12.2.0, or any")
}

func canonicalArch(name, _, v string) (string, error) {
	if v == "" {
		return "", nil
	}
	return canonicalToken(name, CanonicalArch(v), "an architecture like x86_64, i686, aarch64, armv7, s390x, ppc, ppc64, ppc64le, riscv64, or any")
}

func canonicalEndian(name, value, v string) (string, error) {
	switch v = strings.ToLower(v); v {
	case "", "little", "big":
		return v, nil
	}
	return "", badValue(name, value, "little, big or any")
}

func canonicalDataModel(name, value, v string) (string, error) {
	v = strings.ToUpper(v)
	if v == "" {
		return "", nil
	}
	for _, m := range DataModels {
		if v == m {
			return v, nil
		}
	}
	return "", badValue(name, value, strings.Join(DataModels, ", ")+" or any")
}

func canonicalCharBit(name, value, v string) (string, error) {
	if v == "" {
		return "", nil
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || (n != 0 && (n < 8 || n > 64)) {
		return "", badValue(name, value, "a decimal number of bits from 8 to 64, or any")
	}
	return decimal(uint32(n)), nil
}
