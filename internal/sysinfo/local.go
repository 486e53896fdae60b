package sysinfo

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// localTimeout bounds the one or two processes Local starts.
const localTimeout = 2 * time.Second

// Local describes the machine the calling program runs on, fast (a few
// milliseconds) and without compiling anything, for startcompile's default
// constraints. It fills os, arch, endian, data_model, char_bit, the type
// sizes, libc and libc_version, cpus and memory_bytes.
//
// How: os and arch come from the Go runtime (arch through CanonicalArch;
// uname's machine refines 32-bit ARM to armv6/armv7), endianness from
// binary.NativeEndian, the data model from the pointer size (Linux: LP64 on
// 64-bit, ILP32 on 32-bit), CHAR_BIT is 8. libc is glibc with the version
// its own banner names when this process has glibc mapped (a dynamically
// linked program: the machine's C library, read with no process), else
// the banner of the system's libc.so.6 for this process's machine (a
// static program, as released: see systemGlibc), else the version
// `getconf GNU_LIBC_VERSION` prints; failing that musl
// when a /lib/ld-musl-*.so.1 loader exists, with the version its banner
// shows; failing both, empty.
//
// compiler, compiler_version and tools are left empty: knowing them needs a
// compiler run (Probe), and a requester's own compiler is not what it asks
// a build server for. Nothing is cached, on disk or in memory. The error is
// reserved for a failure to measure anything at all; today every field
// degrades to empty instead, so it is nil.
func Local(ctx context.Context) (*kilnv1.SystemInfo, error) {
	info := localCPU()
	info.Cpus = uint32(runtime.NumCPU())
	info.MemoryBytes, _ = memoryBytes()

	ctx, cancel := context.WithTimeout(ctx, localTimeout)
	defer cancel()
	info.Libc, info.LibcVersion = localLibc(ctx)
	return info, nil
}

// LocalPinned is Local limited to the fields a request pins to this
// machine by default (platform.DefaultPinnedFields: os, arch, endian,
// data_model, libc), plus char_bit and the type sizes, which cost
// nothing: what startcompile needs before its Submit. It leaves out what
// those fields do not need, the libc's version, cpus and memory_bytes, so
// that a glibc program (one that maps libc.so.6) learns its libc from its
// own mappings and reads no library (issue 20: a submit's own time). A
// program without a mapped libc.so.6 (a static build, as released) asks
// as Local does, reading the system's libc.so.6 with no process, and then
// gets the version too.
func LocalPinned(ctx context.Context) (*kilnv1.SystemInfo, error) {
	info := localCPU()
	if mappedGlibcPath() != "" {
		info.Libc = "glibc"
		return info, nil
	}
	ctx, cancel := context.WithTimeout(ctx, localTimeout)
	defer cancel()
	info.Libc, info.LibcVersion = localLibc(ctx)
	return info, nil
}

// localCPU fills what the Go runtime knows without any I/O: os, arch,
// endianness, char_bit, the type sizes and the data model.
func localCPU() *kilnv1.SystemInfo {
	ptr := uint32(unsafe.Sizeof(uintptr(0)))
	info := &kilnv1.SystemInfo{
		Os:             runtime.GOOS,
		Arch:           localArch(),
		Endian:         nativeEndian(),
		CharBit:        8,
		SizeofShort:    2,
		SizeofInt:      4,
		SizeofLong:     ptr, // LP64 / ILP32: long is pointer-sized on Unix
		SizeofLongLong: 8,
		SizeofPointer:  ptr,
	}
	info.DataModel = platform.DataModel(info.SizeofShort, info.SizeofInt, info.SizeofLong, info.SizeofLongLong, info.SizeofPointer)
	return info
}

// localArch is GOARCH canonicalized; for 32-bit ARM, whose GOARCH does not
// carry the version, uname's machine decides between armv6 and armv7.
func localArch() string {
	arch := platform.CanonicalArch(runtime.GOARCH)
	if runtime.GOARCH == "arm" {
		if m, err := unameMachine(); err == nil {
			if c := platform.CanonicalArch(m); strings.HasPrefix(c, "armv") {
				arch = c
			}
		}
	}
	return arch
}

// nativeEndian names the byte order of this process.
func nativeEndian() string {
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		return "little"
	}
	return "big"
}

// localLibc finds the system's C library without compiling: the glibc
// this process maps, else the system's glibc found by path, else glibc via
// getconf, else a musl loader in /lib.
func localLibc(ctx context.Context) (libc, version string) {
	if v, ok := mappedGlibc(); ok {
		return "glibc", v
	}
	if v, ok := systemGlibc(systemGlibcPaths()); ok {
		return "glibc", v
	}
	if out, _, err := run(ctx, "", []string{"getconf", "GNU_LIBC_VERSION"}, nil); err == nil {
		// "glibc 2.36"
		if f := strings.Fields(string(out)); len(f) == 2 && f[0] == "glibc" {
			return "glibc", f[1]
		}
	}
	loaders, _ := filepath.Glob("/lib/ld-musl-*.so.1")
	for _, l := range loaders {
		if _, err := os.Stat(l); err != nil {
			continue
		}
		v, _ := muslVersion(ctx, nil, l)
		return "musl", v
	}
	return "", ""
}

// glibcBanner precedes glibc's version in the banner every glibc carries
// ("GNU C Library (Debian GLIBC 2.36-9) stable release version 2.36.").
const glibcBanner = "GNU C Library"

// mappedGlibc reads the version of the glibc this process has mapped (the
// one the dynamic loader found: the machine's) from its banner, sparing
// the fork and exec of getconf on every submit (2.5-30 ms on a loaded
// machine, issue 20). ok is false when no libc.so.6 is mapped (a static
// build) or its banner is not found; the caller asks getconf then.
func mappedGlibc() (string, bool) {
	path := mappedGlibcPath()
	if path == "" {
		return "", false
	}
	if v, ok := rodataGlibc(path); ok {
		return v, true
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	return glibcVersion(b)
}

// mappedGlibcPath is the path of the libc.so.6 this process maps (glibc's
// name; musl's library is libc.so), or "" when it maps none.
func mappedGlibcPath() string {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(maps), "\n") {
		if i := strings.IndexByte(line, '/'); i >= 0 && strings.HasSuffix(line, "/libc.so.6") {
			return line[i:]
		}
	}
	return ""
}

// systemGlibcPaths lists where the dynamic loader of a glibc system keeps
// libc.so.6 for this architecture, in the order systemGlibc tries them:
// Debian's multiarch directories, then the lib64 ones (Fedora, SUSE), then
// the plain ones (Arch, 32-bit systems).
func systemGlibcPaths() []string {
	var out []string
	if t := multiarchDir[runtime.GOARCH]; t != "" {
		out = append(out, "/lib/"+t+"/libc.so.6", "/usr/lib/"+t+"/libc.so.6")
	}
	return append(out, "/lib64/libc.so.6", "/usr/lib64/libc.so.6", "/lib/libc.so.6", "/usr/lib/libc.so.6")
}

// multiarchDir is Debian's multiarch directory name by GOARCH.
var multiarchDir = map[string]string{
	"amd64": "x86_64-linux-gnu", "386": "i386-linux-gnu", "arm64": "aarch64-linux-gnu",
	"arm": "arm-linux-gnueabihf", "s390x": "s390x-linux-gnu", "ppc64le": "powerpc64le-linux-gnu",
	"riscv64": "riscv64-linux-gnu", "mips64le": "mips64el-linux-gnuabi64", "loong64": "loongarch64-linux-gnu",
}

// systemGlibc reads the version of the machine's glibc from the first of
// paths that is an ELF file of this process's own class, byte order and
// machine and carries glibc's banner: what a program that maps no C
// library (a static build, as released) learns without starting getconf
// (issue 20). ok is false when none does; the caller asks getconf then.
func systemGlibc(paths []string) (string, bool) {
	self, ok := elfIdent("/proc/self/exe")
	if !ok {
		return "", false
	}
	for _, p := range paths {
		if id, ok := elfIdent(p); !ok || id != self {
			continue
		}
		if v, ok := rodataGlibc(p); ok {
			return v, true
		}
	}
	return "", false
}

// elfIdent reads the identity in the ELF header of the file at path; ok
// is false when it is not ELF.
func elfIdent(path string) (platform.ELFIdentity, bool) {
	f, err := os.Open(path)
	if err != nil {
		return platform.ELFIdentity{}, false
	}
	defer f.Close()
	var h [20]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return platform.ELFIdentity{}, false
	}
	return platform.ELFHeader(h[:])
}

// rodataGlibc looks for the banner in the .rodata section of the ELF
// file at path, where glibc keeps it: about 150 KiB to read instead of
// the whole 2 MiB library, whose copy and scan were the largest part of
// a submit's own CPU time (issue 20). ok is false when the file has no
// such section or the banner is not in it; the caller reads the whole
// file then.
func rodataGlibc(path string) (string, bool) {
	f, err := elf.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sec := f.Section(".rodata")
	if sec == nil || sec.Type == elf.SHT_NOBITS || sec.Size > maxRodata {
		return "", false
	}
	b, err := sec.Data()
	if err != nil {
		return "", false
	}
	return glibcVersion(b)
}

// maxRodata bounds the .rodata section rodataGlibc reads (glibc 2.36's
// is 151 KiB).
const maxRodata = 8 << 20

// glibcVersion finds "release version X.Y" after glibc's banner in the
// bytes of a libc.so.6.
func glibcVersion(lib []byte) (string, bool) {
	i := bytes.Index(lib, []byte(glibcBanner))
	if i < 0 {
		return "", false
	}
	rest := lib[i:min(len(lib), i+256)]
	const rv = "release version "
	j := bytes.Index(rest, []byte(rv))
	if j < 0 {
		return "", false
	}
	v := rest[j+len(rv):]
	n := 0
	for n < len(v) && (v[n] == '.' || v[n] >= '0' && v[n] <= '9') {
		n++
	}
	ver := strings.TrimSuffix(string(v[:n]), ".")
	if !strings.Contains(ver, ".") || strings.HasPrefix(ver, ".") {
		return "", false
	}
	return ver, true
}
