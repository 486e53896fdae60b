package sysinfo

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// probeTimeout bounds one Probe in tests; a warm probe takes ~0.1-0.4 s.
const probeTimeout = 60 * time.Second

var versionRE = regexp.MustCompile(`^\d+(\.\d+)+$`)

// requireCompiler skips the test when the target's compiler is not
// installed, and only then: a missing emulator must fail the test.
func requireCompiler(t *testing.T, spec TargetSpec) {
	t.Helper()
	if _, err := exec.LookPath(spec.Toolchain().CC); err != nil {
		t.Skipf("%s not installed: %v", spec.Toolchain().CC, err)
	}
}

func TestProbe(t *testing.T) {
	tests := []struct {
		name     string
		target   string
		want     *kilnv1.SystemInfo // identity fields to match exactly
		libc     string
		emulated bool
		abi      string // more fields to match, "field=value ..."
	}{
		{"the native target is x86_64 little LP64 glibc 2.36", "native",
			&kilnv1.SystemInfo{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", LibcVersion: "2.36"}, "glibc", false,
			"char_signed=signed align_long_long=8 align_double=8 align_pointer=8 sizeof_long_double=16 sizeof_size_t=8 sizeof_wchar_t=4 page_size=4096"},
		{"the musl target is x86_64 LP64 musl", "musl",
			&kilnv1.SystemInfo{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64"}, "musl", false, "char_signed=signed"},
		{"s390x is big-endian LP64 and emulated", "cross:s390x-linux-gnu",
			&kilnv1.SystemInfo{Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64"}, "glibc", true, "char_signed=unsigned sizeof_long_double=16"},
		{"i686 is little-endian ILP32 under qemu-i386", "cross:i686-linux-gnu",
			&kilnv1.SystemInfo{Os: "linux", Arch: "i686", Endian: "little", DataModel: "ILP32"}, "glibc", true,
			"char_signed=signed align_long_long=4 align_double=4 sizeof_long_double=12"},
		{"powerpc is big-endian ILP32", "cross:powerpc-linux-gnu",
			&kilnv1.SystemInfo{Os: "linux", Arch: "ppc", Endian: "big", DataModel: "ILP32"}, "glibc", true, "char_signed=unsigned"},
		{"armhf is little-endian ILP32 armv7", "cross:arm-linux-gnueabihf",
			&kilnv1.SystemInfo{Os: "linux", Arch: "armv7", Endian: "little", DataModel: "ILP32"}, "glibc", true,
			"char_signed=unsigned align_long_long=8 align_double=8 sizeof_long_double=8"},
		// Issue 18: eight more architectures, each with what sets it apart.
		{"aarch64 has an unsigned char", "cross:aarch64-linux-gnu",
			&kilnv1.SystemInfo{Os: "linux", Arch: "aarch64", Endian: "little", DataModel: "LP64"}, "glibc", true, "char_signed=unsigned sizeof_long_double=16"},
		{"riscv64 has an unsigned char", "cross:riscv64-linux-gnu",
			&kilnv1.SystemInfo{Os: "linux", Arch: "riscv64", Endian: "little", DataModel: "LP64"}, "glibc", true, "char_signed=unsigned"},
		{"ppc64le is little-endian", "cross:powerpc64le-linux-gnu",
			&kilnv1.SystemInfo{Os: "linux", Arch: "ppc64le", Endian: "little", DataModel: "LP64"}, "glibc", true, "char_signed=unsigned"},
		{"ppc64 is big-endian", "cross:powerpc64-linux-gnu",
			&kilnv1.SystemInfo{Os: "linux", Arch: "ppc64", Endian: "big", DataModel: "LP64"}, "glibc", true, "char_signed=unsigned"},
		{"mips64el is little-endian LP64 with a signed char", "cross:mips64el-linux-gnuabi64",
			&kilnv1.SystemInfo{Os: "linux", Arch: "mips64el", Endian: "little", DataModel: "LP64"}, "glibc", true, "char_signed=signed"},
		{"sparc64 has 8 KiB pages", "cross:sparc64-linux-gnu",
			&kilnv1.SystemInfo{Os: "linux", Arch: "sparc64", Endian: "big", DataModel: "LP64"}, "glibc", true, "char_signed=signed page_size=8192"},
		{"m68k aligns everything to 2 bytes", "cross:m68k-linux-gnu",
			&kilnv1.SystemInfo{Os: "linux", Arch: "m68k", Endian: "big", DataModel: "ILP32"}, "glibc", true,
			"align_long_long=2 align_double=2 align_pointer=2 sizeof_long_double=12"},
		{"hppa has a 64-bit long double", "cross:hppa-linux-gnu",
			&kilnv1.SystemInfo{Os: "linux", Arch: "hppa", Endian: "big", DataModel: "ILP32"}, "glibc", true, "sizeof_long_double=8"},
		// Windows, under wine (the first run makes a wine prefix: tens of seconds).
		{"windows x86_64 is LLP64 with a 2-byte wchar_t", "cross:x86_64-w64-mingw32",
			&kilnv1.SystemInfo{Os: "windows", Arch: "x86_64", Endian: "little", DataModel: "LLP64"}, "msvcrt", true,
			"sizeof_long=4 sizeof_wchar_t=2 char_signed=signed"},
		{"windows i686 aligns double to 8, unlike i686 Linux", "cross:i686-w64-mingw32",
			&kilnv1.SystemInfo{Os: "windows", Arch: "i686", Endian: "little", DataModel: "ILP32"}, "msvcrt", true,
			"align_double=8 align_long_long=8 sizeof_wchar_t=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec, err := ParseTarget(tt.target)
			if err != nil {
				t.Fatal(err)
			}
			requireCompiler(t, spec)
			if tt.target == "native" && !isAmd64() {
				t.Skip("expectations are for an x86_64 host")
			}
			timeout := probeTimeout
			if spec.Toolchain().Windows {
				timeout = 2*wineRunTimeout + probeTimeout
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			workDir := t.TempDir()
			start := time.Now()
			target, err := Probe(ctx, spec, workDir)
			if err != nil {
				t.Fatalf("Probe: %v", err)
			}
			t.Logf("%s in %v: %s", tt.target, time.Since(start).Round(time.Millisecond), platform.Describe(target.System))

			info := target.System
			if target.Id != tt.target {
				t.Errorf("Id = %q, want %q", target.Id, tt.target)
			}
			for _, f := range []string{"os", "arch", "endian", "data_model", "libc_version"} {
				if want := platform.Value(tt.want, f); want != "" && platform.Value(info, f) != want {
					t.Errorf("%s = %q, want %q", f, platform.Value(info, f), want)
				}
			}
			if info.Libc != tt.libc || !versionRE.MatchString(info.LibcVersion) {
				t.Errorf("libc = %q %q, want %s with a version", info.Libc, info.LibcVersion, tt.libc)
			}
			for _, kv := range strings.Fields(tt.abi) {
				f, want, _ := strings.Cut(kv, "=")
				if got := platform.Value(info, f); got != want && !(f == "sizeof_long" && decimalOf(info.SizeofLong) == want) {
					t.Errorf("%s = %q, want %q", f, got, want)
				}
			}
			if info.CharSigned == nil || info.AlignPointer == 0 || info.SizeofSizeT != info.SizeofPointer || info.PageSize == 0 {
				t.Errorf("the ABI fields are not all measured: %v", info)
			}
			if info.CharBit != 8 {
				t.Errorf("char_bit = %d", info.CharBit)
			}
			if got := platform.DataModel(info.SizeofShort, info.SizeofInt, info.SizeofLong, info.SizeofLongLong, info.SizeofPointer); got != info.DataModel {
				t.Errorf("sizes give %q, data_model says %q", got, info.DataModel)
			}
			if info.Compiler != "gcc" || !versionRE.MatchString(info.CompilerVersion) || info.CompilerVersion[:3] != "12." { // mingw-w64's says 12.0.0
				t.Errorf("compiler = %q %q, want gcc 12.x", info.Compiler, info.CompilerVersion)
			}
			if info.Emulated != tt.emulated {
				t.Errorf("emulated = %v, want %v", info.Emulated, tt.emulated)
			}
			if info.Tools["cc"] != info.CompilerVersion {
				t.Errorf("tools[cc] = %q, want the compiler version %q", info.Tools["cc"], info.CompilerVersion)
			}
			if _, err := exec.LookPath("make"); err == nil && info.Tools["make"] == "" {
				t.Errorf("make is installed but missing from tools %v", info.Tools)
			}
			if info.Cpus == 0 || info.MemoryBytes == 0 {
				t.Errorf("cpus = %d, memory = %d", info.Cpus, info.MemoryBytes)
			}
			if entries, _ := os.ReadDir(workDir); len(entries) != 0 {
				t.Errorf("Probe left %d entries in its work directory", len(entries))
			}
		})
	}
}

func decimalOf(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func isAmd64() bool { return platform.CanonicalArch(runtime.GOARCH) == "x86_64" }

func TestProbeOfAMissingCompilerFails(t *testing.T) {
	spec, err := ParseTarget("cross:nonexistent-linux-gnu")
	if err != nil {
		t.Fatal(err)
	}
	workDir := t.TempDir()
	_, err = Probe(context.Background(), spec, workDir)
	if !errors.Is(err, ErrProbeFailed) || !errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("err = %v, want ErrProbeFailed and exec.ErrNotFound", err)
	}
	var pe *ProbeError
	if !errors.As(err, &pe) || pe.Target != spec.ID {
		t.Errorf("err %v is not a *ProbeError for %s", err, spec.ID)
	}
	if entries, _ := os.ReadDir(workDir); len(entries) != 0 {
		t.Errorf("failed Probe left %d entries in its work directory", len(entries))
	}
}

func TestProbeOfACanceledContextFails(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	spec, _ := ParseTarget("native")
	if _, err := Probe(ctx, spec, t.TempDir()); !errors.Is(err, ErrProbeFailed) {
		t.Fatalf("err = %v, want ErrProbeFailed", err)
	}
}

func TestRunProgramFailures(t *testing.T) {
	cc := TargetSpec{Kind: KindNative}.Toolchain().CC
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("%s not installed", cc)
	}
	broken := filepath.Join(t.TempDir(), "broken-cc")
	script := "#!/bin/sh\necho \"broken compiler cannot build $4\" >&2\nexit 1\n"
	if err := os.WriteFile(broken, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		tc     Toolchain
		stderr string // expected in the error, "" for no check
	}{
		{"a compiler that fails reports its stderr", Toolchain{CC: broken}, "broken compiler cannot build /"},
		{"a missing emulator fails", Toolchain{CC: cc, Emulator: []string{"qemu-nonexistent-arch", "-L", "/nonexistent"}}, ""},
		{"a program that prints nothing fails", Toolchain{CC: cc, Emulator: []string{"true"}}, ""},
		{"a program that exits non-zero fails", Toolchain{CC: cc, Emulator: []string{"false"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := TargetSpec{ID: "test", Kind: KindNative}
			_, err := runProgram(context.Background(), spec, tt.tc, t.TempDir())
			if !errors.Is(err, ErrProbeFailed) {
				t.Fatalf("err = %v, want ErrProbeFailed", err)
			}
			var pe *ProbeError
			if !errors.As(err, &pe) {
				t.Fatalf("err %T is not a *ProbeError", err)
			}
			if tt.stderr != "" && !regexp.MustCompile(regexp.QuoteMeta(tt.stderr)).MatchString(pe.Stderr) {
				t.Errorf("stderr %q does not mention %q", pe.Stderr, tt.stderr)
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	tests := []struct {
		name string
		out  string
		ok   bool
	}{
		{"complete output parses", "os=linux\narch=s390x\nend=1\n", true},
		{"output without the end marker is refused", "os=linux\narch=s390x\n", false},
		{"a line without = is refused", "os=linux\ngarbage\nend=1\n", false},
		{"empty output is refused", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := parseValues([]byte(tt.out))
			if (err == nil) != tt.ok {
				t.Fatalf("parseValues = %v, %v", v, err)
			}
			if tt.ok && v["arch"] != "s390x" {
				t.Errorf("arch = %q", v["arch"])
			}
		})
	}
}

func TestLocalAgreesWithProbe(t *testing.T) {
	spec, _ := ParseTarget("native")
	requireCompiler(t, spec)
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()

	start := time.Now()
	local, err := Local(ctx)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	// Local must stay fast enough for startcompile's start; it is ~1 ms. The
	// bound is loose for loaded CI machines.
	if took > 500*time.Millisecond {
		t.Errorf("Local took %v", took)
	}
	probed, err := Probe(ctx, spec, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"os", "arch", "endian", "data_model", "char_bit", "libc", "libc_version"} {
		if l, p := platform.Value(local, f), platform.Value(probed.System, f); l != p || l == "" {
			t.Errorf("%s: Local %q, Probe %q", f, l, p)
		}
	}
	if local.SizeofPointer != probed.System.SizeofPointer || local.SizeofLong != probed.System.SizeofLong {
		t.Errorf("sizes differ: Local %v, Probe %v", local, probed.System)
	}
	if local.Compiler != "" || local.CompilerVersion != "" || local.Emulated {
		t.Errorf("Local set compiler %q %q emulated %v", local.Compiler, local.CompilerVersion, local.Emulated)
	}
	if local.Cpus == 0 || local.MemoryBytes == 0 {
		t.Errorf("cpus = %d, memory = %d", local.Cpus, local.MemoryBytes)
	}
}

func TestMuslVersionFromTheLoader(t *testing.T) {
	const loader = "/lib/ld-musl-x86_64.so.1"
	if _, err := os.Stat(loader); err != nil {
		t.Skipf("%s not installed", loader)
	}
	v, err := muslVersion(context.Background(), nil, loader)
	if err != nil || !versionRE.MatchString(v) {
		t.Fatalf("muslVersion = %q, %v", v, err)
	}
	if _, err := muslVersion(context.Background(), nil, "/bin/true"); err == nil {
		t.Error("a loader without a banner gave no error")
	}
}

func TestIsMuslLoader(t *testing.T) {
	for in, want := range map[string]bool{
		"/lib/ld-musl-x86_64.so.1":      true,
		"/lib/ld-musl-armhf.so.1":       true,
		"/lib64/ld-linux-x86-64.so.2":   false,
		"/lib/ld-linux-armhf.so.3":      false,
		"":                              false,
		"/usr/lib/musl/lib/libc.so":     false,
		"/opt/x/lib/ld-musl-s390x.so.1": true,
	} {
		if got := isMuslLoader(in); got != want {
			t.Errorf("isMuslLoader(%q) = %v", in, got)
		}
	}
}
