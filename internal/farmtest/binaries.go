package farmtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Programs are the main packages Binaries builds, by directory name.
var Programs = []string{"metaserver", "buildserver", "startcompile", "webstatus"}

// EnvBinDir names a directory of prebuilt programs; when set, Binary uses
// DIR/NAME and builds nothing.
const EnvBinDir = "KILN_FARMTEST_BIN_DIR"

// EnvBuildFlags holds extra `go build` flags separated by spaces, for
// example "-race" or "-cover".
const EnvBuildFlags = "KILN_FARMTEST_BUILDFLAGS"

// Bins holds the paths of the built programs.
type Bins struct {
	Metaserver   string
	Buildserver  string
	Startcompile string
	Webstatus    string
}

type buildResult struct {
	once sync.Once
	path string
	err  error
}

var (
	builds   sync.Map // program name -> *buildResult
	dirOnce  sync.Once
	binDir   string
	binDirEr error
)

// Binaries builds all of Programs, each at most once per test process
// (concurrent callers share the builds), and returns their paths. A program
// that does not compile fails the test with the compiler's output.
func Binaries(t testing.TB) Bins {
	t.Helper()
	paths := make([]string, len(Programs))
	errs := make([]error, len(Programs))
	var wg sync.WaitGroup
	for i, name := range Programs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = build(name)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("farmtest: %v", err)
	}
	return Bins{Metaserver: paths[0], Buildserver: paths[1], Startcompile: paths[2], Webstatus: paths[3]}
}

// Binary builds the main package ./name of the module, at most once per test
// process, and returns the path of the program. A compile error fails the
// test with the compiler's output.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p, err := build(name)
	if err != nil {
		t.Fatalf("farmtest: %v", err)
	}
	return p
}

// BinaryTags builds the main package ./name with the build tags (comma
// separated) as DIR/name-tags, at most once per test process, and returns
// its path: a test-only variant of a program, such as the cheating build
// server (tag kiln_cheat). With KILN_FARMTEST_BIN_DIR set it uses
// DIR/name-tags from there.
func BinaryTags(t testing.TB, name, tags string) string {
	t.Helper()
	p, err := buildTags(name, tags)
	if err != nil {
		t.Fatalf("farmtest: %v", err)
	}
	return p
}

func build(name string) (string, error) { return buildTags(name, "") }

func buildTags(name, tags string) (string, error) {
	key := name
	if tags != "" {
		key += "-" + strings.ReplaceAll(tags, ",", "-")
	}
	v, _ := builds.LoadOrStore(key, &buildResult{})
	r := v.(*buildResult)
	r.once.Do(func() { r.path, r.err = goBuild(name, key, tags) })
	return r.path, r.err
}

// goBuild runs `go build [-tags tags] -o DIR/out ./name` in the module root.
func goBuild(name, out, tags string) (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		p := filepath.Join(d, out)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBinDir, d, err)
		}
		return p, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := outputDir()
	if err != nil {
		return "", err
	}
	outPath := filepath.Join(dir, out)
	args := []string{"build", "-o", outPath}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	flags := strings.Fields(os.Getenv(EnvBuildFlags))
	args = append(args, flags...)
	args = append(args, "./"+name)
	cmd := exec.Command(goTool(), args...)
	cmd.Dir = root
	// Static, as released (scripts/release.sh), so the tests run what
	// users run; the race detector needs cgo.
	if !slices.Contains(flags, "-race") {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./%s: %v\n%s", name, err, b)
	}
	return outPath, nil
}

// goTool is the go command: the one in GOROOT/bin when `go test` set
// GOROOT, else the first on PATH.
func goTool() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// ModuleRoot returns the directory holding go.mod, found by walking up from
// the working directory (a test runs in its package's directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("farmtest: no go.mod above the working directory")
		}
		dir = parent
	}
}

const binDirPrefix = "kiln-farmtest-bin-"

// outputDir creates, once, the directory the programs are built into:
// TMPDIR/kiln-farmtest-bin-PID-*. Directories of test processes that no
// longer exist are removed on the way.
func outputDir() (string, error) {
	dirOnce.Do(func() {
		removeStaleDirs()
		binDir, binDirEr = os.MkdirTemp("", binDirPrefix+strconv.Itoa(os.Getpid())+"-")
		if binDirEr == nil {
			// Tests may run a program as another user (Process.Credential).
			binDirEr = os.Chmod(binDir, 0o755)
		}
	})
	return binDir, binDirEr
}

// removeStaleDirs removes build directories whose test process is gone.
func removeStaleDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), binDirPrefix)
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(m)
		}
	}
}

// Main runs the tests and then removes the programs Binaries built. Call it
// from TestMain:
//
//	func TestMain(m *testing.M) { farmtest.Main(m) }
//
// In a process started by UnitProcess it sets the unit's service up and
// execs it instead.
func Main(m *testing.M) {
	runUnitHelperIfAsked()
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
