package acceptance

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Inspection is what Inspect found in an unpacked artifact.
type Inspection struct {
	// ELFs counts the ELF files, archive members included.
	ELFs int
	// SharedLibs are the shared objects named lib*.so* (paths relative to
	// the artifact's root), sorted.
	SharedLibs []string
	// Problems are the ELF files that do not fit the platform, one line
	// each ("lib/libz.so.1: x86-64 64-bit little-endian, s390x needs ...").
	Problems []string
}

const (
	elfMagic = "\x7fELF"
	arMagic  = "!<arch>\n"
	// efARMABIFloatHard is EF_ARM_ABI_FLOAT_HARD in an ARM ELF's e_flags.
	efARMABIFloatHard = 0x400
)

// Inspect walks the unpacked artifact under dir (symbolic links are not
// followed: they name files the walk visits anyway) and checks every ELF
// file, and every ELF member of every ar archive (static libraries), against
// p.
func Inspect(dir string, p Platform) (Inspection, error) {
	var in Inspection
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		return inspectFile(&in, path, filepath.ToSlash(rel), p)
	})
	sort.Strings(in.SharedLibs)
	return in, err
}

// inspectFile checks one regular file: an ELF file, an ar archive, or
// anything else (ignored).
func inspectFile(in *Inspection, path, rel string, p Platform) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	head := make([]byte, len(arMagic))
	n, _ := io.ReadFull(f, head)
	switch {
	case n >= 4 && string(head[:4]) == elfMagic:
		checkELF(in, io.NewSectionReader(f, 0, st.Size()), rel, p)
	case n == len(arMagic) && string(head) == arMagic:
		return eachMember(f, st.Size(), func(name string, r *io.SectionReader) {
			checkELF(in, r, rel+"("+name+")", p)
		})
	}
	return nil
}

// checkELF checks one ELF image (r starts with the ELF magic or is
// skipped) and records what it is.
func checkELF(in *Inspection, r *io.SectionReader, name string, p Platform) {
	magic := make([]byte, 4)
	if _, err := r.ReadAt(magic, 0); err != nil || string(magic) != elfMagic {
		return
	}
	in.ELFs++
	ef, err := elf.NewFile(r)
	if err != nil {
		in.Problems = append(in.Problems, fmt.Sprintf("%s: unreadable ELF file: %v", name, err))
		return
	}
	defer ef.Close()
	if ef.Machine != p.Machine || ef.Class != p.Class || ef.Data != p.Data {
		in.Problems = append(in.Problems, fmt.Sprintf("%s is %s, %s needs %s",
			name, describe(ef.Machine, ef.Class, ef.Data), p.Name, describe(p.Machine, p.Class, p.Data)))
		return
	}
	if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
		return
	}
	base := filepath.Base(name)
	if ef.Type == elf.ET_DYN && strings.HasPrefix(base, "lib") && strings.Contains(base, ".so") {
		in.SharedLibs = append(in.SharedLibs, name)
	}
	for _, prob := range abiProblems(ef, r, p) {
		in.Problems = append(in.Problems, name+": "+prob)
	}
}

// abiProblems checks what machine, class and byte order do not say: the
// program interpreter, the C library needed, ARM's float ABI.
func abiProblems(ef *elf.File, r io.ReaderAt, p Platform) []string {
	var probs []string
	for _, prog := range ef.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(prog.Open(), 4096))
		interp := strings.TrimRight(string(b), "\x00")
		if err == nil && p.Interp != "" && interp != p.Interp {
			probs = append(probs, fmt.Sprintf("program interpreter %s, %s needs %s", interp, p.Name, p.Interp))
		}
	}
	libs, _ := ef.ImportedLibraries()
	for _, l := range libs {
		if p.Musl && l == "libc.so.6" {
			probs = append(probs, "needs glibc's libc.so.6 on musl")
		}
		if !p.Musl && l == "libc.so" {
			probs = append(probs, "needs musl's libc.so on glibc")
		}
	}
	if p.HardFloat && ef.Machine == elf.EM_ARM {
		if flags, ok := elfFlags(r, ef); ok && flags&efARMABIFloatHard == 0 {
			probs = append(probs, fmt.Sprintf("soft-float ARM (e_flags %#x), %s is hard-float", flags, p.Name))
		}
	}
	return probs
}

// elfFlags reads e_flags, which debug/elf does not expose.
func elfFlags(r io.ReaderAt, ef *elf.File) (uint32, bool) {
	off := int64(36)
	if ef.Class == elf.ELFCLASS64 {
		off = 48
	}
	b := make([]byte, 4)
	if _, err := r.ReadAt(b, off); err != nil {
		return 0, false
	}
	return ef.ByteOrder.Uint32(b), true
}

// describe names an ELF kind: "EM_X86_64 64-bit little-endian".
func describe(m elf.Machine, c elf.Class, d elf.Data) string {
	bits := map[elf.Class]string{elf.ELFCLASS32: "32-bit", elf.ELFCLASS64: "64-bit"}[c]
	if bits == "" {
		bits = c.String()
	}
	order := map[elf.Data]string{elf.ELFDATA2LSB: "little-endian", elf.ELFDATA2MSB: "big-endian"}[d]
	if order == "" {
		order = d.String()
	}
	return fmt.Sprintf("%s %s %s", m, bits, order)
}

// eachMember calls fn with each member of the ar archive in f (size bytes,
// GNU or BSD format), skipping the symbol and long-name tables.
func eachMember(f io.ReaderAt, size int64, fn func(name string, r *io.SectionReader)) error {
	var longNames []byte
	off := int64(len(arMagic))
	for i := 0; off+60 <= size; i++ {
		if i > 1_000_000 {
			return fmt.Errorf("ar archive with more than a million members")
		}
		hdr := make([]byte, 60)
		if _, err := f.ReadAt(hdr, off); err != nil {
			return err
		}
		if string(hdr[58:60]) != "`\n" {
			return fmt.Errorf("ar header at %d: bad magic", off)
		}
		msize, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || msize < 0 || off+60+msize > size {
			return fmt.Errorf("ar header at %d: bad size %q", off, hdr[48:58])
		}
		name := strings.TrimRight(string(hdr[:16]), " ")
		data := off + 60
		dsize := msize
		switch {
		case name == "/" || name == "/SYM64/" || name == "__.SYMDEF" || name == "__.SYMDEF SORTED":
			name = ""
		case name == "//":
			longNames = make([]byte, msize)
			if _, err := f.ReadAt(longNames, data); err != nil {
				return err
			}
			name = ""
		case strings.HasPrefix(name, "#1/"):
			n, err := strconv.ParseInt(name[3:], 10, 64)
			if err != nil || n < 0 || n > msize {
				return fmt.Errorf("ar header at %d: bad BSD name %q", off, name)
			}
			b := make([]byte, n)
			if _, err := f.ReadAt(b, data); err != nil {
				return err
			}
			name = string(bytes.TrimRight(b, "\x00"))
			data, dsize = data+n, msize-n
		case strings.HasPrefix(name, "/"):
			idx, err := strconv.Atoi(name[1:])
			if err == nil && idx >= 0 && idx < len(longNames) {
				rest := longNames[idx:]
				if end := bytes.Index(rest, []byte("/\n")); end >= 0 {
					rest = rest[:end]
				}
				name = string(rest)
			}
		default:
			name = strings.TrimSuffix(name, "/")
		}
		if name != "" {
			fn(name, io.NewSectionReader(f, data, dsize))
		}
		off = data + dsize
		off += off % 2
	}
	return nil
}
