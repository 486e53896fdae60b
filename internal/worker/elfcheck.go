package worker

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Limits of the artifact check: a static archive with more members than
// this is refused rather than read without end.
const maxArchiveMembers = 100000

var (
	elfMagic  = []byte(elf.ELFMAG)
	arMagic   = []byte("!<arch>\n")
	errNotELF = errors.New("not an ELF file")
)

// elfWant is what every file of code of an artifact must be: for the
// target's machine, class and byte order (ELF) or machine (PE, Windows),
// and, ELF, linked against its libc.
type elfWant struct {
	code platform.CodeWant
	id   platform.ELFIdentity
	arch string // the target's measured arch, for messages
	libc string // "glibc", "musl" or another (not checked)
}

// checkArtifactELF fails (a *buildError) on the first regular file among
// entries that is an ELF or PE file, or such a member of a static (ar)
// archive, not for the target measured as sys (platform.CodeFor): another
// machine, class or byte order ("usr/lib/libfoo.so.1 is x86_64 (64-bit
// little-endian), target is s390x (64-bit big-endian)"), an ELF file for
// a Windows target or a PE file for another, an interpreter or libc
// dependency of the other of glibc and musl, or a file that starts like
// ELF or PE but cannot be read as one. It checks nothing when the target
// has no known identity (checked is then false). Errors reading the files
// are the build server's (not *buildError).
func checkArtifactELF(entries []packEntry, sys *kilnv1.SystemInfo) (checked bool, err error) {
	code, ok := platform.CodeFor(sys)
	if !ok {
		return false, nil
	}
	want := elfWant{code: code, id: code.ELF, arch: sys.GetArch(), libc: sys.GetLibc()}
	for _, e := range entries {
		if !e.info.Mode().IsRegular() {
			continue
		}
		err := checkFileELF(e.path, e.name, want)
		if be := (*buildError)(nil); errors.As(err, &be) {
			return true, &buildError{"artifact does not match the target: " + be.reason}
		}
		if err != nil {
			return true, err
		}
	}
	return true, nil
}

// checkFileELF checks one file of the artifact, named name in it.
func checkFileELF(p, name string, want elfWant) error {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("checking artifact %s: %w", name, err)
	}
	defer f.Close()
	var head [platform.HeadLen]byte
	n, err := io.ReadFull(f, head[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("checking artifact %s: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("checking artifact %s: %w", name, err)
	}
	switch {
	case bytes.HasPrefix(head[:n], elfMagic) && !want.code.Windows:
		return checkELF(io.NewSectionReader(f, 0, fi.Size()), name, want)
	case bytes.HasPrefix(head[:n], arMagic):
		return checkArchive(f, fi.Size(), name, want)
	}
	if reason := want.code.CheckHead(head[:n], name); reason != "" {
		return &buildError{reason}
	}
	return nil
}

// checkELF checks one ELF image.
func checkELF(r io.ReaderAt, name string, want elfWant) (err error) {
	defer func() {
		// debug/elf trusts more of a crafted header than it should.
		if p := recover(); p != nil {
			err = &buildError{fmt.Sprintf("%s starts like an ELF file but cannot be read as one (%v)", name, p)}
		}
	}()
	ef, err := elf.NewFile(r)
	if err != nil {
		return &buildError{fmt.Sprintf("%s starts like an ELF file but cannot be read as one: %v", name, err)}
	}
	got := platform.ELFIdentity{Machine: ef.Machine, Class: ef.Class, Data: ef.Data}
	if got != want.id {
		return &buildError{fmt.Sprintf("%s is %s, target is %s", name, got, want.id)}
	}
	if reason := libcMismatch(ef, want.libc); reason != "" {
		return &buildError{fmt.Sprintf("%s %s, target's libc is %s", name, reason, want.libc)}
	}
	return nil
}

// libcMismatch says how an ELF file's program interpreter or libc
// dependency belongs to the other of glibc and musl than libc, or "".
func libcMismatch(ef *elf.File, libc string) string {
	interp := ""
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP && p.Filesz > 0 && p.Filesz < 4096 {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err == nil {
				interp = string(bytes.TrimRight(b, "\x00"))
			}
		}
	}
	libs, _ := ef.ImportedLibraries()
	isMusl := strings.Contains(path.Base(interp), "ld-musl")
	switch libc {
	case "musl":
		if interp != "" && !isMusl {
			return "has the program interpreter " + interp + " (not musl's)"
		}
		for _, l := range libs {
			if l == "libc.so.6" {
				return "is linked against glibc (needs libc.so.6)"
			}
		}
	case "glibc":
		if isMusl {
			return "has musl's program interpreter " + interp
		}
		for _, l := range libs {
			if strings.HasPrefix(l, "libc.musl-") {
				return "is linked against musl (needs " + l + ")"
			}
		}
	}
	return ""
}

// checkArchive checks every ELF member of a static library ("!<arch>"
// format, GNU or BSD names); members are named "lib/libfoo.a(foo.o)".
func checkArchive(r io.ReaderAt, size int64, name string, want elfWant) error {
	off := int64(len(arMagic))
	var longNames []byte
	for i := 0; off+60 <= size; i++ {
		if i == maxArchiveMembers {
			return &buildError{fmt.Sprintf("%s has more than %d members", name, maxArchiveMembers)}
		}
		var hdr [60]byte
		if _, err := r.ReadAt(hdr[:], off); err != nil {
			return fmt.Errorf("checking artifact %s: %w", name, err)
		}
		msize, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || msize < 0 || string(hdr[58:60]) != "`\n" || off+60+msize > size {
			return &buildError{fmt.Sprintf("%s is a malformed ar archive (member header at byte %d)", name, off)}
		}
		data, end := off+60, off+60+msize
		member := strings.TrimRight(string(hdr[:16]), " ")
		switch {
		case member == "//":
			if msize <= 1<<20 {
				longNames = make([]byte, msize)
				if _, err := r.ReadAt(longNames, data); err != nil {
					return fmt.Errorf("checking artifact %s: %w", name, err)
				}
			}
			member = ""
		case member == "/" || member == "/SYM64/" || strings.HasPrefix(member, "__.SYMDEF"):
			member = "" // symbol tables
		case strings.HasPrefix(member, "#1/"):
			// BSD: the name is the first n bytes of the data.
			n, err := strconv.ParseInt(member[3:], 10, 64)
			if err != nil || n < 0 || n > msize || n > 4096 {
				return &buildError{fmt.Sprintf("%s is a malformed ar archive (member name at byte %d)", name, off)}
			}
			b := make([]byte, n)
			if _, err := r.ReadAt(b, data); err != nil {
				return fmt.Errorf("checking artifact %s: %w", name, err)
			}
			member = string(bytes.TrimRight(b, "\x00"))
			data, msize = data+n, msize-n
		case strings.HasPrefix(member, "/"):
			member = platform.ArLongName(longNames, member[1:])
		default:
			member = strings.TrimSuffix(member, "/")
		}
		if member != "" {
			head := make([]byte, min(msize, platform.HeadLen))
			if _, err := r.ReadAt(head, data); err != nil {
				return fmt.Errorf("checking artifact %s: %w", name, err)
			}
			mname := name + "(" + member + ")"
			if bytes.HasPrefix(head, elfMagic) && !want.code.Windows {
				if err := checkELF(io.NewSectionReader(r, data, msize), mname, want); err != nil {
					return err
				}
			} else if reason := want.code.CheckMember(head, mname); reason != "" {
				return &buildError{reason}
			}
		}
		off = end + end%2 // members start at even offsets
	}
	return nil
}
