package e2e

import (
	"debug/elf"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// recipeProject registers the fixture testdata/recipe/<name> (no kiln.yaml)
// as a git project of the same name.
func recipeProject(t *testing.T, f *farmtest.Farm, name string) {
	t.Helper()
	root := filepath.Join("testdata", "recipe", name)
	files := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := runCmd("git", "-C", dir, "init", "-q", "-b", "main"); err != nil {
		t.Fatal(err)
	}
	farmtest.Commit(t, dir, files, "fixture "+name)
	f.AddProject(name, "file://"+dir)
}

// recipeELFs returns every ELF file under dir (symlinks not followed) with
// its header.
func recipeELFs(t *testing.T, dir string) map[string]elf.FileHeader {
	t.Helper()
	out := map[string]elf.FileHeader{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		ef, err := elf.Open(p)
		if err != nil {
			return nil // not ELF
		}
		defer ef.Close()
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = ef.FileHeader
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// recipeHardCCMakefile ignores $(CC): the classic bug that shipped x86-64
// objects as other platforms' artifacts.
const recipeHardCCMakefile = `CC = gcc

hello: hello.c
	$(CC) -o hello hello.c
`

// TestRecipeDetectsBuildSystemsNativeAndCross builds real CMake, Meson and
// autotools (autoreconf) fixtures without kiln.yaml through a farm, on the
// native target, on s390x under qemu and on musl, with their own tests, and checks
// every ELF file of each downloaded artifact; then a manifest that ships a
// host binary from the s390x target fails with the reason.
func TestRecipeDetectsBuildSystemsNativeAndCross(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "5s")
	for _, name := range []string{"cmake", "meson", "autotools"} {
		recipeProject(t, f, name)
	}
	hardRepo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Name: "hardcc",
		ManifestText: "requires: [make]\nbuild:\n  - make\nartifacts:\n  - hello\ntimeout: 5m\n",
		Files:        map[string]string{"Makefile": recipeHardCCMakefile}})
	f.AddProject("hardcc", "file://"+hardRepo)

	const server = "recipes"
	f.StartBuildserver(f.AddBuildServer(server), "--jobs", "1", "--target", "native", "--target", "cross:s390x-linux-gnu", "--target", "musl")
	platformWaitTargets(t, f, server, "native", "cross:s390x-linux-gnu", "musl")

	platforms := []struct {
		name, target string
		pins         []string
		machine      elf.Machine
		data         elf.Data
		hostWord     string // what the autotools fixture's configure says the host is
	}{
		{"native", "native", []string{"--arch", "x86_64", "--libc", "glibc"}, elf.EM_X86_64, elf.ELFDATA2LSB, "x86_64"},
		{"s390x", "cross:s390x-linux-gnu", []string{"--arch", "s390x"}, elf.EM_S390, elf.ELFDATA2MSB, "s390x"},
		// greet.c includes <linux/limits.h>, which musl-gcc finds only
		// through the target's kernel header links.
		{"musl", "musl", []string{"--arch", "x86_64", "--libc", "musl"}, elf.EM_X86_64, elf.ELFDATA2LSB, "x86_64"},
	}
	projects := []struct {
		name, summary string
		logWants      []string // the project's own tests ran and passed
		elfs          []string // installed ELF files the artifact must hold
	}{
		{"cmake", "cmake — found CMakeLists.txt", []string{"100% tests passed, 0 tests failed out of 1"},
			[]string{"usr/local/bin/hello", "usr/local/lib/libgreet.so.1.0.0"}},
		{"meson", "meson — found meson.build", []string{"1/1 hello", "Ok:                 1"},
			[]string{"usr/local/bin/hello", "usr/local/lib/libgreet.so.1.0.0"}},
		{"autotools", "autotools — found configure.ac, no configure: autoreconf -fi", []string{"PASS: greettest", "# PASS:  1"},
			[]string{"usr/local/bin/hello", "usr/local/lib/libgreet.so.1.0.0"}},
	}
	for _, p := range projects {
		for _, pl := range platforms {
			t.Run(p.name+" on "+pl.name, func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out")
				res, info := platformRun(t, f, 0, append(platformRequest(p.name, pl.pins...), "--download", out, "--json", "dev@example.com")...)
				if res.State != "succeeded" {
					t.Fatalf("result %+v\nlog:\n%s", res, platformLog(t, f, res.BuildID))
				}
				b := platformBuiltBy(t, f, res.BuildID, info, server, pl.target)
				if b.GetRecipe() != p.summary {
					t.Errorf("build's recipe %q, want %q", b.GetRecipe(), p.summary)
				}
				log := platformLog(t, f, res.BuildID)
				for _, want := range append([]string{"[kiln] recipe: " + p.summary}, p.logWants...) {
					if !strings.Contains(log, want) {
						t.Errorf("log lacks %q:\n%s", want, log)
					}
				}
				elfs := recipeELFs(t, out)
				for _, want := range p.elfs {
					if _, ok := elfs[want]; !ok {
						t.Errorf("artifact lacks the ELF file %s (has %v)", want, elfs)
					}
				}
				for name, h := range elfs {
					if h.Machine != pl.machine || h.Class != elf.ELFCLASS64 || h.Data != pl.data {
						t.Errorf("%s is %v %v %v, want %v ELFCLASS64 %v", name, h.Machine, h.Class, h.Data, pl.machine, pl.data)
					}
				}
				if pl.target == "musl" {
					if interp := platformInterp(t, filepath.Join(out, "usr/local/bin/hello")); !strings.Contains(interp, "ld-musl") {
						t.Errorf("musl build's hello has the interpreter %q", interp)
					}
				}
				if p.name == "autotools" {
					host, err := os.ReadFile(filepath.Join(out, "usr/local/share/kilnautotools/host.txt"))
					if err != nil || !strings.HasPrefix(string(host), pl.hostWord+"-") {
						t.Errorf("configure's host was %q (%v), want %s-...", host, err, pl.hostWord)
					}
					wantHost := strings.HasPrefix(pl.target, "cross:") // musl-gcc is not a cross compiler
					if got := strings.Contains(log, "+ ./configure --build=x86_64-linux-gnu --host=s390x-linux-gnu\n"); got != wantHost {
						t.Errorf("log shows --host=s390x-linux-gnu: %v, want %v", got, wantHost)
					}
				}
			})
		}
	}

	t.Run("a glibc binary shipped from the musl target fails the build", func(t *testing.T) {
		res, _ := platformRun(t, f, 1, append(platformRequest("hardcc", "--arch", "x86_64", "--libc", "musl"), "--wait", "--json", "dev@example.com")...)
		want := "artifact does not match the target: hello has the program interpreter /lib64/ld-linux-x86-64.so.2 (not musl's), target's libc is musl"
		if res.State != "failed" || res.Failure != want {
			t.Fatalf("result %+v, want failed with %q", res, want)
		}
	})

	t.Run("a host binary shipped from the s390x target fails the build, once", func(t *testing.T) {
		res, _ := platformRun(t, f, 1, append(platformRequest("hardcc", "--arch", "s390x"), "--wait", "--json", "dev@example.com")...)
		want := "artifact does not match the target: hello is x86_64 (64-bit little-endian), target is s390x (64-bit big-endian)"
		if res.State != "failed" || res.Failure != want {
			t.Fatalf("result %+v, want failed with %q", res, want)
		}
		b := f.GetBuild(t, res.BuildID)
		if n := len(b.GetAttempts()); n != 1 || b.GetAttempts()[0].GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED {
			t.Errorf("attempts %v, want one FAILED attempt (final, not retried)", b.GetAttempts())
		}
		if b.GetArtifact() != nil {
			t.Errorf("a rejected artifact was stored: %v", b.GetArtifact())
		}
		if log := platformLog(t, f, res.BuildID); !strings.Contains(log, "[kiln] recipe: kiln.yaml") || !strings.Contains(log, want) {
			t.Errorf("log lacks the recipe or the reason:\n%s", log)
		}
	})
}
