package platform

import (
	"debug/elf"
	"testing"
)

func TestELFFor_MeasuredTargets(t *testing.T) {
	tests := []struct {
		name, arch, endian, model string
		want                      ELFIdentity
	}{
		{"native x86_64", "x86_64", "little", "LP64", ELFIdentity{elf.EM_X86_64, elf.ELFCLASS64, elf.ELFDATA2LSB}},
		{"s390x is big-endian 64-bit", "s390x", "big", "LP64", ELFIdentity{elf.EM_S390, elf.ELFCLASS64, elf.ELFDATA2MSB}},
		{"i686 is EM_386", "i686", "little", "ILP32", ELFIdentity{elf.EM_386, elf.ELFCLASS32, elf.ELFDATA2LSB}},
		{"armhf spelling", "armhf", "little", "ILP32", ELFIdentity{elf.EM_ARM, elf.ELFCLASS32, elf.ELFDATA2LSB}},
		{"powerpc", "ppc", "big", "ILP32", ELFIdentity{elf.EM_PPC, elf.ELFCLASS32, elf.ELFDATA2MSB}},
		{"ppc64le", "ppc64le", "little", "LP64", ELFIdentity{elf.EM_PPC64, elf.ELFCLASS64, elf.ELFDATA2LSB}},
		{"x32 is 32-bit EM_X86_64", "x86_64", "little", "ILP32", ELFIdentity{elf.EM_X86_64, elf.ELFCLASS32, elf.ELFDATA2LSB}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ELFFor(tt.arch, tt.endian, tt.model)
			if !ok || got != tt.want {
				t.Errorf("ELFFor(%s, %s, %s) = %v, %v; want %v", tt.arch, tt.endian, tt.model, got, ok, tt.want)
			}
		})
	}
	for _, bad := range [][3]string{{"vax", "little", "ILP32"}, {"x86_64", "", "LP64"}, {"x86_64", "little", ""}, {"s390x", "middle", "LP64"}} {
		if id, ok := ELFFor(bad[0], bad[1], bad[2]); ok {
			t.Errorf("ELFFor(%q) = %v, true; want not ok", bad, id)
		}
	}
}

func TestELFIdentity_String(t *testing.T) {
	for id, want := range map[ELFIdentity]string{
		{elf.EM_X86_64, elf.ELFCLASS64, elf.ELFDATA2LSB}: "x86_64 (64-bit little-endian)",
		{elf.EM_S390, elf.ELFCLASS64, elf.ELFDATA2MSB}:   "s390x (64-bit big-endian)",
		{elf.EM_PPC64, elf.ELFCLASS64, elf.ELFDATA2LSB}:  "ppc64le (64-bit little-endian)",
		{elf.EM_MIPS, elf.ELFCLASS32, elf.ELFDATA2LSB}:   "mipsel (32-bit little-endian)",
		{elf.EM_X86_64, elf.ELFCLASS32, elf.ELFDATA2LSB}: "x86_64 (32-bit little-endian)",
		{elf.EM_AVR, elf.ELFCLASS32, elf.ELFDATA2LSB}:    "EM_AVR (32-bit little-endian)",
	} {
		if got := id.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", id, got, want)
		}
	}
}

func TestArLongName_ResolvesInTheTable(t *testing.T) {
	table := []byte("a_rather_long_member_name.o/\nanother_long_one.o/\n")
	for ref, want := range map[string]string{
		"0": "a_rather_long_member_name.o", "29": "another_long_one.o",
		"999": "/999", "-1": "/-1", "x": "/x",
	} {
		if got := ArLongName(table, ref); got != want {
			t.Errorf("ArLongName(%q) = %q, want %q", ref, got, want)
		}
	}
}
