package sysinfo

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/platform"
)

// TestMappedGlibcAgreesWithGetconf: the version read from the mapped
// glibc's banner is the one getconf prints (where this test binary maps
// glibc and getconf exists).
func TestMappedGlibcAgreesWithGetconf(t *testing.T) {
	got, ok := mappedGlibc()
	if !ok {
		t.Skip("this test binary maps no glibc (static build or another libc)")
	}
	out, err := exec.Command("getconf", "GNU_LIBC_VERSION").Output()
	if err != nil {
		t.Skipf("getconf: %v", err)
	}
	if want := strings.TrimPrefix(strings.TrimSpace(string(out)), "glibc "); got != want {
		t.Fatalf("mapped glibc %q, getconf says %q", got, want)
	}
}

func TestGlibcVersionReadsTheBannerOnly(t *testing.T) {
	for _, tc := range []struct {
		lib, want string
		ok        bool
	}{
		{"\x00xx GNU C Library (Debian GLIBC 2.36-9+deb12u4) stable release version 2.36.\nCopyright", "2.36", true},
		{"GNU C Library (GNU libc) release release version 2.39.\n", "2.39", true},
		{"release version 2.36. with no banner before it", "", false},
		{"GNU C Library with no version after it", "", false},
		{"GNU C Library release version .", "", false},
		{"GNU C Library release version 7", "", false},
	} {
		got, ok := glibcVersion([]byte(tc.lib))
		if got != tc.want || ok != tc.ok {
			t.Errorf("glibcVersion(%q) = %q, %v; want %q, %v", tc.lib, got, ok, tc.want, tc.ok)
		}
	}
}

// TestRodataGlibcAgreesWithTheWholeFile: the banner read from the mapped
// glibc's .rodata alone names the version a scan of the whole file finds.
func TestRodataGlibcAgreesWithTheWholeFile(t *testing.T) {
	path := mappedGlibcPath()
	if path == "" {
		t.Skip("this test binary maps no glibc")
	}
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, ok := glibcVersion(whole)
	if !ok {
		t.Fatalf("no banner in %s", path)
	}
	got, ok := rodataGlibc(path)
	if !ok || got != want {
		t.Fatalf("rodataGlibc(%s) = %q, %v; the whole file says %q", path, got, ok, want)
	}
	if _, ok := rodataGlibc("/proc/self/maps"); ok {
		t.Fatal("rodataGlibc found a version in a file that is not ELF")
	}
}

// TestLocalPinnedAgreesWithLocal: every field a request pins by default
// has the value Local measures, so a new default-pinned field that
// LocalPinned does not fill fails here.
func TestLocalPinnedAgreesWithLocal(t *testing.T) {
	ctx := context.Background()
	full, err := Local(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := LocalPinned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append([]string{"char_bit"}, platform.DefaultPinnedFields...) {
		if l, p := platform.Value(full, f), platform.Value(pinned, f); l != p || l == "" {
			t.Errorf("%s: Local %q, LocalPinned %q", f, l, p)
		}
	}
}

// TestSystemGlibcAgreesWithGetconf: the glibc a static program finds by
// path (no libc mapped, no process started) is the one getconf prints.
func TestSystemGlibcAgreesWithGetconf(t *testing.T) {
	out, err := exec.Command("getconf", "GNU_LIBC_VERSION").Output()
	if err != nil {
		t.Skipf("getconf: %v (not a glibc system)", err)
	}
	want := strings.TrimPrefix(strings.TrimSpace(string(out)), "glibc ")
	got, ok := systemGlibc(systemGlibcPaths())
	if !ok || got != want {
		t.Fatalf("systemGlibc = %q, %v; getconf says %q", got, ok, want)
	}
}

// TestSystemGlibcSkipsOtherMachinesAndFilesThatAreNotGlibc: a cross
// toolchain's libc.so.6 (another machine), a file that only spells the
// banner and a missing path are passed over for the machine's own glibc,
// and with nothing else left there is no answer (the caller asks getconf).
func TestSystemGlibcSkipsOtherMachinesAndFilesThatAreNotGlibc(t *testing.T) {
	own := ""
	for _, p := range systemGlibcPaths() {
		if _, err := os.Stat(p); err == nil {
			own = p
			break
		}
	}
	if own == "" {
		t.Skip("no system libc.so.6 (not a glibc system)")
	}
	want, ok := rodataGlibc(own)
	if !ok {
		t.Fatalf("no banner in %s", own)
	}
	var foreign []string
	for _, p := range []string{"/usr/s390x-linux-gnu/lib/libc.so.6", "/usr/aarch64-linux-gnu/lib/libc.so.6", "/usr/powerpc64le-linux-gnu/lib/libc.so.6"} {
		if id, ok := elfIdent(p); ok {
			if self, _ := elfIdent("/proc/self/exe"); id != self {
				foreign = append(foreign, p)
			}
		}
	}
	if len(foreign) == 0 {
		t.Skip("no cross toolchain's libc.so.6 installed (scripts/setup.sh installs them)")
	}
	// Not ELF, yet carrying the banner of another version.
	fake := filepath.Join(t.TempDir(), "libc.so.6")
	if err := os.WriteFile(fake, []byte("GNU C Library (fake) stable release version 9.99.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	decoys := append(append([]string{filepath.Join(t.TempDir(), "missing")}, foreign...), fake)
	if got, ok := systemGlibc(append(decoys, own)); !ok || got != want {
		t.Fatalf("systemGlibc(decoys, %s) = %q, %v; want %q from %s", own, got, ok, want, own)
	}
	if got, ok := systemGlibc(decoys); ok {
		t.Fatalf("systemGlibc(decoys only) = %q; want no answer", got)
	}
}

// TestLocalPinnedStartsNoProcessOnAGlibcSystem: with no program reachable
// on PATH, LocalPinned still names glibc, whether this test binary maps
// it (dynamic) or not (CGO_ENABLED=0, as released).
func TestLocalPinnedStartsNoProcessOnAGlibcSystem(t *testing.T) {
	if _, err := exec.LookPath("getconf"); err != nil {
		t.Skip("no getconf: not a glibc system")
	}
	if out, err := exec.Command("getconf", "GNU_LIBC_VERSION").Output(); err != nil || !strings.HasPrefix(string(out), "glibc ") {
		t.Skipf("getconf GNU_LIBC_VERSION: %q, %v: not a glibc system", out, err)
	}
	t.Setenv("PATH", t.TempDir())
	info, err := LocalPinned(context.Background())
	if err != nil || info.GetLibc() != "glibc" {
		t.Fatalf("LocalPinned with an empty PATH: libc %q, %v; want glibc", info.GetLibc(), err)
	}
}
