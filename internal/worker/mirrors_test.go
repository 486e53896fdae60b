package worker

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/gitmirror"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// gitIn runs git in dir (a work tree or a bare repository) and returns its
// trimmed output, failing the test on error.
func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// objectCount is how many objects the repository in dir holds, loose and
// packed.
func objectCount(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(gitIn(t, dir, "count-objects", "-v"), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		if k == "count" || k == "in-pack" {
			c, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("count-objects line %q: %v", line, err)
			}
			n += c
		}
	}
	return n
}

// packInodes maps each pack file of the repository in dir to its inode.
func packInodes(t *testing.T, dir string) map[string]uint64 {
	t.Helper()
	packs, err := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, p := range packs {
		out[filepath.Base(p)] = inode(t, p)
	}
	return out
}

// succeeded waits for attempt id's result, requires SUCCEEDED and returns
// the files of its artifact.
func succeeded(t *testing.T, f *fakeMeta, id uint64) map[string]string {
	t.Helper()
	res := f.waitResult(t, id)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("attempt %d: outcome %v (%s)\nlog:\n%s", id, res.GetOutcome(), res.GetReason(), f.log(id))
	}
	f.mu.Lock()
	blob := f.blobs[res.GetArtifact().GetSha256()]
	f.mu.Unlock()
	return untar(t, blob)
}

func TestASecondBuildOfAProjectFetchesOnlyNewObjectsIntoTheSameMirror(t *testing.T) {
	f := startFake(t)
	url, first := makeRepo(t, map[string]string{"version": "v1\n", "big.c": strings.Repeat("int x;\n", 100)})
	upstream := strings.TrimPrefix(url, "file://")
	cfg := testConfig(t, f)
	r := startClient(t, cfg)

	// Every mirror the build server opens, to count its clones and fetches.
	ms := r.c.runner.mirrors
	var opened []*gitmirror.Mirror // guarded by ms.mu, as open is called under it
	ms.mu.Lock()
	ms.open = func(dir, url string) sourceMirror {
		m := gitmirror.New(dir, url)
		opened = append(opened, m)
		return m
	}
	ms.mu.Unlock()
	mirrorsOpened := func() []*gitmirror.Mirror {
		ms.mu.Lock()
		defer ms.mu.Unlock()
		return slices.Clone(opened)
	}

	rec := recipe([]string{"cp version out"}, "out")
	f.push(t, assign(assignment(1, url, first, rec)))
	if got := succeeded(t, f, 1)["out"]; got != "v1\n" {
		t.Fatalf("first build's artifact = %q, want v1", got)
	}
	opens := mirrorsOpened()
	if len(opens) != 1 {
		t.Fatalf("first build opened %d mirrors, want 1", len(opens))
	}
	m := opens[0]
	if want := mirrorDir(filepath.Join(cfg.DataDir, "mirrors"), url); m.Dir() != want {
		t.Fatalf("mirror in %s, want %s", m.Dir(), want)
	}
	if n := m.FetchCount(); n != 1 {
		t.Fatalf("first build ran %d clones or fetches, want the one clone", n)
	}
	dirInode, packDirInode := inode(t, m.Dir()), inode(t, filepath.Join(m.Dir(), "objects", "pack"))
	packs := packInodes(t, m.Dir())
	if len(packs) == 0 {
		t.Fatal("the clone left no pack in the mirror")
	}
	objectsBefore := objectCount(t, m.Dir())

	// A new commit upstream: the next build of the project needs it.
	writeFile(t, filepath.Join(upstream, "version"), "v2\n")
	gitIn(t, upstream, "commit", "-q", "-a", "-m", "v2")
	second := gitIn(t, upstream, "rev-parse", "HEAD")
	newObjects := len(strings.Split(gitIn(t, upstream, "rev-list", "--objects", second, "^"+first), "\n"))

	f.push(t, assign(assignment(2, url, second, rec)))
	if got := succeeded(t, f, 2)["out"]; got != "v2\n" {
		t.Fatalf("second build's artifact = %q, want the new commit's v2", got)
	}
	if opens := mirrorsOpened(); len(opens) != 1 {
		t.Fatalf("the second build opened another mirror (%d in all)", len(opens))
	}
	if n := m.FetchCount(); n != 2 {
		t.Errorf("after the second build the mirror ran %d clones or fetches, want the clone and one fetch", n)
	}
	if inode(t, m.Dir()) != dirInode || inode(t, filepath.Join(m.Dir(), "objects", "pack")) != packDirInode {
		t.Error("the mirror directory was recreated (cloned again) instead of fetched into")
	}
	after := packInodes(t, m.Dir())
	for name, ino := range packs {
		if after[name] != ino {
			t.Errorf("pack %s of the clone is gone or rewritten", name)
		}
	}
	if got := objectCount(t, m.Dir()); got != objectsBefore+newObjects {
		t.Errorf("mirror holds %d objects after the fetch, want %d (the clone's) + %d (the new commit's)", got, objectsBefore, newObjects)
	}
	if got := gitIn(t, m.Dir(), "rev-parse", "refs/heads/main"); got != second {
		t.Errorf("mirror's main = %s, want the new commit %s", got, second)
	}
	gitIn(t, m.Dir(), "cat-file", "-e", second+"^{commit}")

	// A build of a commit built before needs no git at all: with the
	// upstream and the mirror out of reach, it still gets its source.
	if err := os.RemoveAll(upstream); err != nil {
		t.Fatal(err)
	}
	aside := m.Dir() + ".aside"
	if err := os.Rename(m.Dir(), aside); err != nil {
		t.Fatal(err)
	}
	f.push(t, assign(assignment(3, url, second, rec)))
	if got := succeeded(t, f, 3)["out"]; got != "v2\n" {
		t.Fatalf("third build's artifact = %q, want v2", got)
	}
	if n := m.FetchCount(); n != 2 {
		t.Errorf("a build of an already built commit ran a clone or fetch (%d in all)", n)
	}
	if _, err := os.Stat(m.Dir()); !os.IsNotExist(err) {
		t.Errorf("the mirror was recreated for a commit already built: %v", err)
	}
}
