package platform

import (
	"bytes"
	"debug/elf"
	"debug/pe"
	"encoding/binary"
	"fmt"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// PEIdentity is what a PE header says about the machine a file is for: its
// COFF machine and its optional header's magic (PE32 or PE32+).
type PEIdentity struct {
	Machine uint16
	Magic   uint16 // 0x10b PE32, 0x20b PE32+
}

// peArches is the one mapping between Kiln's canonical architectures and
// PE machines (Windows targets).
var peArches = []struct {
	arch    string
	machine uint16
	magic   uint16
}{
	{"x86_64", pe.IMAGE_FILE_MACHINE_AMD64, 0x20b},
	{"i686", pe.IMAGE_FILE_MACHINE_I386, 0x10b},
	{"aarch64", pe.IMAGE_FILE_MACHINE_ARM64, 0x20b},
	{"armv7", pe.IMAGE_FILE_MACHINE_ARMNT, 0x10b},
}

// String names the identity for people: "x86_64 (PE32+)", "i686 (PE32)".
func (id PEIdentity) String() string {
	name := fmt.Sprintf("machine 0x%04x", id.Machine)
	for _, a := range peArches {
		if a.machine == id.Machine {
			name = a.arch
			break
		}
	}
	switch id.Magic {
	case 0x10b:
		return name + " (PE32)"
	case 0x20b:
		return name + " (PE32+)"
	case 0:
		return name + " (COFF object)"
	}
	return fmt.Sprintf("%s (optional header magic 0x%x)", name, id.Magic)
}

// CodeWant is what every file of code in an artifact built for a target
// must be: ELF files for its ELF identity, or, for a Windows target, PE
// files (and COFF objects) for its PE identity. Both the build server's
// artifact check and the metaserver's use it, so they cannot disagree.
type CodeWant struct {
	// Windows is true for a Windows target: its code is PE, never ELF.
	Windows bool
	ELF     ELFIdentity // when !Windows
	PE      PEIdentity  // when Windows
}

// CodeFor returns what code for the platform measured as sys must be. ok
// is false when its arch, byte order or data model (for Windows: arch) has
// no known identity: nothing can be checked then.
func CodeFor(sys *kilnv1.SystemInfo) (want CodeWant, ok bool) {
	if sys.GetOs() == "windows" {
		arch := CanonicalArch(sys.GetArch())
		for _, a := range peArches {
			if a.arch == arch {
				return CodeWant{Windows: true, PE: PEIdentity{Machine: a.machine, Magic: a.magic}}, true
			}
		}
		return CodeWant{}, false
	}
	id, ok := ELFFor(sys.GetArch(), sys.GetEndian(), sys.GetDataModel())
	return CodeWant{ELF: id}, ok
}

// String names what the target's code is ("s390x (64-bit big-endian)",
// "windows x86_64 (PE32+)").
func (w CodeWant) String() string {
	if w.Windows {
		return "windows " + w.PE.String()
	}
	return w.ELF.String()
}

// HeadLen is how many of a file's first bytes CheckHead reads: enough for
// a PE header where linkers put it (GNU ld: 0x80, MSVC: about 0x100).
const HeadLen = 1024

var elfMagic = []byte(elf.ELFMAG)

// IsELF and IsPE report whether a file's first bytes start like an ELF or
// a PE ("MZ") file.
func IsELF(head []byte) bool { return bytes.HasPrefix(head, elfMagic) }

// IsPE reports whether head starts like a PE file (a DOS "MZ" header).
func IsPE(head []byte) bool { return len(head) >= 2 && head[0] == 'M' && head[1] == 'Z' }

// CheckHead says why the file named name, whose first bytes (up to
// HeadLen, all of them when shorter) are head, is code for another
// platform than w: an ELF file for another machine, class or byte order or
// for a Windows target, a PE file for another machine or for a non-Windows
// target, a file that starts like either but whose header cannot be read.
// It returns "" when the file fits or is no ELF or PE file.
func (w CodeWant) CheckHead(head []byte, name string) string {
	switch {
	case IsELF(head):
		got, reason := elfHeaderIdentity(head)
		switch {
		case reason != "":
			return name + " " + reason
		case w.Windows:
			return fmt.Sprintf("%s is an ELF file for %s, target is %s", name, got, w)
		case got != w.ELF:
			return fmt.Sprintf("%s is %s, target is %s", name, got, w)
		}
	case IsPE(head):
		got, isPE, reason := peHeaderIdentity(head)
		switch {
		case reason != "":
			return name + " " + reason
		case !isPE:
			return "" // a DOS program or data that starts with "MZ"
		case !w.Windows:
			return fmt.Sprintf("%s is a Windows PE file for %s, target is %s", name, got, w)
		case got != w.PE:
			return fmt.Sprintf("%s is %s, target is %s", name, got, w)
		}
	}
	return ""
}

// CheckMember is CheckHead for a member of a static (ar) library: for a
// Windows target, a COFF object or import member for another machine is
// refused too (an ELF member always is).
func (w CodeWant) CheckMember(head []byte, name string) string {
	if IsELF(head) || !w.Windows {
		return w.CheckHead(head, name)
	}
	if len(head) < 8 {
		return ""
	}
	machine := binary.LittleEndian.Uint16(head[0:2])
	if machine == 0 && binary.LittleEndian.Uint16(head[2:4]) == 0xffff {
		machine = binary.LittleEndian.Uint16(head[6:8]) // short import member
	}
	for _, a := range peArches {
		if a.machine == machine && machine != w.PE.Machine {
			return fmt.Sprintf("%s is %s, target is %s", name, PEIdentity{Machine: machine}, w)
		}
	}
	return ""
}

// ELFHeader returns the identity in the header of an ELF file whose first
// bytes are head; ok is false when head is not a readable ELF header.
func ELFHeader(head []byte) (id ELFIdentity, ok bool) {
	if !IsELF(head) {
		return ELFIdentity{}, false
	}
	id, reason := elfHeaderIdentity(head)
	return id, reason == ""
}

// elfHeaderIdentity reads e_ident's class and data, then e_machine in
// that byte order; reason says why it cannot.
func elfHeaderIdentity(h []byte) (ELFIdentity, string) {
	if len(h) < 20 {
		return ELFIdentity{}, "starts like an ELF file but is too short to be one"
	}
	got := ELFIdentity{Class: elf.Class(h[elf.EI_CLASS]), Data: elf.Data(h[elf.EI_DATA])}
	switch got.Data {
	case elf.ELFDATA2LSB:
		got.Machine = elf.Machine(binary.LittleEndian.Uint16(h[18:20]))
	case elf.ELFDATA2MSB:
		got.Machine = elf.Machine(binary.BigEndian.Uint16(h[18:20]))
	default:
		return got, "starts like an ELF file but has no known byte order"
	}
	return got, ""
}

// peHeaderIdentity reads the PE signature at e_lfanew, the COFF machine
// after it and the optional header's magic. isPE is false for an "MZ"
// file with no PE signature where e_lfanew points (a DOS program, or data);
// a PE header beyond head, which the check cannot see, is a reason.
func peHeaderIdentity(h []byte) (id PEIdentity, isPE bool, reason string) {
	if len(h) < 0x40 {
		return id, false, ""
	}
	off := int64(binary.LittleEndian.Uint32(h[0x3c:0x40]))
	if off+26 > int64(len(h)) {
		if len(h) >= HeadLen {
			return id, false, fmt.Sprintf("starts like a Windows program but its PE header (at byte %d) is beyond the first %d bytes", off, HeadLen)
		}
		return id, false, ""
	}
	if string(h[off:off+4]) != "PE\x00\x00" {
		return id, false, ""
	}
	id.Machine = binary.LittleEndian.Uint16(h[off+4 : off+6])
	id.Magic = binary.LittleEndian.Uint16(h[off+24 : off+26])
	return id, true, ""
}
