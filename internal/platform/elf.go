package platform

import (
	"bytes"
	"debug/elf"
	"fmt"
	"strconv"
	"strings"
)

// ELFIdentity is what an ELF header says about the machine a file is for:
// its e_machine, class (32 or 64 bits) and byte order.
type ELFIdentity struct {
	Machine elf.Machine
	Class   elf.Class
	Data    elf.Data
}

// elfArches is the one mapping between Kiln's canonical architectures and
// ELF machines. Each row gives the class and byte order the architecture
// usually has, to name an identity ([ELFIdentity.String]); the class and
// byte order a target expects come from its measured data model and
// endianness ([ELFFor]).
var elfArches = []struct {
	arch    string
	machine elf.Machine
	class   elf.Class
	data    elf.Data
}{
	{"x86_64", elf.EM_X86_64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	{"i686", elf.EM_386, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"aarch64", elf.EM_AARCH64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	{"aarch64_be", elf.EM_AARCH64, elf.ELFCLASS64, elf.ELFDATA2MSB},
	{"armv7", elf.EM_ARM, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"armv6", elf.EM_ARM, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"armv5", elf.EM_ARM, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"s390x", elf.EM_S390, elf.ELFCLASS64, elf.ELFDATA2MSB},
	{"s390", elf.EM_S390, elf.ELFCLASS32, elf.ELFDATA2MSB},
	{"ppc", elf.EM_PPC, elf.ELFCLASS32, elf.ELFDATA2MSB},
	{"ppc64", elf.EM_PPC64, elf.ELFCLASS64, elf.ELFDATA2MSB},
	{"ppc64le", elf.EM_PPC64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	{"riscv64", elf.EM_RISCV, elf.ELFCLASS64, elf.ELFDATA2LSB},
	{"riscv32", elf.EM_RISCV, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"mips", elf.EM_MIPS, elf.ELFCLASS32, elf.ELFDATA2MSB},
	{"mipsel", elf.EM_MIPS, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"mips64", elf.EM_MIPS, elf.ELFCLASS64, elf.ELFDATA2MSB},
	{"mips64el", elf.EM_MIPS, elf.ELFCLASS64, elf.ELFDATA2LSB},
	{"loongarch64", elf.EM_LOONGARCH, elf.ELFCLASS64, elf.ELFDATA2LSB},
	{"sparc64", elf.EM_SPARCV9, elf.ELFCLASS64, elf.ELFDATA2MSB},
	{"sparc", elf.EM_SPARC, elf.ELFCLASS32, elf.ELFDATA2MSB},
	{"m68k", elf.EM_68K, elf.ELFCLASS32, elf.ELFDATA2MSB},
	{"hppa", elf.EM_PARISC, elf.ELFCLASS32, elf.ELFDATA2MSB},
	{"alpha", elf.EM_ALPHA, elf.ELFCLASS64, elf.ELFDATA2LSB},
	{"sh4", elf.EM_SH, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"ia64", elf.EM_IA_64, elf.ELFCLASS64, elf.ELFDATA2LSB},
}

// ELFFor returns the ELF identity of code for a platform measured as arch
// (any spelling CanonicalArch knows), endian ("big" or "little") and data
// model (ILP32 and LP32 are 32-bit ELF; LP64, LLP64 and ILP64 64-bit, so
// x86_64's x32 ABI, ILP32, is 32-bit EM_X86_64 as its files are). ok is
// false when any of the three is unknown: nothing can be checked then.
func ELFFor(arch, endian, dataModel string) (id ELFIdentity, ok bool) {
	arch = CanonicalArch(arch)
	for _, a := range elfArches {
		if a.arch == arch {
			id.Machine, ok = a.machine, true
			break
		}
	}
	switch dataModel {
	case "ILP32", "LP32":
		id.Class = elf.ELFCLASS32
	case "LP64", "LLP64", "ILP64":
		id.Class = elf.ELFCLASS64
	default:
		ok = false
	}
	switch endian {
	case "big":
		id.Data = elf.ELFDATA2MSB
	case "little":
		id.Data = elf.ELFDATA2LSB
	default:
		ok = false
	}
	return id, ok
}

// String names the identity for people: the canonical architecture it
// usually is, with its class and byte order ("s390x (64-bit big-endian)",
// "x86_64 (64-bit little-endian)"); an unknown machine by its ELF name.
func (id ELFIdentity) String() string {
	name := ""
	for _, a := range elfArches {
		if a.machine != id.Machine {
			continue
		}
		if name == "" {
			name = a.arch
		}
		if a.class == id.Class && a.data == id.Data {
			name = a.arch
			break
		}
	}
	if name == "" {
		name = id.Machine.String()
	}
	bits := "?"
	switch id.Class {
	case elf.ELFCLASS32:
		bits = "32"
	case elf.ELFCLASS64:
		bits = "64"
	}
	order := "unknown-endian"
	switch id.Data {
	case elf.ELFDATA2LSB:
		order = "little-endian"
	case elf.ELFDATA2MSB:
		order = "big-endian"
	}
	return fmt.Sprintf("%s (%s-bit %s)", name, bits, order)
}

// ArLongName resolves a GNU ar long member name "/123" (ref is "123") in
// the archive's "//" name table; an unresolvable reference stays "/123".
// The build server's artifact check and the metaserver's share it.
func ArLongName(table []byte, ref string) string {
	i, err := strconv.Atoi(ref)
	if err != nil || i < 0 || i >= len(table) {
		return "/" + ref
	}
	s := table[i:]
	if j := bytes.IndexByte(s, '\n'); j >= 0 {
		s = s[:j]
	}
	return strings.TrimSuffix(string(s), "/")
}
