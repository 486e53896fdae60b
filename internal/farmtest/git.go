package farmtest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// Greeting is what the default CProject program prints.
const Greeting = "hello, kiln"

// DefaultManifest is the kiln.yaml CProject writes with Manifest set (the
// format is docs/manifest.md): an int option `level` (default 2) and a
// choice option `flavor` (plain or fancy, default plain), the build steps
// echo of both into the log and `make CFLAGS=-O$KILN_OPT_LEVEL`, the check
// step `make check`, and the artifact `hello`.
const DefaultManifest = `# Kiln manifest of the farmtest C project.
requires: [make]
options:
  level:
    type: int
    default: 2
    description: optimisation level passed as -O
  flavor:
    type: choice
    choices: [plain, fancy]
    default: plain
    description: only shown in the build log
build:
  - echo "flavor=$KILN_OPT_FLAVOR level=$KILN_OPT_LEVEL"
  - make CFLAGS=-O$KILN_OPT_LEVEL
check:
  - make check
artifacts:
  - hello
timeout: 5m
`

// CProjectOptions shapes the repository CProject creates.
type CProjectOptions struct {
	// Name is the directory name under the test's temp dir; default "hello".
	Name string
	// Manifest writes DefaultManifest as kiln.yaml. Without it the project
	// builds with Kiln's default recipe (make, make check, make install).
	Manifest bool
	// ManifestText, when set, is written as kiln.yaml instead of
	// DefaultManifest (Manifest need not be set).
	ManifestText string
	// Greeting is the line the program prints and `make check` expects;
	// default Greeting.
	Greeting string
	// Endian makes the program print "big-endian" or "little-endian" (the
	// byte order it runs with) instead of a greeting; `make check` accepts
	// either.
	Endian bool
	// FailCheck makes `make check` fail (the build itself succeeds).
	FailCheck bool
	// Files are written last, relative to the repository root, and may
	// replace the generated ones.
	Files map[string]string
}

const helloC = `#include <stdio.h>

int main(void)
{
	puts(GREETING);
	return 0;
}
`

const endianC = `#include <stdio.h>

int main(void)
{
	unsigned int one = 1;
	puts(*(unsigned char *)&one == 1 ? "little-endian" : "big-endian");
	return 0;
}
`

// makefile returns the project's Makefile. check runs the program through
// $(KILN_EMULATOR) (empty natively, qemu on cross targets) and compares its
// output with want (an extended regular expression for grep -x).
func makefile(want string) string {
	return `CFLAGS ?= -O2
PREFIX ?= /usr

all: hello

hello: hello.c
	$(CC) $(CFLAGS) -o hello hello.c

check: hello
	$(KILN_EMULATOR) ./hello > hello.out
	grep -Eqx '` + want + `' hello.out

install: hello
	mkdir -p $(DESTDIR)$(PREFIX)/bin
	cp hello $(DESTDIR)$(PREFIX)/bin/hello

clean:
	rm -f hello hello.out

.PHONY: all check install clean
`
}

// CProject creates a git repository (branch main, one commit) holding a
// small C project: hello.c, a Makefile with the targets all, check (runs
// ./hello and compares its output) and install (to $(DESTDIR)/usr/bin), and
// optionally kiln.yaml. It returns the repository's directory and the full
// id of its head commit. Use "file://"+dir as the project's URL.
func CProject(t testing.TB, opts CProjectOptions) (dir string, head string) {
	t.Helper()
	name := opts.Name
	if name == "" {
		name = "hello"
	}
	dir = filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("farmtest: %v", err)
	}
	files := map[string]string{".gitignore": "hello\nhello.out\n*.o\n"}
	greeting := opts.Greeting
	if greeting == "" {
		greeting = Greeting
	}
	switch {
	case opts.Endian:
		files["hello.c"] = endianC
		files["Makefile"] = makefile("(big|little)-endian")
	default:
		files["hello.c"] = strings.Replace(helloC, "GREETING", cString(greeting), 1)
		files["Makefile"] = makefile(regexpQuote(greeting))
	}
	if opts.FailCheck {
		files["Makefile"] = strings.Replace(files["Makefile"], "\tgrep -Eqx", "\t@echo 'check: deliberate failure' >&2; false\n\tgrep -Eqx", 1)
	}
	switch {
	case opts.ManifestText != "":
		files["kiln.yaml"] = opts.ManifestText
	case opts.Manifest:
		files["kiln.yaml"] = DefaultManifest
	}
	for k, v := range opts.Files {
		files[k] = v
	}
	git(t, dir, "init", "-q", "-b", "main")
	head = Commit(t, dir, files, "initial C project")
	return dir, head
}

// EndianProject is CProject with Endian set and the default manifest: its
// program prints the byte order of the machine that runs it.
func EndianProject(t testing.TB) (dir string, head string) {
	t.Helper()
	return CProject(t, CProjectOptions{Name: "endian", Manifest: true, Endian: true})
}

// Commit writes files (path relative to the repository -> content; an
// existing file is replaced) in the repository dir, commits them with msg
// and returns the new head commit's full id.
func Commit(t testing.TB, dir string, files map[string]string, msg string) string {
	t.Helper()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatalf("farmtest: %v", err)
		}
		if err := os.WriteFile(p, []byte(files[name]), 0o644); err != nil {
			t.Fatalf("farmtest: %v", err)
		}
	}
	git(t, dir, append([]string{"add", "--"}, names...)...)
	git(t, dir, "commit", "-q", "--allow-empty", "-m", msg)
	return strings.TrimSpace(git(t, dir, "rev-parse", "HEAD"))
}

// git runs git in dir with a fixed identity and no user or system
// configuration, and returns its stdout.
func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=Kiln Test", "-c", "user.email=test@kiln.invalid", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
	)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("farmtest: git %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// cString quotes s as a C string literal.
func cString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// regexpQuote escapes s for grep -E inside single quotes.
func regexpQuote(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, c) {
			b.WriteByte('\\')
		}
		if c == '\'' {
			b.WriteString(`'\''`)
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// GitDaemon serves the repositories under base over git:// on a loopback
// port for the test's life (stopped by its PID at cleanup) and returns the
// URL prefix, e.g. "git://127.0.0.1:PORT/". Programs running as another
// user than the repositories' owner read them through it: git refuses to
// read a local repository someone else owns.
func GitDaemon(t testing.TB, base string) string {
	t.Helper()
	addr := FreeAddr(t)
	host, port, _ := strings.Cut(addr, ":")
	p := NewProcess(t, "git-daemon", "git", "daemon", "--listen="+host, "--port="+port,
		"--export-all", "--reuseaddr", "--base-path="+base, base)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return "git://" + addr + "/"
		}
		if time.Now().After(deadline) {
			t.Fatalf("farmtest: git daemon not listening on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
