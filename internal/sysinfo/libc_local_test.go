package sysinfo

import (
	"os/exec"
	"strings"
	"testing"
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
