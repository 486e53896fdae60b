package sysinfo

import (
	"context"
	"os"
	"os/exec"
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
