package worker

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/sysinfo"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

var (
	sysX86   = &kilnv1.SystemInfo{Arch: "x86_64", Endian: "little", DataModel: "LP64", Libc: "glibc"}
	sysMusl  = &kilnv1.SystemInfo{Arch: "x86_64", Endian: "little", DataModel: "LP64", Libc: "musl"}
	sysS390x = &kilnv1.SystemInfo{Arch: "s390x", Endian: "big", DataModel: "LP64", Libc: "glibc"}
)

// compile builds src with cc into dir/out (args before the source, e.g.
// -c or -shared), skipping the test when cc is not installed.
func compile(t *testing.T, cc, dir, out string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("%s not installed", cc)
	}
	src := filepath.Join(dir, "x.c")
	if err := os.WriteFile(src, []byte("int answer(void) { return 42; }\nint main(void) { return answer() - 42; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, out)
	if b, err := exec.Command(cc, append(args, "-o", p, src)...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cc, err, b)
	}
	return p
}

// entriesOf collects a directory as an install tree would be.
func entriesOf(t *testing.T, dir string) []packEntry {
	t.Helper()
	es, err := collectTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func wantBuildError(t *testing.T, err error, parts ...string) {
	t.Helper()
	var be *buildError
	if !errors.As(err, &be) {
		t.Fatalf("error = %v, want a build error containing %q", err, parts)
	}
	for _, p := range parts {
		if !strings.Contains(be.reason, p) {
			t.Errorf("reason %q lacks %q", be.reason, p)
		}
	}
}

func TestCheckArtifactELF_HostBinaryOnCrossTargetFails(t *testing.T) {
	tree := t.TempDir()
	lib := filepath.Join(tree, "usr/local/lib")
	if err := os.MkdirAll(lib, 0o755); err != nil {
		t.Fatal(err)
	}
	compile(t, "cc", lib, "libfoo.so.1", "-shared", "-fPIC")
	if err := os.WriteFile(filepath.Join(tree, "README"), []byte("not ELF\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	checked, err := checkArtifactELF(entriesOf(t, tree), sysS390x)
	if !checked {
		t.Error("an s390x target was not checked")
	}
	wantBuildError(t, err, "artifact does not match the target: usr/local/lib/libfoo.so.1 is x86_64 (64-bit little-endian), target is s390x (64-bit big-endian)")
	if _, err := checkArtifactELF(entriesOf(t, tree), sysX86); err != nil {
		t.Errorf("the same tree on its own x86_64 target: %v", err)
	}
}

func TestCheckArtifactELF_CrossBinaryOnItsTargetPasses(t *testing.T) {
	tree := t.TempDir()
	compile(t, "s390x-linux-gnu-gcc", tree, "hello")
	compile(t, "s390x-linux-gnu-gcc", tree, "x.o", "-c")
	if _, err := checkArtifactELF(entriesOf(t, tree), sysS390x); err != nil {
		t.Errorf("s390x files on the s390x target: %v", err)
	}
	_, err := checkArtifactELF(entriesOf(t, tree), sysX86)
	wantBuildError(t, err, "hello is s390x (64-bit big-endian), target is x86_64 (64-bit little-endian)")
}

func TestCheckArtifactELF_StaticArchiveMembersAreChecked(t *testing.T) {
	tree := t.TempDir()
	obj := compile(t, "cc", tree, "a_member_with_a_long_name.o", "-c")
	if b, err := exec.Command("ar", "rcs", filepath.Join(tree, "libfoo.a"), obj).CombinedOutput(); err != nil {
		t.Skipf("ar: %v %s", err, b)
	}
	if err := os.Remove(obj); err != nil {
		t.Fatal(err)
	}
	_, err := checkArtifactELF(entriesOf(t, tree), sysS390x)
	wantBuildError(t, err, "libfoo.a(a_member_with_a_long_name.o) is x86_64")
	if _, err := checkArtifactELF(entriesOf(t, tree), sysX86); err != nil {
		t.Errorf("the archive on x86_64: %v", err)
	}
}

func TestCheckArtifactELF_GlibcBinaryOnMuslTargetFails(t *testing.T) {
	tree := t.TempDir()
	compile(t, "gcc", tree, "hello")
	_, err := checkArtifactELF(entriesOf(t, tree), sysMusl)
	wantBuildError(t, err, "hello has the program interpreter /lib64/ld-linux-x86-64.so.2 (not musl's), target's libc is musl")

	muslTree := t.TempDir()
	compile(t, "musl-gcc", muslTree, "hello")
	if _, err := checkArtifactELF(entriesOf(t, muslTree), sysMusl); err != nil {
		t.Errorf("a musl binary on the musl target: %v", err)
	}
	_, err = checkArtifactELF(entriesOf(t, muslTree), sysX86)
	wantBuildError(t, err, "has musl's program interpreter", "target's libc is glibc")
}

func TestCheckArtifactELF_HostileFiles(t *testing.T) {
	tree := t.TempDir()
	// ELF magic, then garbage: cannot be verified, so it fails.
	if err := os.WriteFile(filepath.Join(tree, "fake"), []byte("\x7fELF\x02\x01\x01garbage"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := checkArtifactELF(entriesOf(t, tree), sysX86)
	wantBuildError(t, err, "fake starts like an ELF file but cannot be read as one")

	tree = t.TempDir()
	// An archive whose member claims more bytes than the file has.
	if err := os.WriteFile(filepath.Join(tree, "libbad.a"), []byte("!<arch>\nx.o/            0           0     0     644     99999     `\n\x7fELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = checkArtifactELF(entriesOf(t, tree), sysX86)
	wantBuildError(t, err, "libbad.a is a malformed ar archive")

	// A symlink to a host binary is not followed (it stays a link in the artifact).
	tree = t.TempDir()
	if err := os.Symlink("/bin/sh", filepath.Join(tree, "sh")); err != nil {
		t.Fatal(err)
	}
	if _, err := checkArtifactELF(entriesOf(t, tree), sysS390x); err != nil {
		t.Errorf("a symlink was checked: %v", err)
	}
}

func TestCheckArtifactELF_UnknownTargetIsNotChecked(t *testing.T) {
	tree := t.TempDir()
	compile(t, "cc", tree, "hello")
	checked, err := checkArtifactELF(entriesOf(t, tree), &kilnv1.SystemInfo{Arch: "vax", Endian: "little", DataModel: "ILP32"})
	if checked || err != nil {
		t.Errorf("unknown arch: checked %v, %v; want not checked, nil", checked, err)
	}
}

func TestClient_HostBinaryFromCrossTargetFailsTheBuild(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	cfg := testConfig(t, f)
	// A target measured as s390x whose step ships the build server's own
	// (x86-64) binary, as a Makefile with a hard-coded CC = gcc would.
	cfg.Targets = []Target{{Info: &kilnv1.Target{Id: "native", System: &kilnv1.SystemInfo{
		Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", Libc: "glibc"}}}}
	startClient(t, cfg)
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
	r := recipe([]string{"mkdir -p bin && cp /bin/true bin/tool"}, "bin/tool")
	r.Summary = "kiln.yaml"
	f.push(t, assign(assignment(1, url, commit, r)))
	res := f.waitResult(t, 1)
	want := "artifact does not match the target: bin/tool is x86_64 (64-bit little-endian), target is s390x (64-bit big-endian)"
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED || res.GetReason() != want {
		t.Errorf("result %v %q, want FAILED %q\nlog:\n%s", res.GetOutcome(), res.GetReason(), want, f.log(1))
	}
	if res.GetArtifact() != nil {
		t.Errorf("a rejected artifact was reported: %v", res.GetArtifact())
	}
	log := f.log(1)
	if !strings.Contains(log, "[kiln] recipe: kiln.yaml\n") || !strings.Contains(log, "[kiln] "+want) {
		t.Errorf("log lacks the recipe or the reason:\n%s", log)
	}
}

func TestClient_StepsSeeTheTargetsFiles(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	cfg := testConfig(t, f)
	tgt := testTarget()
	tgt.Files = []sysinfo.TargetFile{{Env: "KILN_CMAKE_TOOLCHAIN_FILE", Name: "toolchain.cmake", Content: "set(CMAKE_SYSTEM_NAME Linux)\n"}}
	cfg.Targets = []Target{tgt}
	startClient(t, cfg)
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
	f.push(t, assign(assignment(1, url, commit, recipe([]string{
		`test "$KILN_CMAKE_TOOLCHAIN_FILE" = "$HOME/.kiln/toolchain.cmake" && test "$KILN_JOBS" -ge 1 && cat "$KILN_CMAKE_TOOLCHAIN_FILE" && touch out`}, "out"))))
	res := f.waitResult(t, 1)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("result %v %q\nlog:\n%s", res.GetOutcome(), res.GetReason(), f.log(1))
	}
	if log := f.log(1); !strings.Contains(log, "\nset(CMAKE_SYSTEM_NAME Linux)\n") {
		t.Errorf("the step did not read the toolchain file from $KILN_CMAKE_TOOLCHAIN_FILE:\n%s", log)
	}
}

var (
	sysWin64 = &kilnv1.SystemInfo{Os: "windows", Arch: "x86_64", Endian: "little", DataModel: "LLP64", Libc: "msvcrt"}
	sysWin32 = &kilnv1.SystemInfo{Os: "windows", Arch: "i686", Endian: "little", DataModel: "ILP32", Libc: "msvcrt"}
)

// Windows targets: real mingw-w64 programs, objects and static libraries
// pass on their own target; an x86-64 PE (or its COFF objects) on the
// i686 one, and an ELF file on either, are refused.
func TestCheckArtifactELF_WindowsPEFilesAreChecked(t *testing.T) {
	tree64, tree32 := t.TempDir(), t.TempDir()
	compile(t, "x86_64-w64-mingw32-gcc", tree64, "hello.exe")
	obj := compile(t, "x86_64-w64-mingw32-gcc", tree64, "foo.o", "-c")
	if b, err := exec.Command("x86_64-w64-mingw32-ar", "rcs", filepath.Join(tree64, "libfoo.a"), obj).CombinedOutput(); err != nil {
		t.Fatalf("ar: %v %s", err, b)
	}
	compile(t, "i686-w64-mingw32-gcc", tree32, "hello.exe")
	if _, err := checkArtifactELF(entriesOf(t, tree64), sysWin64); err != nil {
		t.Errorf("x86-64 PE files on windows x86_64: %v", err)
	}
	if _, err := checkArtifactELF(entriesOf(t, tree32), sysWin32); err != nil {
		t.Errorf("an i686 PE on windows i686: %v", err)
	}
	checked, err := checkArtifactELF(entriesOf(t, tree64), sysWin32)
	if !checked {
		t.Error("a windows i686 target was not checked")
	}
	wantBuildError(t, err, "is x86_64 (", "target is windows i686 (PE32)")
	if err := os.Remove(filepath.Join(tree64, "hello.exe")); err != nil {
		t.Fatal(err)
	}
	_, err = checkArtifactELF(entriesOf(t, tree64), sysWin32)
	wantBuildError(t, err, "libfoo.a(foo.o) is x86_64 (COFF object), target is windows i686 (PE32)")

	elfTree := t.TempDir()
	compile(t, "cc", elfTree, "hello.exe")
	_, err = checkArtifactELF(entriesOf(t, elfTree), sysWin64)
	wantBuildError(t, err, "hello.exe is an ELF file for x86_64 (64-bit little-endian), target is windows x86_64 (PE32+)")
	_, err = checkArtifactELF(entriesOf(t, tree32), sysX86)
	wantBuildError(t, err, "hello.exe is a Windows PE file for i686 (PE32), target is x86_64 (64-bit little-endian)")
}

// A target's AfterStep ends every step, even one that exits early, and
// the step keeps its own status (wine's server is waited for so).
func TestClient_TargetsAfterStepEndsEveryStepKeepingItsStatus(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	cfg := testConfig(t, f)
	tgt := testTarget()
	tgt.AfterStep = "echo after-step-ran"
	cfg.Targets = []Target{tgt}
	startClient(t, cfg)
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
	f.push(t, assign(assignment(1, url, commit, recipe([]string{"touch out", "exit 3"}, "out"))))
	res := f.waitResult(t, 1)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED || !strings.Contains(res.GetReason(), "exited with status 3") {
		t.Fatalf("result %v %q, want the second step's status 3\nlog:\n%s", res.GetOutcome(), res.GetReason(), f.log(1))
	}
	if log := f.log(1); strings.Count(log, "\nafter-step-ran\n") != 2 || strings.Contains(log, "kiln_status") {
		t.Errorf("want the after command's output once per step, and the steps as written:\n%s", log)
	}
}
