package sysinfo

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		name, in string
		want     TargetSpec
		ok       bool
	}{
		{"native is the native kind", "native", TargetSpec{ID: "native", Kind: KindNative}, true},
		{"musl is the musl kind", "musl", TargetSpec{ID: "musl", Kind: KindMusl}, true},
		{"a cross triple is kept", "cross:s390x-linux-gnu", TargetSpec{ID: "cross:s390x-linux-gnu", Kind: KindCross, Triple: "s390x-linux-gnu"}, true},
		{"a four-part triple is accepted", "cross:x86_64-pc-linux-gnu", TargetSpec{ID: "cross:x86_64-pc-linux-gnu", Kind: KindCross, Triple: "x86_64-pc-linux-gnu"}, true},
		{"a triple with an underscore and digits is accepted", "cross:mips64el-linux-gnuabi64", TargetSpec{ID: "cross:mips64el-linux-gnuabi64", Kind: KindCross, Triple: "mips64el-linux-gnuabi64"}, true},
		{"an empty string is refused", "", TargetSpec{}, false},
		{"a capitalized kind is refused", "Native", TargetSpec{}, false},
		{"cross without a triple is refused", "cross:", TargetSpec{}, false},
		{"a bare triple is refused", "s390x-linux-gnu", TargetSpec{}, false},
		{"a one-part triple is refused", "cross:s390x", TargetSpec{}, false},
		{"a five-part triple is refused", "cross:a-b-c-d-e", TargetSpec{}, false},
		{"an empty triple part is refused", "cross:s390x--gnu", TargetSpec{}, false},
		{"a slash in a triple is refused", "cross:../bin-linux-gnu", TargetSpec{}, false},
		{"a space in a triple is refused", "cross:s390x-linux gnu", TargetSpec{}, false},
		{"an upper-case triple is refused", "cross:S390X-linux-gnu", TargetSpec{}, false},
		{"an overlong triple is refused", "cross:" + strings.Repeat("a", 60) + "-linux-gnu", TargetSpec{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTarget(tt.in)
			if !tt.ok {
				if !errors.Is(err, ErrBadTarget) {
					t.Fatalf("ParseTarget(%q) = %+v, %v; want ErrBadTarget", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseTarget(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestQemuName(t *testing.T) {
	tests := []struct{ name, triple, want string }{
		{"s390x runs under qemu-s390x", "s390x-linux-gnu", "qemu-s390x"},
		{"i686 runs under qemu-i386", "i686-linux-gnu", "qemu-i386"},
		{"arm hard-float runs under qemu-arm", "arm-linux-gnueabihf", "qemu-arm"},
		{"armv7l runs under qemu-arm", "armv7l-unknown-linux-gnueabihf", "qemu-arm"},
		{"big-endian arm runs under qemu-armeb", "armeb-linux-gnueabi", "qemu-armeb"},
		{"powerpc runs under qemu-ppc", "powerpc-linux-gnu", "qemu-ppc"},
		{"powerpc64 runs under qemu-ppc64", "powerpc64-linux-gnu", "qemu-ppc64"},
		{"powerpc64le runs under qemu-ppc64le", "powerpc64le-linux-gnu", "qemu-ppc64le"},
		{"aarch64 runs under qemu-aarch64", "aarch64-linux-gnu", "qemu-aarch64"},
		{"riscv64 runs under qemu-riscv64", "riscv64-linux-gnu", "qemu-riscv64"},
		{"mipsel runs under qemu-mipsel", "mipsel-linux-gnu", "qemu-mipsel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := QemuName(tt.triple); got != tt.want {
				t.Errorf("QemuName(%q) = %q, want %q", tt.triple, got, tt.want)
			}
		})
	}
}

// envValue returns the value of NAME in env and whether it is present.
func envValue(env []string, name string) (string, bool) {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func TestToolchainCrossSetsToolsLoaderPrefixAndEmulator(t *testing.T) {
	spec, err := ParseTarget("cross:s390x-linux-gnu")
	if err != nil {
		t.Fatal(err)
	}
	tc := spec.Toolchain()
	if tc.CC != "s390x-linux-gnu-gcc" {
		t.Errorf("CC = %q", tc.CC)
	}
	if want := []string{"qemu-s390x", "-L", "/usr/s390x-linux-gnu"}; !slices.Equal(tc.Emulator, want) {
		t.Errorf("Emulator = %q, want %q", tc.Emulator, want)
	}
	want := map[string]string{
		"CC":                "s390x-linux-gnu-gcc",
		"AR":                "s390x-linux-gnu-ar",
		"RANLIB":            "s390x-linux-gnu-ranlib",
		"STRIP":             "s390x-linux-gnu-strip",
		"LD":                "s390x-linux-gnu-ld",
		"NM":                "s390x-linux-gnu-nm",
		"OBJCOPY":           "s390x-linux-gnu-objcopy",
		"PKG_CONFIG_LIBDIR": "/usr/lib/s390x-linux-gnu/pkgconfig:/usr/s390x-linux-gnu/lib/pkgconfig:/usr/share/pkgconfig",
		"QEMU_LD_PREFIX":    "/usr/s390x-linux-gnu",
		"KILN_EMULATOR":     "qemu-s390x -L /usr/s390x-linux-gnu",
		"KILN_HOST_TRIPLE":  "s390x-linux-gnu",
		"KILN_BUILD_TRIPLE": BuildTriple(),
	}
	if tc.HostTriple != "s390x-linux-gnu" || tc.BuildTriple == tc.HostTriple {
		t.Errorf("triples build %q host %q, want a cross pair", tc.BuildTriple, tc.HostTriple)
	}
	for name, v := range want {
		if got, ok := envValue(tc.Env, name); !ok || got != v {
			t.Errorf("Env %s = %q (present %v), want %q", name, got, ok, v)
		}
	}
	_, hasCXX := envValue(tc.Env, "CXX")
	_, lookErr := exec.LookPath("s390x-linux-gnu-g++")
	if hasCXX != (lookErr == nil) {
		t.Errorf("CXX present = %v, but s390x-linux-gnu-g++ installed = %v", hasCXX, lookErr == nil)
	}
}

func TestToolchainI686RunsUnderQemuI386(t *testing.T) {
	// A dynamic i686 binary is native ELF class, so binfmt never sends it to
	// qemu: the emulator must be explicit.
	spec, _ := ParseTarget("cross:i686-linux-gnu")
	tc := spec.Toolchain()
	if want := []string{"qemu-i386", "-L", "/usr/i686-linux-gnu"}; !slices.Equal(tc.Emulator, want) {
		t.Errorf("Emulator = %q, want %q", tc.Emulator, want)
	}
	if v, _ := envValue(tc.Env, "KILN_EMULATOR"); v != "qemu-i386 -L /usr/i686-linux-gnu" {
		t.Errorf("KILN_EMULATOR = %q", v)
	}
}

func TestToolchainNativeAndMuslRunDirectly(t *testing.T) {
	for _, tt := range []struct{ id, cc string }{{"native", ""}, {"musl", "musl-gcc"}} {
		spec, _ := ParseTarget(tt.id)
		tc := spec.Toolchain()
		if tt.cc != "" && tc.CC != tt.cc {
			t.Errorf("%s: CC = %q, want %q", tt.id, tc.CC, tt.cc)
		}
		if tt.id == "native" && tc.CC != "cc" && tc.CC != "gcc" {
			t.Errorf("native CC = %q, want cc or gcc", tc.CC)
		}
		if tc.Emulator != nil {
			t.Errorf("%s: Emulator = %q, want none", tt.id, tc.Emulator)
		}
		if v, ok := envValue(tc.Env, "KILN_EMULATOR"); !ok || v != "" {
			t.Errorf("%s: KILN_EMULATOR = %q (present %v), want present and empty", tt.id, v, ok)
		}
		if v, _ := envValue(tc.Env, "CC"); v != tc.CC {
			t.Errorf("%s: Env CC = %q, want %q", tt.id, v, tc.CC)
		}
		if _, ok := envValue(tc.Env, "QEMU_LD_PREFIX"); ok {
			t.Errorf("%s: QEMU_LD_PREFIX set for a native target", tt.id)
		}
		// Not a cross build: configure must not get --host.
		b, _ := envValue(tc.Env, "KILN_BUILD_TRIPLE")
		h, _ := envValue(tc.Env, "KILN_HOST_TRIPLE")
		if b == "" || b != h || b != BuildTriple() {
			t.Errorf("%s: KILN_BUILD_TRIPLE %q, KILN_HOST_TRIPLE %q, want both %q", tt.id, b, h, BuildTriple())
		}
	}
}

func TestBuildTriple_IsTheCompilersOwn(t *testing.T) {
	out, err := exec.Command("cc", "-dumpmachine").Output()
	if err != nil {
		t.Skipf("no cc: %v", err)
	}
	if got, want := BuildTriple(), strings.TrimSpace(string(out)); got != want {
		t.Errorf("BuildTriple() = %q, want cc -dumpmachine's %q", got, want)
	}
}

// A Windows target is a cross target whose quirks its toolchain holds:
// wine (64- or 32-bit) instead of qemu, no loader prefix, .exe programs,
// a 32-bit prefix for i686, and waiting for wine's server after a step.
func TestToolchainWindowsRunsUnderWine(t *testing.T) {
	for _, c := range []struct {
		triple, winArch string
		wines           []string // acceptable launchers
	}{
		{"x86_64-w64-mingw32", "win64", []string{"wine64", "/usr/lib/wine/wine64", "wine", "/usr/lib/wine/wine"}},
		{"i686-w64-mingw32", "win32", []string{"wine", "/usr/lib/wine/wine"}},
	} {
		spec, err := ParseTarget("cross:" + c.triple)
		if err != nil {
			t.Fatal(err)
		}
		tc := spec.Toolchain()
		if !tc.Windows || tc.ExeSuffix != ".exe" || len(tc.Emulator) != 1 || !slices.Contains(c.wines, tc.Emulator[0]) {
			t.Errorf("%s: Windows %v, suffix %q, emulator %q", c.triple, tc.Windows, tc.ExeSuffix, tc.Emulator)
		}
		if !strings.HasSuffix(tc.AfterStep, "wineserver -w") {
			t.Errorf("%s: AfterStep = %q, want wineserver -w", c.triple, tc.AfterStep)
		}
		want := map[string]string{
			"CC": c.triple + "-gcc", "AR": c.triple + "-ar", "KILN_EXEEXT": ".exe", "WINEARCH": c.winArch,
			"WINEDEBUG": "-all", "KILN_EMULATOR": tc.Emulator[0], "KILN_HOST_TRIPLE": c.triple,
			"PKG_CONFIG_LIBDIR": "/usr/" + c.triple + "/lib/pkgconfig",
		}
		for name, v := range want {
			if got, ok := envValue(tc.Env, name); !ok || got != v {
				t.Errorf("%s: Env %s = %q (present %v), want %q", c.triple, name, got, ok, v)
			}
		}
		for _, name := range []string{"QEMU_LD_PREFIX", "READELF"} {
			if v, ok := envValue(tc.Env, name); ok {
				t.Errorf("%s: Env has %s=%q", c.triple, name, v)
			}
		}
		files := spec.Files(&kilnv1.SystemInfo{Os: "windows", Arch: platform.CanonicalArch(c.triple), Endian: "little"})
		for _, f := range files {
			if !strings.Contains(f.Content, "Windows") && !strings.Contains(f.Content, "'windows'") {
				t.Errorf("%s: %s does not name Windows:\n%s", c.triple, f.Name, f.Content)
			}
		}
	}
	linux, _ := ParseTarget("cross:s390x-linux-gnu")
	if tc := linux.Toolchain(); tc.Windows || tc.ExeSuffix != "" || tc.AfterStep != "" {
		t.Errorf("s390x: Windows %v, suffix %q, after %q", tc.Windows, tc.ExeSuffix, tc.AfterStep)
	}
	if v, ok := envValue(linux.Toolchain().Env, "KILN_EXEEXT"); !ok || v != "" {
		t.Errorf("s390x: KILN_EXEEXT = %q (present %v), want present and empty", v, ok)
	}
}

// The binfmt_misc rule for a Windows target matches the probe's own PE
// signature and machine at its e_lfanew.
func TestPEMagic(t *testing.T) {
	h := make([]byte, 0x200)
	copy(h, "MZ")
	h[0x3c] = 0x80
	copy(h[0x80:], "PE\x00\x00\x4c\x01")
	off, magic, mask, err := peMagic(h)
	if err != nil || off != 0x80 || string(magic) != "PE\x00\x00\x4c\x01" || len(mask) != 6 {
		t.Fatalf("peMagic = %d %q %x %v", off, magic, mask, err)
	}
	h[0x3c] = 0xff
	h[0x3d] = 0x01 // e_lfanew 0x1ff: beyond the bytes read
	if _, _, _, err := peMagic(h); err == nil {
		t.Error("a PE header beyond the first bytes was accepted")
	}
	if _, _, _, err := peMagic([]byte("MZ")); err == nil {
		t.Error("a 2-byte file was accepted")
	}
}
