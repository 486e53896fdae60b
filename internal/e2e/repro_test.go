package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/artifactdiff"
	"github.com/kilnbuild/kiln/internal/farmtest"
)

// reproStampFiles is a program that prints when, by whom and where it was
// built: the time taken by `cmd` in its Makefile, `date` (the build's own
// clock) or `date -d @$SOURCE_DATE_EPOCH` (the commit's time, which Kiln
// sets), and `id -u`, `id -g` and `hostname` (which Kiln fixes).
func reproStampFiles(cmd string) map[string]string {
	return map[string]string{
		"kiln.yaml": "requires: [make, cc]\nbuild:\n  - make\nartifacts: [stamped]\ntimeout: 5m\n",
		"stamped.c": "#include <stdio.h>\n#include \"stamp.h\"\nint main(void) { puts(\"built \" STAMP); return 0; }\n",
		"Makefile": "stamped: stamped.c stamp.h\n\t$(CC) -O2 -g -o stamped stamped.c\n" +
			"stamp.h:\n\techo \"#define STAMP \\\"$$(" + cmd + " +%Y-%m-%dT%H:%M:%S.%N) by $$(id -u):$$(id -g) on $$(hostname)\\\"\" > stamp.h\n",
	}
}

// reproAppFiles is a program built against the dependency mini
// (dependsLibFiles) that records the flags Kiln gave it, which name the
// staged dependencies' directory ($KILN_SYSROOT), as autoconf's
// config.log, libtool's .la files and pkg-config files of dependents do.
var reproAppFiles = map[string]string{
	"kiln.yaml": "depends: [mini]\nrequires: [make, cc]\nbuild:\n  - make\nartifacts: [app]\ntimeout: 5m\n",
	"app.c":     "#include <stdio.h>\n#include <mini.h>\nint main(void) { printf(\"%d, built with %s\\n\", mini_answer(), FLAGS); return 0; }\n",
	"Makefile":  "app: app.c\n\t$(CC) -O2 $(CPPFLAGS) -DFLAGS='\"$(CPPFLAGS) $(LDFLAGS)\"' -o app app.c $(LDFLAGS) -lmini\n",
}

// reproSampleFiles reads the sample project (examples/hello).
func reproSampleFiles(t *testing.T) map[string]string {
	t.Helper()
	root, err := farmtest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "examples", "hello")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(data)
	}
	return files
}

// reproFarm starts a farm whose one build server runs under hostname
// (as root: its own UTS namespace and build uids) with its own data
// directory, with the projects registered from the same repositories.
func reproFarm(t *testing.T, hostname string, repos map[string]string) (*farmtest.Farm, *farmtest.Process) {
	t.Helper()
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "5s")
	for name, dir := range repos {
		f.AddProject(name, "file://"+dir)
	}
	if os.Geteuid() == 0 {
		f.Hostname = hostname
	}
	p := f.StartBuildserver(f.AddBuildServer("volunteer"), "--jobs", "2", "--target", "native")
	f.WaitBuildServers(1)
	return f, p
}

// TestReproTwoBuildServersMakeTheSameArtifact is issue 16's
// reproducibility check: two farms (so that neither answers from the
// other's cache) whose build servers differ in data directory, host name
// and build uids build the same commits. The sample project, a program
// stamped with SOURCE_DATE_EPOCH, and a program built against a
// dependency that records where the dependency was staged come out bit
// for bit the same; a program stamped with `date` does not, and
// artifactdiff names the one file that differs.
func TestReproTwoBuildServersMakeTheSameArtifact(t *testing.T) {
	repos := map[string]string{}
	for name, files := range map[string]map[string]string{
		"hello":   reproSampleFiles(t),
		"sde":     reproStampFiles(`date -u -d "@$$SOURCE_DATE_EPOCH"`),
		"stamped": reproStampFiles("date -u"),
		"mini":    dependsLibFiles,
		"app":     reproAppFiles,
	} {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := runCmd("git", "-C", dir, "init", "-q", "-b", "main"); err != nil {
			t.Fatalf("git init: %v: %s", err, out)
		}
		farmtest.Commit(t, dir, files, "fixture "+name)
		repos[name] = dir
	}
	fa, pa := reproFarm(t, "volunteer-a", repos)
	fb, pb := reproFarm(t, "a-longer-host-name-for-b", repos)
	if fa.BuildserverDir(1) == fb.BuildserverDir(1) {
		t.Fatal("the two build servers share a data directory")
	}
	if os.Geteuid() == 0 {
		// The build servers really run under host names of their own.
		for _, c := range []struct {
			p    *farmtest.Process
			want string
		}{{pa, "volunteer-a"}, {pb, "a-longer-host-name-for-b"}} {
			out, err := runCmd("nsenter", "-t", strconv.Itoa(c.p.PID()), "--uts", "hostname")
			if err != nil || strings.TrimSpace(out) != c.want {
				t.Fatalf("build server %d's host name: %q, %v; want %s", c.p.PID(), out, err, c.want)
			}
		}
		if !strings.Contains(strings.Join(pa.Args(), " "), "--build-uid") || strings.Join(pa.Args(), " ") == strings.Join(pb.Args(), " ") {
			t.Fatalf("the build servers' arguments do not differ in --build-uid: %q, %q", pa.Args(), pb.Args())
		}
	}

	build := func(f *farmtest.Farm, project string) (sha string, data []byte) {
		t.Helper()
		r := f.Startcompile("--project", project, "--wait", "--json", "dev@example.com")
		expectExit(t, r, 0)
		res := parseResult(t, r)
		data, sha = f.ArtifactBytes(t, res.BuildID)
		if sha != res.ArtifactSHA256 {
			t.Fatalf("%s: startcompile says %s, the download is %s", project, res.ArtifactSHA256, sha)
		}
		return sha, data
	}
	for _, project := range []string{"hello", "sde", "app", "stamped"} {
		shaA, a := build(fa, project)
		shaB, b := build(fb, project)
		rep, err := artifactdiff.Diff(context.Background(), bytes.NewReader(a), bytes.NewReader(b), artifactdiff.Limits{})
		if err != nil {
			t.Fatalf("%s: artifactdiff: %v", project, err)
		}
		var diffs []string
		for _, d := range rep.Differences {
			diffs = append(diffs, d.String())
		}
		if project == "stamped" {
			// The hostile case: a build that reads the clock is caught.
			if shaA == shaB {
				t.Errorf("stamped with `date`, both build servers made %s: the check cannot fail", shaA)
			}
			if len(rep.Differences) != 1 || rep.Differences[0].Path != "stamped" || rep.Differences[0].Fields[0] != artifactdiff.FieldContent {
				t.Errorf("stamped: differences %q, want the content of stamped only", diffs)
			}
			continue
		}
		if shaA != shaB || !rep.Same() {
			t.Errorf("%s: build server a made %s, b made %s; differences %q", project, shaA, shaB, diffs)
		}
	}
}
