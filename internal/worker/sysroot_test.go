package worker

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRelocatePkgConfigAndSysrootEnv: the dependencies unpacked in a host
// directory are named as the steps see them, at the fixed path under
// bubblewrap, so that what a build records of them is the same on every
// volunteer.
func TestRelocatePkgConfigAndSysrootEnv(t *testing.T) {
	root := t.TempDir()
	const seen = fixedSysroot
	pcDir := filepath.Join(root, "usr/local/lib/pkgconfig")
	if err := os.MkdirAll(pcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/local/include"), 0o755); err != nil {
		t.Fatal(err)
	}
	pc := "prefix=/usr/local\nincludedir=${prefix}/include\nlibdir=/usr/local/lib\n\nName: x\nCflags: -I${includedir}\nLibs: -L${libdir} -lx\n"
	if err := os.WriteFile(filepath.Join(pcDir, "x.pc"), []byte(pc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := relocatePkgConfig(root, seen); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(pcDir, "x.pc"))
	for _, want := range []string{"prefix=" + seen + "/usr/local\n", "libdir=" + seen + "/usr/local/lib\n", "includedir=${prefix}/include\n", "Libs: -L${libdir} -lx\n"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("relocated x.pc lacks %q:\n%s", want, got)
		}
	}
	env := sysrootEnv(root, seen, []string{"PKG_CONFIG_LIBDIR=/usr/lib/s390x-linux-gnu/pkgconfig", "LDFLAGS=-static"})
	for _, want := range []string{
		"KILN_SYSROOT=" + seen,
		"PKG_CONFIG_PATH=" + seen + "/usr/local/lib/pkgconfig",
		"CPPFLAGS=-I" + seen + "/usr/local/include",
		"LDFLAGS=-L" + seen + "/usr/local/lib -static",
		"LD_LIBRARY_PATH=" + seen + "/usr/local/lib",
		"CMAKE_PREFIX_PATH=" + seen + "/usr/local",
	} {
		if !slices.Contains(env, want) {
			t.Errorf("env %q lacks %q", env, want)
		}
	}
	// The musl target: no LD_LIBRARY_PATH (the host's glibc tools would
	// load the musl libraries), a run path instead.
	musl := sysrootEnv(root, seen, []string{"CC=musl-gcc"})
	if !slices.Contains(musl, "LDFLAGS=-L"+seen+"/usr/local/lib -Wl,-rpath,"+seen+"/usr/local/lib") {
		t.Errorf("musl env %q lacks the run path", musl)
	}
	for _, kv := range musl {
		if strings.HasPrefix(kv, "LD_LIBRARY_PATH=") {
			t.Errorf("musl env sets %s", kv)
		}
	}
}
