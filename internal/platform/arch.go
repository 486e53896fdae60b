package platform

import "strings"

// archAliases maps uname -m, GOARCH, GNU triple and distribution spellings to
// Kiln's canonical architecture names. Canonical names map to themselves.
var archAliases = map[string]string{
	"x86_64": "x86_64", "amd64": "x86_64", "x86-64": "x86_64", "x64": "x86_64",
	"i686": "i686", "i586": "i686", "i486": "i686", "i386": "i686", "386": "i686", "x86": "i686", "ia32": "i686",
	"aarch64": "aarch64", "arm64": "aarch64",
	"aarch64_be": "aarch64_be", "arm64be": "aarch64_be",
	"armv7": "armv7", "arm": "armv7", "armv7l": "armv7", "armv7a": "armv7", "armv7hl": "armv7", "armhf": "armv7", "armv8l": "armv7",
	"armv6": "armv6", "armv6l": "armv6", "armv6hl": "armv6",
	"armv5": "armv5", "armv5tel": "armv5", "armv5te": "armv5", "armel": "armv5",
	"s390x": "s390x", "s390": "s390",
	"ppc": "ppc", "powerpc": "ppc",
	"ppc64": "ppc64", "powerpc64": "ppc64",
	"ppc64le": "ppc64le", "powerpc64le": "ppc64le", "ppc64el": "ppc64le",
	"riscv64": "riscv64", "riscv32": "riscv32",
	"mips": "mips", "mipsel": "mipsel", "mipsle": "mipsel",
	"mips64": "mips64", "mips64el": "mips64el", "mips64le": "mips64el",
	"loongarch64": "loongarch64", "loong64": "loongarch64",
	"sparc64": "sparc64", "sparcv9": "sparc64", "sparc": "sparc",
	"m68k": "m68k", "alpha": "alpha", "hppa": "hppa", "sh4": "sh4", "ia64": "ia64",
	"wasm": "wasm32", "wasm32": "wasm32",
}

// CanonicalArch maps an architecture spelling from uname -m, GOARCH, a GNU
// triple (its first component, e.g. "powerpc64le-linux-gnu") or a
// distribution (armhf) to Kiln's canonical name:
//
//	x86_64   amd64, x86-64, x64
//	i686     i386, i486, i586, 386, x86
//	aarch64  arm64
//	armv7    arm, armv7l, armhf, armv8l (32-bit ARM, version 7 or later)
//	ppc      powerpc
//	ppc64    powerpc64
//	ppc64le  powerpc64le, ppc64el
//	mipsel   mipsle; mips64el: mips64le; loongarch64: loong64
//
// s390x, riscv64, mips, mips64 and the other canonical names map to
// themselves. Matching is case-insensitive and ignores surrounding space; an
// unknown spelling is returned lower-cased.
func CanonicalArch(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if c, ok := archAliases[s]; ok {
		return c
	}
	if i := strings.IndexByte(s, '-'); i > 0 {
		if c, ok := archAliases[s[:i]]; ok {
			return c
		}
	}
	return s
}

// DataModel names the C data model of the measured type sizes in bytes:
//
//	ILP32  int=4 long=4 pointer=4
//	LP64   int=4 long=8 pointer=8
//	LLP64  int=4 long=4 pointer=8 long long=8
//	ILP64  int=8 long=8 pointer=8
//	LP32   int=2 long=4 pointer=4
//
// It returns "" for any other combination. short does not decide the model
// (it is 2 in all five) and is accepted for the call's symmetry with the
// measurement.
func DataModel(short, int_, long, longLong, pointer uint32) string {
	_ = short
	switch {
	case int_ == 4 && long == 4 && pointer == 4:
		return "ILP32"
	case int_ == 4 && long == 8 && pointer == 8:
		return "LP64"
	case int_ == 4 && long == 4 && pointer == 8 && longLong == 8:
		return "LLP64"
	case int_ == 8 && long == 8 && pointer == 8:
		return "ILP64"
	case int_ == 2 && long == 4 && pointer == 4:
		return "LP32"
	}
	return ""
}
