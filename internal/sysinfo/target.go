package sysinfo

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path"
	"runtime"
	"strings"
	"sync"

	"github.com/kilnbuild/kiln/internal/platform"
)

// Kind is the kind of toolchain a target uses.
type Kind string

// The target kinds ParseTarget accepts.
const (
	KindNative Kind = "native" // the host's cc, binaries run directly
	KindMusl   Kind = "musl"   // musl-gcc on the host, binaries run directly
	KindCross  Kind = "cross"  // TRIPLE-gcc, binaries run under qemu-user
)

// ErrBadTarget is wrapped by ParseTarget's errors.
var ErrBadTarget = errors.New("sysinfo: bad target")

// maxTripleLen bounds a triple; real ones are about 20 bytes.
const maxTripleLen = 64

// TargetSpec names one target of a build server.
type TargetSpec struct {
	// ID is the spelling ParseTarget was given and the kilnv1.Target id:
	// "native", "musl" or "cross:s390x-linux-gnu".
	ID string
	// Kind is the toolchain kind.
	Kind Kind
	// Triple is the GNU triple of a cross target ("s390x-linux-gnu"), empty
	// otherwise.
	Triple string
}

// ParseTarget parses a target spelling: exactly "native", "musl" or
// "cross:TRIPLE", where TRIPLE has two to four dash-separated components of
// lower-case letters, digits, '_' and '.', the first naming the
// architecture (s390x-linux-gnu, arm-linux-gnueabihf). Errors wrap
// ErrBadTarget.
func ParseTarget(s string) (TargetSpec, error) {
	switch s {
	case string(KindNative):
		return TargetSpec{ID: s, Kind: KindNative}, nil
	case string(KindMusl):
		return TargetSpec{ID: s, Kind: KindMusl}, nil
	}
	triple, ok := strings.CutPrefix(s, string(KindCross)+":")
	if !ok {
		return TargetSpec{}, fmt.Errorf("%w %q: want native, musl or cross:TRIPLE", ErrBadTarget, s)
	}
	if err := checkTriple(triple); err != nil {
		return TargetSpec{}, fmt.Errorf("%w %q: %v", ErrBadTarget, s, err)
	}
	return TargetSpec{ID: s, Kind: KindCross, Triple: triple}, nil
}

func checkTriple(t string) error {
	if t == "" || len(t) > maxTripleLen {
		return fmt.Errorf("triple must be 1 to %d bytes", maxTripleLen)
	}
	parts := strings.Split(t, "-")
	if len(parts) < 2 || len(parts) > 4 {
		return errors.New("triple needs 2 to 4 dash-separated parts, like s390x-linux-gnu")
	}
	for _, p := range parts {
		if p == "" {
			return errors.New("triple has an empty part")
		}
		for _, r := range p {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.') {
				return fmt.Errorf("triple part %q: only a-z, 0-9, _ and . are allowed", p)
			}
		}
	}
	return nil
}

// String returns the target's ID.
func (t TargetSpec) String() string { return t.ID }

// Toolchain is how to compile for and run on a target.
type Toolchain struct {
	// CC is the C compiler command (a name looked up in PATH).
	CC string
	// Env holds NAME=value entries a build adds to its environment: CC, and
	// for cross targets AR, RANLIB, STRIP, LD, CXX (when TRIPLE-g++ is
	// installed) and QEMU_LD_PREFIX, so that binfmt-launched dynamic binaries
	// find their loader. KILN_EMULATOR is always present: the emulator
	// command line joined by spaces, empty for targets that run natively,
	// for Makefiles that run test programs explicitly ($(KILN_EMULATOR) ./t).
	Env []string
	// Emulator is the command prefix that runs a target binary on this host,
	// e.g. [qemu-s390x -L /usr/s390x-linux-gnu]; nil when binaries run
	// natively.
	Emulator []string
	// ExeSuffix is what the target's linker appends to a program's name:
	// ".exe" for Windows, "" otherwise. Env has it as KILN_EXEEXT.
	ExeSuffix string
	// Windows is true for a Windows target (mingw-w64 triples): its
	// programs are PE files run by wine, each build in a wine prefix of
	// its own ($HOME/.wine unless WINEPREFIX says otherwise).
	Windows bool
	// AfterStep is a shell command every build step of the target ends
	// with, whatever the step's status, in the step's own sandbox; "" for
	// none. For a Windows target it waits for the wine server of the
	// build's prefix to quit (wineserver -w): wine leaves it and its
	// system processes running a moment after a program exits, and the
	// sandbox fails a step that leaves processes behind.
	AfterStep string
	// BuildTriple is the GNU triple of the machine that builds
	// (x86_64-linux-gnu), HostTriple the one of the machine the binaries
	// are for, in configure's sense of --build and --host. They differ
	// only on cross targets: musl-gcc wraps the native compiler and its
	// binaries run here, so a musl build is not a cross build.
	BuildTriple, HostTriple string
}

// crossBinutils are the binutils a cross target's environment names as
// TRIPLE-tool, by variable.
var crossBinutils = []struct{ env, tool string }{
	{"AR", "ar"}, {"RANLIB", "ranlib"}, {"STRIP", "strip"}, {"LD", "ld"}, {"AS", "as"},
	{"NM", "nm"}, {"OBJCOPY", "objcopy"}, {"OBJDUMP", "objdump"}, {"READELF", "readelf"},
}

// Toolchain returns the target's toolchain. For the native kind CC is "cc",
// or "gcc" when no cc is in PATH. Every kind's Env has KILN_BUILD_TRIPLE and
// KILN_HOST_TRIPLE. A cross target's Env names the TRIPLE- compiler and
// binutils, and points pkg-config at the target's .pc files only
// (PKG_CONFIG_LIBDIR), so that the host's libraries are never found for it.
// It only looks names up in PATH; it does not check that the compiler or
// emulator exists (Probe does).
func (t TargetSpec) Toolchain() Toolchain {
	build := BuildTriple()
	switch t.Kind {
	case KindMusl:
		return Toolchain{CC: "musl-gcc", BuildTriple: build, HostTriple: build,
			Env: []string{"CC=musl-gcc", "KILN_EMULATOR=", "KILN_EXEEXT=", "KILN_BUILD_TRIPLE=" + build, "KILN_HOST_TRIPLE=" + build}}
	case KindCross:
		if IsWindowsTriple(t.Triple) {
			return t.windowsToolchain(build)
		}
		prefix := "/usr/" + t.Triple
		tc := Toolchain{
			CC:          t.Triple + "-gcc",
			Emulator:    []string{QemuName(t.Triple), "-L", prefix},
			BuildTriple: build,
			HostTriple:  t.Triple,
		}
		tc.Env = []string{"CC=" + tc.CC}
		for _, b := range crossBinutils {
			tc.Env = append(tc.Env, b.env+"="+t.Triple+"-"+b.tool)
		}
		if _, err := exec.LookPath(t.Triple + "-g++"); err == nil {
			tc.Env = append(tc.Env, "CXX="+t.Triple+"-g++")
		}
		tc.Env = append(tc.Env,
			"PKG_CONFIG=pkg-config",
			"PKG_CONFIG_LIBDIR="+PkgConfigLibDir(t.Triple),
			"QEMU_LD_PREFIX="+prefix,
			"KILN_EMULATOR="+strings.Join(tc.Emulator, " "),
			"KILN_EXEEXT=",
			"KILN_BUILD_TRIPLE="+build,
			"KILN_HOST_TRIPLE="+t.Triple,
		)
		return tc
	default:
		cc := "cc"
		if _, err := exec.LookPath(cc); err != nil {
			if _, err := exec.LookPath("gcc"); err == nil {
				cc = "gcc"
			}
		}
		return Toolchain{CC: cc, BuildTriple: build, HostTriple: build,
			Env: []string{"CC=" + cc, "KILN_EMULATOR=", "KILN_EXEEXT=", "KILN_BUILD_TRIPLE=" + build, "KILN_HOST_TRIPLE=" + build}}
	}
}

// IsWindowsTriple reports whether a cross triple is a Windows one
// (x86_64-w64-mingw32, i686-w64-mingw32): its programs are PE files that
// wine runs rather than ELF files for qemu-user.
func IsWindowsTriple(triple string) bool {
	return strings.HasSuffix(triple, "-mingw32") || strings.Contains(triple, "-windows")
}

// wineEnv quiets wine and keeps it from offering to download Mono and
// Gecko when it creates a prefix (seconds, and no network in a sandbox).
var wineEnv = []string{"WINEDEBUG=-all", "WINEDLLOVERRIDES=mscoree,mshtml="}

// windowsToolchain is a mingw-w64 target's: TRIPLE-gcc and binutils, the
// target's own pkg-config directory, and wine (WineCommand) as its
// emulator, with a 32-bit wine prefix for 32-bit targets (half the size
// and time of a 64-bit one). Its programs end in .exe.
func (t TargetSpec) windowsToolchain(build string) Toolchain {
	tc := Toolchain{
		CC:          t.Triple + "-gcc",
		Emulator:    []string{WineCommand(t.Triple)},
		ExeSuffix:   ".exe",
		Windows:     true,
		AfterStep:   wineServerCommand(WineCommand(t.Triple)) + " -w",
		BuildTriple: build,
		HostTriple:  t.Triple,
	}
	tc.Env = []string{"CC=" + tc.CC}
	for _, b := range crossBinutils {
		if b.env == "READELF" {
			continue // PE files: there is no TRIPLE-readelf
		}
		tc.Env = append(tc.Env, b.env+"="+t.Triple+"-"+b.tool)
	}
	if _, err := exec.LookPath(t.Triple + "-g++"); err == nil {
		tc.Env = append(tc.Env, "CXX="+t.Triple+"-g++")
	}
	winArch := "win64"
	if platform.CanonicalArch(t.Triple) == "i686" {
		winArch = "win32"
	}
	tc.Env = append(tc.Env, "PKG_CONFIG=pkg-config", "PKG_CONFIG_LIBDIR="+PkgConfigLibDir(t.Triple), "WINEARCH="+winArch)
	tc.Env = append(tc.Env, wineEnv...)
	tc.Env = append(tc.Env,
		"KILN_EMULATOR="+strings.Join(tc.Emulator, " "),
		"KILN_EXEEXT=.exe",
		"KILN_BUILD_TRIPLE="+build,
		"KILN_HOST_TRIPLE="+t.Triple,
	)
	return tc
}

// wineCandidates are the wine launchers that run a Windows triple's
// programs, by canonical arch, best first: Debian's wine64 package has no
// /usr/bin entry (the wine package adds /usr/bin/wine), and only
// /usr/lib/wine/wine (from wine32, i386 multiarch) runs 32-bit programs.
var wineCandidates = map[string][]string{
	"x86_64": {"wine64", "/usr/lib/wine/wine64", "wine", "/usr/lib/wine/wine"},
	"i686":   {"wine", "/usr/lib/wine/wine"},
}

// wineServerCommand is the wineserver beside the wine launcher wine (an
// absolute path), or wineserver from PATH.
func wineServerCommand(wine string) string {
	if strings.HasPrefix(wine, "/") {
		return path.Join(path.Dir(wine), "wineserver")
	}
	return "wineserver"
}

// WineCommand returns the wine launcher for a Windows triple's programs:
// the first of its candidates found (a name in PATH, or an absolute path
// that exists), else the first candidate, so that the probe's error names
// what is missing.
func WineCommand(triple string) string {
	cands := wineCandidates[platform.CanonicalArch(triple)]
	if len(cands) == 0 {
		cands = []string{"wine"}
	}
	for _, c := range cands {
		if strings.HasPrefix(c, "/") {
			if fileExists(c) {
				return c
			}
		} else if _, err := exec.LookPath(c); err == nil {
			return c
		}
	}
	return cands[0]
}

// PkgConfigLibDir is where a cross target's pkg-config looks, and only
// there: Debian's multiarch directory for the triple, the cross toolchain's
// own, and the architecture-independent one (mingw-w64 has only its own).
func PkgConfigLibDir(triple string) string {
	if IsWindowsTriple(triple) {
		return "/usr/" + triple + "/lib/pkgconfig"
	}
	return "/usr/lib/" + triple + "/pkgconfig:/usr/" + triple + "/lib/pkgconfig:/usr/share/pkgconfig"
}

var (
	buildTripleOnce sync.Once
	buildTriple     string
)

// goarchTriple is the build triple of a Linux host by GOARCH, for when the
// compiler cannot say.
var goarchTriple = map[string]string{
	"amd64": "x86_64-linux-gnu", "386": "i686-linux-gnu", "arm64": "aarch64-linux-gnu",
	"arm": "arm-linux-gnueabihf", "s390x": "s390x-linux-gnu", "ppc64le": "powerpc64le-linux-gnu",
	"riscv64": "riscv64-linux-gnu",
}

// BuildTriple returns the GNU triple of this machine as its C compiler
// names it (`cc -dumpmachine`, e.g. x86_64-linux-gnu), asked once per
// process; without a compiler, the usual Debian triple of GOARCH.
func BuildTriple() string {
	buildTripleOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
		defer cancel()
		for _, cc := range []string{"cc", "gcc"} {
			path, err := exec.LookPath(cc)
			if err != nil {
				continue
			}
			out, _, err := run(ctx, "", []string{path, "-dumpmachine"}, []string{"LC_ALL=C", "PATH=/usr/local/bin:/usr/bin:/bin"})
			if t := strings.TrimSpace(string(out)); err == nil && checkTriple(t) == nil {
				buildTriple = t
				return
			}
		}
		buildTriple = goarchTriple[runtime.GOARCH]
		if buildTriple == "" {
			buildTriple = runtime.GOARCH + "-linux-gnu"
		}
	})
	return buildTriple
}

// qemuArch maps a triple's architecture part to qemu-user's name for it
// where the two differ.
var qemuArch = map[string]string{
	"i386": "i386", "i486": "i386", "i586": "i386", "i686": "i386",
	"powerpc": "ppc", "powerpc64": "ppc64", "powerpc64le": "ppc64le",
	"armv7l": "arm", "armv7": "arm", "armv6": "arm", "armv5tel": "arm", "armel": "arm", "armhf": "arm",
	"armeb":       "armeb",
	"arm64":       "aarch64",
	"mipsisa32r6": "mips", "mipsisa32r6el": "mipsel",
	"mipsisa64r6": "mips64", "mipsisa64r6el": "mips64el",
	"sparc64": "sparc64", "sparcv9": "sparc64",
}

// QemuName returns the qemu-user binary that runs binaries of a triple:
// s390x -> qemu-s390x, i686 -> qemu-i386, arm* -> qemu-arm, powerpc ->
// qemu-ppc, powerpc64le -> qemu-ppc64le, aarch64 -> qemu-aarch64, riscv64 ->
// qemu-riscv64; other architectures use their own name.
func QemuName(triple string) string {
	arch, _, _ := strings.Cut(triple, "-")
	if q, ok := qemuArch[arch]; ok {
		return "qemu-" + q
	}
	if strings.HasPrefix(arch, "arm") && !strings.HasSuffix(arch, "eb") {
		return "qemu-arm"
	}
	return "qemu-" + arch
}

// tripleArch is the canonical architecture a cross triple names.
func tripleArch(triple string) string { return platform.CanonicalArch(triple) }
