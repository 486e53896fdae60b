package e2e

import (
	"debug/elf"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// dependsLibFiles are a tiny C library that installs a static library, its
// header and a pkg-config file into $DESTDIR$PREFIX.
var dependsLibFiles = map[string]string{
	"kiln.yaml": "requires: [make]\nbuild:\n  - make\npackage:\n  - make install DESTDIR=\"$KILN_DESTDIR\"\ninstall_tree: true\ntimeout: 5m\n",
	"mini.h":    "int mini_answer(void);\n",
	"mini.c":    "#include \"mini.h\"\nint mini_answer(void) { return 42; }\n",
	"Makefile": `PREFIX ?= /usr/local
libmini.a: mini.c mini.h
	$(CC) -c mini.c -o mini.o
	ar rcs libmini.a mini.o
install: libmini.a
	mkdir -p $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	cp libmini.a $(DESTDIR)$(PREFIX)/lib/
	cp mini.h $(DESTDIR)$(PREFIX)/include/
	printf 'prefix=$(PREFIX)\nincludedir=$${prefix}/include\nlibdir=$${prefix}/lib\n\nName: mini\nDescription: mini\nVersion: 1.0\nCflags: -I$${includedir}\nLibs: -L$${libdir} -lmini\n' > $(DESTDIR)$(PREFIX)/lib/pkgconfig/mini.pc
`,
}

// dependsAppFiles are a program that depends on project dep, finds it
// with pkg-config and runs in its check step.
func dependsAppFiles(dep string) map[string]string {
	return map[string]string{
		"kiln.yaml": "depends: [" + dep + "]\nrequires: [make]\nbuild:\n  - make\ncheck:\n  - $KILN_EMULATOR ./app | grep -x 'mini says 42'\nartifacts: [app]\ntimeout: 5m\n",
		"app.c":     "#include <stdio.h>\n#include <mini.h>\nint main(void) { printf(\"mini says %d\\n\", mini_answer()); return 0; }\n",
		"Makefile":  "app: app.c\n\t$(CC) $(CPPFLAGS) $$($${PKG_CONFIG:-pkg-config} --cflags mini) -o app app.c $(LDFLAGS) $$($${PKG_CONFIG:-pkg-config} --libs mini)\n",
	}
}

// dependsProject registers files as the git project name.
func dependsProject(t *testing.T, f *farmtest.Farm, name string, files map[string]string) {
	t.Helper()
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

// TestDependsBuildsTheLibraryFirstNativeAndCross builds a program that
// depends on a small C library (depends: [mini]) through a farm, natively
// and for s390x under qemu: the library is built first for the same
// platform, staged read-only in the program's sandbox and found with
// pkg-config, and the program runs in its check step. A dependency that
// fails fails the dependent with its reason, and unknown dependencies are
// refused at submit.
func TestDependsBuildsTheLibraryFirstNativeAndCross(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "5s")
	dependsProject(t, f, "mini", dependsLibFiles)
	dependsProject(t, f, "app", dependsAppFiles("mini"))
	broken := map[string]string{}
	for k, v := range dependsLibFiles {
		broken[k] = v
	}
	broken["mini.c"] = "#error deliberately broken\n"
	dependsProject(t, f, "broken", broken)
	dependsProject(t, f, "app2", dependsAppFiles("broken"))
	dependsProject(t, f, "orphan", dependsAppFiles("nothere"))

	const server = "deps"
	f.StartBuildserver(f.AddBuildServer(server), "--jobs", "1", "--target", "native", "--target", "cross:s390x-linux-gnu")
	platformWaitTargets(t, f, server, "native", "cross:s390x-linux-gnu")

	for _, pl := range []struct {
		name    string
		pins    []string
		machine elf.Machine
	}{
		{"native", []string{"--arch", "x86_64", "--libc", "glibc"}, elf.EM_X86_64},
		{"s390x", []string{"--arch", "s390x"}, elf.EM_S390},
	} {
		t.Run("app on "+pl.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			res, _ := platformRun(t, f, 0, append(platformRequest("app", pl.pins...), "--download", out, "--json", "dev@example.com")...)
			if res.State != "succeeded" {
				t.Fatalf("result %+v\nlog:\n%s", res, platformLog(t, f, res.BuildID))
			}
			if h := platformELF(t, filepath.Join(out, "app")); h.Machine != pl.machine {
				t.Errorf("app is %v, want %v", h.Machine, pl.machine)
			}
			app := f.GetBuild(t, res.BuildID)
			deps := app.GetDependencies()
			if len(deps) != 1 || deps[0].GetProject() != "mini" || deps[0].GetArtifact().GetSha256() == "" {
				t.Fatalf("app's dependencies %v, want mini's artifact", deps)
			}
			lib := f.GetBuild(t, deps[0].GetBuildId())
			if lib.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || lib.GetArtifact().GetSha256() != deps[0].GetArtifact().GetSha256() {
				t.Fatalf("mini's build %d is %v with %v, want succeeded with the staged artifact", lib.GetId(), lib.GetState(), lib.GetArtifact())
			}
			if lib.GetPlatform().GetArch() != app.GetPlatform().GetArch() || lib.GetPlatform().GetCompilerVersion() != app.GetPlatform().GetCompilerVersion() {
				t.Errorf("mini built on %v, app on %v: want one platform", lib.GetPlatform(), app.GetPlatform())
			}
			log := platformLog(t, f, res.BuildID)
			for _, want := range []string{"[kiln] dependency mini: build " + strconv.FormatUint(lib.GetId(), 10), "mini says 42"} {
				if !strings.Contains(log, want) {
					t.Errorf("log lacks %q:\n%s", want, log)
				}
			}
		})
	}

	t.Run("a failed dependency fails the dependent", func(t *testing.T) {
		res, _ := platformRun(t, f, 1, append(platformRequest("app2", "--arch", "s390x"), "--wait", "--json", "dev@example.com")...)
		app := f.GetBuild(t, res.BuildID)
		deps := app.GetDependencies()
		if len(deps) != 1 {
			t.Fatalf("app2's dependencies %v", deps)
		}
		want := "dependency broken failed on s390x: build " + strconv.FormatUint(deps[0].GetBuildId(), 10) + ": "
		if res.State != "failed" || !strings.HasPrefix(res.Failure, want) {
			t.Fatalf("result %+v, want failed with %q...", res, want)
		}
		if n := len(app.GetAttempts()); n != 0 {
			t.Errorf("app2 ran %d attempts, want none", n)
		}
	})

	t.Run("an unknown dependency is refused at submit", func(t *testing.T) {
		r := f.Startcompile(append(platformRequest("orphan", "--arch", "x86_64"), "dev@example.com")...)
		expectExit(t, r, 2)
		if !strings.Contains(r.Stderr, `"nothere", which is not a registered project`) {
			t.Errorf("stderr %q lacks the reason", r.Stderr)
		}
	})
}
