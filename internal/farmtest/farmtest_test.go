package farmtest

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/manifest"
)

func TestFreePortHandsOutDistinctBindablePorts(t *testing.T) {
	seen := map[int]bool{}
	for range 20 {
		p := FreePort(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
	addr := FreeAddr(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("FreeAddr = %q, want a 127.0.0.1 address", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("FreeAddr %s not bindable: %v", addr, err)
	}
	l.Close()
}

func TestPollReturnsNilOnceTheConditionHolds(t *testing.T) {
	n := 0
	err := Poll(5*time.Second, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("Poll = %v after %d tries, want nil after 3", err, n)
	}
}

func TestPollReturnsTheLastErrorAtTheDeadline(t *testing.T) {
	start := time.Now()
	err := Poll(100*time.Millisecond, func() error { return errors.New("never") })
	if err == nil || err.Error() != "never" {
		t.Fatalf("Poll = %v, want the condition's error", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 3*time.Second {
		t.Fatalf("Poll gave up after %s, want about 100ms", d)
	}
}

func TestModuleRootHoldsGoMod(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.Contains(string(b), "module github.com/kilnbuild/kiln") {
		t.Fatalf("go.mod at %s: %v", root, err)
	}
}

func TestBinaryBuildsAProgramOnceAndItRuns(t *testing.T) {
	p := Binary(t, "startcompile")
	if again := Binary(t, "startcompile"); again != p {
		t.Fatalf("second Binary = %s, first %s: built twice", again, p)
	}
	out, err := exec.Command(p, "help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "startcompile") {
		t.Fatalf("%s help: %v\n%s", p, err, out)
	}
}

func TestBinaryOfAMissingPackageFailsWithTheCompilerOutput(t *testing.T) {
	_, err := build("no-such-program")
	if err == nil || !strings.Contains(err.Error(), "go build ./no-such-program") {
		t.Fatalf("build of a missing package: %v", err)
	}
}

// make runs make in dir and returns its combined output.
func runMake(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("make", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// clone checks the repository out into a fresh directory, as a build
// server would.
func clone(t *testing.T, repo string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "work")
	if out, err := exec.Command("git", "clone", "-q", "file://"+repo, dst).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	return dst
}

func TestCProjectBuildsChecksAndInstalls(t *testing.T) {
	repo, head := CProject(t, CProjectOptions{Manifest: true})
	if len(head) != 40 {
		t.Fatalf("head %q is not a full commit id", head)
	}
	w := clone(t, repo)
	if out, err := runMake(t, w, "CFLAGS=-O1"); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	if out, err := runMake(t, w, "check"); err != nil {
		t.Fatalf("make check: %v\n%s", err, out)
	}
	dest := t.TempDir()
	if out, err := runMake(t, w, "install", "DESTDIR="+dest); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(dest, "usr/bin/hello")).Output()
	if err != nil || strings.TrimSpace(string(out)) != Greeting {
		t.Fatalf("installed hello printed %q (%v), want %q", out, err, Greeting)
	}
	manifest, err := os.ReadFile(filepath.Join(w, "kiln.yaml"))
	if err != nil || string(manifest) != DefaultManifest {
		t.Fatalf("kiln.yaml in the checkout: %v", err)
	}
}

func TestCProjectWithoutManifestHasNone(t *testing.T) {
	repo, _ := CProject(t, CProjectOptions{Name: "plain", Greeting: "it's (1+1)"})
	w := clone(t, repo)
	if _, err := os.Stat(filepath.Join(w, "kiln.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("kiln.yaml present without Manifest: %v", err)
	}
	if out, err := runMake(t, w, "check"); err != nil {
		t.Fatalf("make check with a greeting full of metacharacters: %v\n%s", err, out)
	}
}

func TestCProjectFailCheckFailsOnlyTheCheck(t *testing.T) {
	repo, _ := CProject(t, CProjectOptions{FailCheck: true})
	w := clone(t, repo)
	if out, err := runMake(t, w); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	out, err := runMake(t, w, "check")
	if err == nil || !strings.Contains(out, "deliberate failure") {
		t.Fatalf("make check: %v, want a deliberate failure\n%s", err, out)
	}
}

func TestEndianProjectPrintsTheByteOrder(t *testing.T) {
	repo, _ := EndianProject(t)
	w := clone(t, repo)
	if out, err := runMake(t, w, "check"); err != nil {
		t.Fatalf("make check: %v\n%s", err, out)
	}
	want := "big-endian"
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		want = "little-endian"
	}
	out, err := exec.Command(filepath.Join(w, "hello")).Output()
	if err != nil || strings.TrimSpace(string(out)) != want {
		t.Fatalf("hello printed %q (%v), want %q", out, err, want)
	}
}

func TestCommitAddsACommitOnTop(t *testing.T) {
	repo, first := CProject(t, CProjectOptions{})
	second := Commit(t, repo, map[string]string{"README": "hi\n", "sub/dir/x.txt": "x\n"}, "add files")
	if second == first || len(second) != 40 {
		t.Fatalf("Commit = %q, first %q", second, first)
	}
	parent := strings.TrimSpace(git(t, repo, "rev-parse", "HEAD^"))
	if parent != first {
		t.Fatalf("parent of the new commit is %s, want %s", parent, first)
	}
	if got := git(t, repo, "show", second+":sub/dir/x.txt"); got != "x\n" {
		t.Fatalf("committed file holds %q", got)
	}
}

func TestDefaultManifestParsesWithTheDeclaredOptions(t *testing.T) {
	m, err := manifest.Parse([]byte(DefaultManifest))
	if err != nil {
		t.Fatalf("manifest.Parse(DefaultManifest): %v", err)
	}
	level, ok := m.Option("level")
	if !ok || level.Type != manifest.OptionInt || level.Default != "2" {
		t.Fatalf("level = %+v", level)
	}
	flavor, ok := m.Option("flavor")
	if !ok || flavor.Type != manifest.OptionChoice || strings.Join(flavor.Choices, ",") != "plain,fancy" || flavor.Default != "plain" {
		t.Fatalf("flavor = %+v", flavor)
	}
	if strings.Join(m.Build, "\n") == "" || m.Check[0] != "make check" || m.Artifacts[0] != "hello" {
		t.Fatalf("recipe %+v", m)
	}
}
