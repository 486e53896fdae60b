package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/gitmirror"
	"github.com/kilnbuild/kiln/internal/sandbox"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// randomText is n bytes of incompressible text (git packs it as is).
func randomText(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// corruptPacks flips a byte every 997 bytes of every pack of the
// repository at dir, past its header: objects in it no longer inflate.
func corruptPacks(t *testing.T, dir string) {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
	if len(packs) == 0 {
		t.Fatalf("no pack in %s", dir)
	}
	for _, p := range packs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i := 200; i < len(b)-100; i += 997 {
			b[i] ^= 0xff
		}
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// countOpens makes ms count the mirrors it opens (one per clone from
// scratch: at start and after each wipe).
func countOpens(ms *mirrors) *atomic.Int32 {
	var n atomic.Int32
	ms.mu.Lock()
	ms.open = func(dir, url string) sourceMirror {
		n.Add(1)
		return gitmirror.New(dir, url)
	}
	ms.mu.Unlock()
	return &n
}

// TestAMirrorGitCannotReadIsWipedAndClonedAgain: a build server's
// mirror whose pack is corrupted on its disk (git archive fails:
// "packed object ... is corrupt") is wiped and cloned again, and the
// build goes on and succeeds, with the files of its commit; the new
// mirror is sound.
func TestAMirrorGitCannotReadIsWipedAndClonedAgain(t *testing.T) {
	f := startFake(t)
	url, first := makeRepo(t, map[string]string{"a": randomText(t, 20000), "b": randomText(t, 20000)})
	upstream := strings.TrimPrefix(url, "file://")
	cfg := testConfig(t, f)
	r := startClient(t, cfg)
	opens := countOpens(r.c.runner.mirrors)

	f.push(t, assign(assignment(1, url, first, recipe([]string{"cat a b > out"}, "out"))))
	succeeded(t, f, 1)
	mirror := mirrorDir(filepath.Join(cfg.DataDir, "mirrors"), url)
	marker := filepath.Join(mirror, "kiln-test-marker")
	writeFile(t, marker, "the mirror before the wipe\n")
	corruptPacks(t, mirror)

	// A new commit of the same files and one more: its export reads the
	// blobs in the corrupted pack.
	writeFile(t, filepath.Join(upstream, "c"), "new\n")
	gitIn(t, upstream, "add", "c")
	gitIn(t, upstream, "commit", "-q", "-m", "c")
	second := gitIn(t, upstream, "rev-parse", "HEAD")
	want := gitIn(t, upstream, "show", "HEAD:a") + gitIn(t, upstream, "show", "HEAD:b") + "new"

	f.push(t, assign(assignment(2, url, second, recipe([]string{"cat a b c | tr -d '\\n' > out"}, "out"))))
	if got := succeeded(t, f, 2)["out"]; got != want {
		t.Fatalf("the build after the wipe made %d bytes, want the commit's %d", len(got), len(want))
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the corrupted mirror was not wiped (a file planted in it is still there)")
	}
	if n := opens.Load(); n != 2 {
		t.Errorf("%d mirrors opened; want 2 (the first clone, the one after the wipe)", n)
	}
	gitIn(t, mirror, "fsck", "--no-dangling")
}

// TestAMirrorThatStaysUnusableIsWipedOnceAndTheBuildFailsItsSetup: when
// the clone after the wipe fails too (the remote's own pack is corrupt,
// though it lists its refs), the build server wipes once, not again and
// again, and the attempt ends SETUP_FAILED (another volunteer may try)
// saying both failures.
func TestAMirrorThatStaysUnusableIsWipedOnceAndTheBuildFailsItsSetup(t *testing.T) {
	f := startFake(t)
	src, commit := makeRepo(t, map[string]string{"a": randomText(t, 20000)})
	bare := filepath.Join(t.TempDir(), "up.git")
	if out, err := exec.Command("git", "clone", "-q", "--mirror", src, bare).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	corruptPacks(t, bare)
	url := "file://" + bare
	cfg := testConfig(t, f)
	r := startClient(t, cfg)
	opens := countOpens(r.c.runner.mirrors)

	f.push(t, assign(assignment(3, url, commit, recipe([]string{"cat a > out"}, "out"))))
	res := f.waitResult(t, 3)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED {
		t.Fatalf("outcome %v (%s); want SETUP_FAILED", res.GetOutcome(), res.GetReason())
	}
	if !strings.Contains(res.GetReason(), "after wiping the mirror") {
		t.Errorf("reason %q does not say the mirror was wiped and cloned again", res.GetReason())
	}
	if n := opens.Load(); n != 2 {
		t.Errorf("%d clones from scratch; want 2 (the first, one after the wipe)", n)
	}
}

// TestANetworkFailureOrAMissingCommitLeavesTheMirror: a remote that does
// not answer (the network) and a commit the remote does not have are not
// the mirror's fault: it stays as it is, not cloned again.
func TestANetworkFailureOrAMissingCommitLeavesTheMirror(t *testing.T) {
	f := startFake(t)
	url, first := makeRepo(t, map[string]string{"a": "a\n"})
	upstream := strings.TrimPrefix(url, "file://")
	cfg := testConfig(t, f)
	r := startClient(t, cfg)
	opens := countOpens(r.c.runner.mirrors)
	f.push(t, assign(assignment(4, url, first, recipe([]string{"cat a > out"}, "out"))))
	succeeded(t, f, 4)
	mirror := mirrorDir(filepath.Join(cfg.DataDir, "mirrors"), url)
	marker := filepath.Join(mirror, "kiln-test-marker")
	writeFile(t, marker, "the mirror before\n")

	missing := strings.Repeat("ab", 20)
	f.push(t, assign(assignment(5, url, missing, recipe([]string{"true"}))))
	if res := f.waitResult(t, 5); res.GetOutcome() == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("a commit the remote lacks built: %v", res)
	}
	if err := os.Rename(upstream, upstream+".gone"); err != nil {
		t.Fatal(err)
	}
	f.push(t, assign(assignment(6, url, strings.Repeat("cd", 20), recipe([]string{"true"}))))
	if res := f.waitResult(t, 6); res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED {
		t.Fatalf("with the remote gone: %v (%s); want SETUP_FAILED", res.GetOutcome(), res.GetReason())
	}
	if _, err := os.Stat(marker); err != nil || opens.Load() != 1 {
		t.Errorf("the mirror was wiped (%v, clones from scratch: %d; want the first only) for a failure that was not its own", err, opens.Load())
	}
}

// TestMirrorsOverTheirBoundLoseTheLeastRecentlyBuiltProject: with room
// for two projects' mirrors, building a third wipes the one built least
// recently, and building that one again wipes the next.
func TestMirrorsOverTheirBoundLoseTheLeastRecentlyBuiltProject(t *testing.T) {
	f := startFake(t)
	cfg := testConfig(t, f)
	cfg.MirrorBytes = 1_000_000 // each mirror: ~400 kB of pack and a few kB more
	cfg.mirrorBoundEvery = -1   // check after every build
	startClient(t, cfg)
	root := filepath.Join(cfg.DataDir, "mirrors")
	urls, commits := make([]string, 3), make([]string, 3)
	for i := range urls {
		b := make([]byte, 400_000) // incompressible: a pack of ~400 kB
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		urls[i], commits[i] = makeRepo(t, map[string]string{"a": string(b)})
	}
	exists := func(i int) bool {
		_, err := os.Stat(mirrorDir(root, urls[i]))
		return err == nil
	}
	id := uint64(10)
	build := func(i int) {
		t.Helper()
		id++
		f.push(t, assign(assignment(id, urls[i], commits[i], recipe([]string{"true"}))))
		succeeded(t, f, id)
	}
	build(0)
	build(1)
	if !exists(0) || !exists(1) {
		t.Fatal("two mirrors under the bound did not both stay")
	}
	build(2)
	f.waitFor(t, "the least recently built mirror wiped", func() bool { return !exists(0) })
	if !exists(1) || !exists(2) {
		t.Fatalf("mirrors kept: 1 %v, 2 %v; want both", exists(1), exists(2))
	}
	// A new commit of the first project: its mirror is cloned again (a
	// commit already built would come from the trees kept in memory).
	upstream := strings.TrimPrefix(urls[0], "file://")
	gitIn(t, upstream, "commit", "-q", "--allow-empty", "-m", "again")
	commits[0] = gitIn(t, upstream, "rev-parse", "HEAD")
	build(0)
	f.waitFor(t, "the next least recently built mirror wiped", func() bool { return !exists(1) })
	if !exists(0) || !exists(2) {
		t.Fatalf("mirrors kept: 0 %v, 2 %v; want both", exists(0), exists(2))
	}
	used, err := sandbox.DiskUsage(root)
	if err != nil || used > cfg.MirrorBytes {
		t.Errorf("mirrors use %d bytes (%v); bound %d", used, err, cfg.MirrorBytes)
	}
}

// TestTheBoundNeverWipesAProjectInUse: over the bound, a project whose
// source is being exported or whose compiler cache a build holds stays,
// even when least recently built; the others go, oldest first, only as
// many as needed.
func TestTheBoundNeverWipesAProjectInUse(t *testing.T) {
	dir := t.TempDir()
	ms := newMirrors(filepath.Join(dir, "mirrors"))
	ms.caches = &compilerCaches{root: filepath.Join(dir, "ccache"), maxBytes: 1 << 20, inUse: map[string]bool{}, owner: map[string]uint32{}, doomed: map[string]bool{}}
	ms.maxBytes = 250_000
	keys := []string{"000000000000000a", "000000000000000b", "000000000000000c", "000000000000000d"}
	for i, k := range keys {
		if err := os.MkdirAll(filepath.Join(ms.dir, k, "objects"), 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(ms.dir, k, "objects", "pack"), strings.Repeat("x", 100_000))
		at := time.Now().Add(time.Duration(i-10) * time.Minute)
		if err := os.Chtimes(filepath.Join(ms.dir, k), at, at); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(ms.caches.root, keys[1], "native"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(ms.caches.root, keys[1], "native", "0"), "cache")
	ms.exporting[keys[0]] = 1                                                // oldest, exporting
	ms.caches.inUse[filepath.Join(ms.caches.root, keys[1], "native")] = true // next, cache in use
	wiped, err := ms.bound()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(wiped, ",") != keys[2]+","+keys[3] {
		t.Fatalf("wiped %v; want %s then %s (the two not in use, oldest first)", wiped, keys[2], keys[3])
	}
	for _, k := range keys[:2] {
		if _, err := os.Stat(filepath.Join(ms.dir, k)); err != nil {
			t.Errorf("project %s in use was wiped: %v", k, err)
		}
	}
	if _, err := os.Stat(filepath.Join(ms.caches.root, keys[1], "native", "0")); err != nil {
		t.Errorf("the cache in use lost its files: %v", err)
	}
}

// TestAWipeDuringABuildLeavesItAndOtherProjectsAlone is the hostile
// case: project A's build plants links to project B's compiler cache and
// mirror in its own cache; A's mirror is wiped while A's build runs (as a
// damaged mirror or the bound would). A's build goes on with its cache
// and succeeds; its mirror is gone at once and its cache when the build
// ends; B's cache and mirror are unchanged (the links were removed, not
// followed) and B's next build takes every object from its cache.
func TestAWipeDuringABuildLeavesItAndOtherProjectsAlone(t *testing.T) {
	if !ccacheInstalled() {
		t.Skip("ccache is not installed (scripts/setup.sh installs it)")
	}
	if _, err := exec.LookPath("cc"); err != nil {
		t.Skip("no cc")
	}
	bw := sandbox.Bwrap{Grace: 200 * time.Millisecond}
	if err := bw.Available(); err != nil {
		t.Skipf("bubblewrap unavailable: %v", err)
	}
	f := startFake(t)
	cfg := testConfig(t, f)
	cfg.Sandbox = bw
	withBuildUsers(t, &cfg)
	r := startClient(t, cfg)
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
	ms := r.c.runner.mirrors

	urlB, commitB, rB, objects := ccacheProject(t, "b")
	first := f.build(t, assignment(101, urlB, commitB, rB))
	cacheB := filepath.Join(cfg.DataDir, "ccache", projectKey(urlB), targetKey("native"))
	mirrorB := mirrorDir(filepath.Join(cfg.DataDir, "mirrors"), urlB)
	before := treeDigest(t, cacheB) + treeDigest(t, mirrorB)

	urlA, commitA, _, _ := ccacheProject(t, "a")
	cacheA := filepath.Join(cfg.DataDir, "ccache", projectKey(urlA), targetKey("native"))
	mirrorA := mirrorDir(filepath.Join(cfg.DataDir, "mirrors"), urlA)
	hostile := &kilnv1.Recipe{TimeoutSeconds: 120, Artifacts: []string{"a.o", "b.o"}, BuildSteps: []string{
		"cc -g -O1 -c a.c -o a.o",
		"ln -s " + cacheB + " /tmp/kiln/ccache/linkB && ln -s " + mirrorB + " /tmp/kiln/ccache/linkM && sleep 2",
		"cc -g -O1 -c b.c -o b.o",
	}}
	a := assignment(102, urlA, commitA, hostile)
	a.Project = "a"
	f.push(t, assign(a))
	f.waitFor(t, "A's first object in its cache", func() bool { return objectsOf(t, cacheA) > 0 })
	if err := ms.wipe(urlA); err != nil {
		t.Fatalf("wiping A during its build: %v", err)
	}
	if _, err := os.Stat(mirrorA); err == nil {
		t.Error("A's mirror is still there after the wipe")
	}
	if _, err := os.Stat(cacheA); err != nil {
		t.Errorf("A's cache in use was removed under its build: %v", err)
	}
	res := f.waitResult(t, 102)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("A's build after the wipe: %v (%s)\nlog:\n%s", res.GetOutcome(), res.GetReason(), f.log(102))
	}
	if got := res.GetCompilerCache(); got.GetMisses() != 2 {
		t.Errorf("A's build used its cache as: %v; want 2 misses (both compiled, the second after the wipe)", got)
	}
	f.waitFor(t, "A's cache removed once its build released it", func() bool {
		_, err := os.Lstat(cacheA)
		return err != nil
	})
	if after := treeDigest(t, cacheB) + treeDigest(t, mirrorB); after != before {
		t.Fatal("wiping project A changed project B's cache or mirror")
	}
	again := f.build(t, assignment(103, urlB, commitB, rB))
	if again.GetCompilerCache().GetHits() != uint32(objects) || again.GetArtifact().GetSha256() != first.GetArtifact().GetSha256() {
		t.Errorf("B's build after A's wipe: %v, artifact %s; want %d hits and %s", again.GetCompilerCache(), again.GetArtifact().GetSha256(), objects, first.GetArtifact().GetSha256())
	}
}

// TestWhatMakesAMirrorUnusable: only failures of the mirror itself send
// it to be wiped; a timeout, the project's own tree or commit, a full
// disk and a remote that does not answer do not.
func TestWhatMakesAMirrorUnusable(t *testing.T) {
	url, _ := makeRepo(t, map[string]string{"a": "a\n"})
	ms := newMirrors(t.TempDir())
	up := &mirrorEntry{m: gitmirror.New(t.TempDir()+"/m", url)}
	down := &mirrorEntry{m: gitmirror.New(t.TempDir()+"/m", "file://"+t.TempDir()+"/nothing-here")}
	corrupt := errors.New("git archive: fatal: packed object is corrupt")
	for _, tc := range []struct {
		name string
		e    *mirrorEntry
		err  error
		want bool
	}{
		{"git failing on the mirror", up, corrupt, true},
		{"a fetch failing while the remote answers", up, fmt.Errorf("fetch: %w: bad object", gitmirror.ErrUnreachable), true},
		{"a fetch failing while the remote does not answer", down, fmt.Errorf("fetch: %w", gitmirror.ErrUnreachable), false},
		{"a git process that timed out", up, fmt.Errorf("git fetch: %w", context.DeadlineExceeded), false},
		{"a tree unsafe to check out", up, fmt.Errorf("x: %w", gitmirror.ErrUnsafePath), false},
		{"a commit the remote lacks", up, fmt.Errorf("x: %w", gitmirror.ErrUnknownRevision), false},
		{"a full disk", up, &os.PathError{Op: "write", Path: "f", Err: syscall.ENOSPC}, false},
	} {
		if got := ms.unusable(context.Background(), tc.e, tc.err); got != tc.want {
			t.Errorf("%s: unusable = %v, want %v", tc.name, got, tc.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ms.unusable(ctx, up, corrupt) {
		t.Error("a failure after the build was cancelled made the mirror unusable")
	}
}
