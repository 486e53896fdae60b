package platform

import (
	"debug/elf"
	"encoding/binary"
	"strings"
	"testing"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// peHead is the start of a PE file as GNU ld writes it (e_lfanew 0x80).
func peHead(machine, magic uint16) []byte {
	h := make([]byte, 0x100)
	copy(h, "MZ")
	binary.LittleEndian.PutUint32(h[0x3c:], 0x80)
	copy(h[0x80:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(h[0x84:], machine)
	binary.LittleEndian.PutUint16(h[0x98:], magic)
	return h
}

func elfHead(m elf.Machine, c elf.Class, d elf.Data) []byte {
	h := make([]byte, 64)
	copy(h, elf.ELFMAG)
	h[elf.EI_CLASS], h[elf.EI_DATA] = byte(c), byte(d)
	var order binary.ByteOrder = binary.LittleEndian
	if d == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	order.PutUint16(h[18:], uint16(m))
	return h
}

func TestCodeFor_CheckHead(t *testing.T) {
	win64 := &kilnv1.SystemInfo{Os: "windows", Arch: "x86_64", Endian: "little", DataModel: "LLP64"}
	win32 := &kilnv1.SystemInfo{Os: "windows", Arch: "i686", Endian: "little", DataModel: "ILP32"}
	linux64 := &kilnv1.SystemInfo{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64"}
	pe64, pe32 := peHead(0x8664, 0x20b), peHead(0x14c, 0x10b)
	x86ELF := elfHead(elf.EM_X86_64, elf.ELFCLASS64, elf.ELFDATA2LSB)
	dos := append([]byte("MZ"), make([]byte, 0x80)...) // no PE signature: a DOS program
	for _, c := range []struct {
		name string
		sys  *kilnv1.SystemInfo
		head []byte
		want string // "" fits; else a substring of the reason
	}{
		{"PE32+ for windows x86_64", win64, pe64, ""},
		{"PE32 for windows i686", win32, pe32, ""},
		{"x86-64 PE for windows i686", win32, pe64, "x is x86_64 (PE32+), target is windows i686 (PE32)"},
		{"PE32 with the x86-64 machine for windows x86_64", win64, peHead(0x8664, 0x10b), "x is x86_64 (PE32), target is windows x86_64 (PE32+)"},
		{"ELF for windows x86_64", win64, x86ELF, "x is an ELF file for x86_64 (64-bit little-endian), target is windows x86_64"},
		{"PE for linux x86_64", linux64, pe64, "x is a Windows PE file for x86_64 (PE32+), target is x86_64 (64-bit little-endian)"},
		{"ELF for linux x86_64", linux64, x86ELF, ""},
		{"a DOS stub without PE signature is no code", win32, dos, ""},
		{"text is no code", win32, []byte("hello"), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			want, ok := CodeFor(c.sys)
			if !ok {
				t.Fatalf("CodeFor(%v) not ok", c.sys)
			}
			got := want.CheckHead(c.head, "x")
			if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
				t.Fatalf("CheckHead = %q, want %q", got, c.want)
			}
		})
	}
	if _, ok := CodeFor(&kilnv1.SystemInfo{Os: "windows", Arch: "m68k"}); ok {
		t.Error("CodeFor(windows m68k) is ok: there is no such PE machine")
	}
}
