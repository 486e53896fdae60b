package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kilnbuild/kiln/internal/sandbox"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// ccacheProject is a small C project whose objects record their paths
// (-g, __FILE__) and their build's time (__DATE__ under
// SOURCE_DATE_EPOCH): a cache that returned another build's object, or
// one made elsewhere, would show in the artifact. It builds for the
// native target and, when its cross compiler is installed, for s390x.
func ccacheProject(t *testing.T, name string) (url, commit string, r *kilnv1.Recipe, objects int) {
	t.Helper()
	files := map[string]string{"main.c": `#include <stdio.h>
extern const char *a(void), *b(void), *c(void);
int main(void) { printf("%s %s %s %s\n", a(), b(), c(), __FILE__); return 0; }
`}
	for _, f := range []string{"a", "b", "c"} {
		files[f+".c"] = `const char *` + f + `(void) { return "` + name + `-` + f + ` " __FILE__ " " __DATE__; }` + "\n"
	}
	url, commit = makeRepo(t, files)
	cmds := []string{`for f in main a b c; do cc -g -O1 -c "$f.c" -o "$f.o"; done && cc -o prog main.o a.o b.o c.o`}
	arts := []string{"prog", "*.o"}
	objects = 4
	if _, err := exec.LookPath("s390x-linux-gnu-gcc"); err == nil {
		cmds = append(cmds, `mkdir -p s390x && for f in main a b c; do s390x-linux-gnu-gcc -g -O1 -c "$f.c" -o "s390x/$f.o"; done`)
		arts = append(arts, "s390x/*.o")
		objects += 4
	}
	return url, commit, &kilnv1.Recipe{TimeoutSeconds: 120, BuildSteps: cmds, Artifacts: arts}, objects
}

// startCcacheClient starts a bubblewrap Client keeping compiler caches;
// it skips where ccache is not installed.
func startCcacheClient(t *testing.T, edit func(*Config)) (*fakeMeta, Config) {
	t.Helper()
	if !ccacheInstalled() {
		t.Skip("ccache is not installed (scripts/setup.sh installs it)")
	}
	if _, err := exec.LookPath("cc"); err != nil {
		t.Skip("no cc")
	}
	return startBwrapClientWith(t, edit)
}

// build runs a as attempt id and fails the test unless it succeeds.
func (f *fakeMeta) build(t *testing.T, a *kilnv1.Assignment) *kilnv1.AttemptResult {
	t.Helper()
	f.push(t, assign(a))
	res := f.waitResult(t, a.GetAttemptId())
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("attempt %d: %v (%s)\nlog:\n%s", a.GetAttemptId(), res.GetOutcome(), res.GetReason(), f.log(a.GetAttemptId()))
	}
	return res
}

// TestAWarmCompilerCacheMakesTheSameArtifactAsACold: the first build of
// a project compiles every object (all misses), the second of the same
// commit takes every object from the cache (all hits), native and cross,
// and both artifacts have one sha256, the same as a build server without
// a compiler cache makes. The hit rate travels with the result and is in
// the build's log.
func TestAWarmCompilerCacheMakesTheSameArtifactAsACold(t *testing.T) {
	url, commit, r, objects := ccacheProject(t, "p")
	f, _ := startCcacheClient(t, nil)

	cold := f.build(t, assignment(61, url, commit, r))
	warm := f.build(t, assignment(62, url, commit, r))
	if got := cold.GetCompilerCache(); got.GetMisses() != uint32(objects) || got.GetHits() != 0 {
		t.Errorf("cold build's compiler cache: %v; want %d misses, no hit", got, objects)
	}
	if got := warm.GetCompilerCache(); got.GetHits() != uint32(objects) || got.GetMisses() != 0 {
		t.Errorf("warm build's compiler cache: %v; want %d hits, no miss\nlog:\n%s", got, objects, f.log(62))
	}
	if !strings.Contains(f.log(62), "compiler cache: ") || !strings.Contains(f.log(62), "(hit rate 100%)") {
		t.Errorf("the warm build's log does not give its hit rate:\n%s", f.log(62))
	}
	if cold.GetArtifact().GetSha256() != warm.GetArtifact().GetSha256() {
		t.Errorf("cold and warm cache made different artifacts: %s and %s", cold.GetArtifact().GetSha256(), warm.GetArtifact().GetSha256())
	}

	g, _ := startCcacheClient(t, func(c *Config) { c.CompilerCacheBytes = -1 })
	none := g.build(t, assignment(63, url, commit, r))
	if none.GetCompilerCache() != nil {
		t.Errorf("a build server without compiler caches reported %v", none.GetCompilerCache())
	}
	if none.GetArtifact().GetSha256() != cold.GetArtifact().GetSha256() {
		t.Errorf("with and without a compiler cache the artifacts differ: %s and %s", cold.GetArtifact().GetSha256(), none.GetArtifact().GetSha256())
	}
}

// treeDigest hashes every entry under dir (name, mode, owner, content);
// "" when dir does not exist.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	if _, err := os.Lstat(dir); err != nil {
		return ""
	}
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := p + " " + fi.Mode().String() + " " + strconv.FormatUint(uint64(st.Uid), 10)
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			line += " " + hex.EncodeToString(sum[:])
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(sum[:])
}

// objectsOf lists the cache's result files (not its stats or temporary files).
func objectsOf(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && (strings.HasSuffix(p, "R") || strings.HasSuffix(p, "M")) {
			n++
		}
		return nil
	})
	return n
}

// TestABuildCannotReachAnotherProjectsCompilerCache is the hostile case:
// project A's build looks for project B's cache everywhere it can (its
// own cache directory, the host path of B's, anything named ccache that
// it can write) and writes a poisoned object wherever it gets; B's cache
// must be unchanged and B's next build all hits with the same artifact.
// A's own cache starts empty: nothing of B shows there. Between builds a
// cache belongs to root, mode 0700.
func TestABuildCannotReachAnotherProjectsCompilerCache(t *testing.T) {
	urlB, commitB, rB, objects := ccacheProject(t, "b")
	f, cfg := startCcacheClient(t, nil)
	first := f.build(t, assignment(71, urlB, commitB, rB))

	cacheB := filepath.Join(cfg.DataDir, "ccache", projectKey(urlB), targetKey("native"))
	if objectsOf(t, cacheB) == 0 {
		t.Fatalf("no object in B's cache at %s after its build", cacheB)
	}
	fi, err := os.Lstat(cacheB)
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || fi.Mode().Perm() != 0o700 {
			t.Errorf("B's cache between builds: uid %d mode %v; want root's, 0700", st.Uid, fi.Mode().Perm())
		}
	}
	before := treeDigest(t, cacheB)

	urlA, commitA, _, _ := ccacheProject(t, "a")
	poison := `for d in /tmp/kiln/ccache ` + cacheB + ` ` + filepath.Dir(cacheB) + ` ` + cfg.DataDir + `/ccache; do
  mkdir -p "$d/0/0" 2>/dev/null; echo poison > "$d/0/0/evil.R" 2>/dev/null && echo "wrote $d"
done
find / -xdev -name '*ccache*' -type d -writable 2>/dev/null | while read -r d; do echo poison > "$d/evil.R" 2>/dev/null && echo "wrote $d"; done; true`
	hostile := &kilnv1.Recipe{TimeoutSeconds: 120, BuildSteps: []string{"ls -A /tmp/kiln/ccache > seen.txt", poison, "cc -c a.c -o a.o"}, Artifacts: []string{"seen.txt"}}
	a := assignment(72, urlA, commitA, hostile)
	a.Project = "a"
	resA := f.build(t, a)
	if seen := untar(t, f.blob(t, resA))["seen.txt"]; seen != "" {
		t.Errorf("project A's build saw in its cache directory, before compiling: %q", seen)
	}
	t.Logf("A's build log:\n%s", f.log(72))

	if after := treeDigest(t, cacheB); after != before {
		t.Fatalf("project A's build changed project B's compiler cache")
	}
	again := f.build(t, assignment(73, urlB, commitB, rB))
	if again.GetCompilerCache().GetHits() != uint32(objects) || again.GetArtifact().GetSha256() != first.GetArtifact().GetSha256() {
		t.Errorf("B's build after A's: %v, artifact %s; want %d hits and %s", again.GetCompilerCache(), again.GetArtifact().GetSha256(), objects, first.GetArtifact().GetSha256())
	}
}

// TestTargetsOfOneProjectHaveCachesOfTheirOwn: the same source built for
// another target of the same build server starts from an empty cache.
func TestTargetsOfOneProjectHaveCachesOfTheirOwn(t *testing.T) {
	url, commit, r, objects := ccacheProject(t, "t")
	f, _ := startCcacheClient(t, func(c *Config) {
		other := testTarget()
		other.Info.Id = "cross:other"
		c.Targets = append(c.Targets, other)
	})
	f.build(t, assignment(81, url, commit, r))
	a := assignment(82, url, commit, r)
	a.TargetId = "cross:other"
	res := f.build(t, a)
	if got := res.GetCompilerCache(); got.GetHits() != 0 || got.GetMisses() != uint32(objects) {
		t.Errorf("the other target's first build: %v; want %d misses, no hit", got, objects)
	}
}

// TestACompilerCacheOverItsBoundIsEmptied: a build that stuffs its cache
// past the bound (ccache's own limit would not notice files it did not
// write) finds an empty cache next time; and links a build plants in its
// cache are removed before the next build gets it, not followed.
func TestACompilerCacheOverItsBoundIsEmptied(t *testing.T) {
	url, commit, _, _ := ccacheProject(t, "s")
	f, cfg := startCcacheClient(t, func(c *Config) { c.CompilerCacheBytes = 256 << 10 })
	victim := filepath.Join(t.TempDir(), "victim")
	writeFile(t, victim, "host file\n")
	stuff := &kilnv1.Recipe{TimeoutSeconds: 60, Artifacts: []string{"a.o"}, BuildSteps: []string{
		"cc -c a.c -o a.o", "ln -s " + victim + " /tmp/kiln/ccache/link",
	}}
	f.build(t, assignment(91, url, commit, stuff))
	cache := filepath.Join(cfg.DataDir, "ccache", projectKey(url), targetKey("native"))
	if _, err := os.Lstat(filepath.Join(cache, "link")); err != nil {
		t.Fatalf("the planted link is not in the cache after the build: %v", err)
	}
	look := &kilnv1.Recipe{TimeoutSeconds: 60, Artifacts: []string{"a.o"}, BuildSteps: []string{
		"test ! -e /tmp/kiln/ccache/link", "cc -c a.c -o a.o", "head -c 1048576 /dev/urandom > /tmp/kiln/ccache/stuffing",
	}}
	res := f.build(t, assignment(92, url, commit, look))
	if res.GetCompilerCache().GetHits() != 1 {
		t.Errorf("the build after the link: %v; want its object from the cache", res.GetCompilerCache())
	}
	if fi, err := os.Stat(victim); err != nil || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
		t.Errorf("the host file the link named changed owner: %v", err)
	}
	if _, err := os.Lstat(cache); err == nil {
		t.Errorf("a cache of over 1 MiB against a bound of 256 KiB was kept")
	}
	res = f.build(t, assignment(93, url, commit, look))
	if res.GetCompilerCache().GetMisses() != 1 {
		t.Errorf("the build after the cache was emptied: %v; want a miss", res.GetCompilerCache())
	}
}

// TestWipingAProjectsMirrorWipesItsCompilerCaches, and only its own.
func TestWipingAProjectsMirrorWipesItsCompilerCaches(t *testing.T) {
	dir := t.TempDir()
	ms := newMirrors(filepath.Join(dir, "mirrors"))
	ms.caches = &compilerCaches{root: filepath.Join(dir, "ccache"), maxBytes: 1 << 20, inUse: map[string]bool{}, owner: map[string]uint32{}, doomed: map[string]bool{}}
	for _, url := range []string{"file:///a", "file:///b"} {
		for _, p := range []string{mirrorDir(ms.dir, url) + "/objects", ms.caches.dir(url, "native") + "/0"} {
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := ms.wipe("file:///a"); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{
		mirrorDir(ms.dir, "file:///a"): false, filepath.Dir(ms.caches.dir("file:///a", "native")): false,
		mirrorDir(ms.dir, "file:///b"): true, ms.caches.dir("file:///b", "native"): true,
	} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s exists: %v; want %v", p, err == nil, want)
		}
	}
}

// TestReadCacheStatsCountsCompilationsAndTrustsNoLink: the stats log as
// ccache 4.7 writes it; a link or a FIFO in its place (the build owns
// its home) is not read, and does not block.
func TestReadCacheStatsCountsCompilationsAndTrustsNoLink(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "stats")
	writeFile(t, log, `# a.c
cache_miss
direct_cache_miss
local_storage_miss
local_storage_write
preprocessed_cache_miss
# a.c
direct_cache_hit
local_storage_hit
local_storage_read_hit
# b.c
preprocessed_cache_hit
# m.c
called_for_link
# a.c
called_for_preprocessing
`)
	got := readCacheStats(log)
	if got.GetHits() != 2 || got.GetMisses() != 1 || got.GetUncacheable() != 2 {
		t.Errorf("stats %v; want 2 hits, 1 miss, 2 uncacheable", got)
	}
	if got := readCacheStats(filepath.Join(dir, "none")); got != nil {
		t.Errorf("no log: %v; want nil", got)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(log, link); err != nil {
		t.Fatal(err)
	}
	if got := readCacheStats(link); got != nil {
		t.Errorf("a link: %v; want nil", got)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan *kilnv1.CompilerCacheStats, 1)
	go func() { done <- readCacheStats(fifo) }()
	select {
	case got := <-done:
		if got != nil {
			t.Errorf("a FIFO: %v; want nil", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reading a FIFO in place of the stats log blocked")
	}
}

// TestHandOverCacheRemovesLinksAndSpecialFiles: what the walk as root
// would follow or could not own is gone; plain files become the build
// user's.
func TestHandOverCacheRemovesLinksAndSpecialFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files away")
	}
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "outside")
	writeFile(t, outside, "x")
	writeFile(t, filepath.Join(dir, "obj"), "o")
	if err := os.Symlink(outside, filepath.Join(dir, "sym")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(outside, filepath.Join(dir, "hard")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	u := &sandbox.User{UID: 1700099001, GID: 1700099001}
	if err := handOverCache(dir, u); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "obj" {
		t.Errorf("left in the cache: %v; want only obj", entries)
	}
	if fi, _ := os.Stat(outside); fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Error("the file outside the cache changed owner")
	}
	if fi, _ := os.Stat(filepath.Join(dir, "obj")); fi.Sys().(*syscall.Stat_t).Uid != u.UID {
		t.Error("obj was not given to the build user")
	}
}

// Red team: a build leaves in its cache a tree deeper than a path can
// name (cheap: a few hundred empty directories; the disk usage walk, by
// descriptors, does not mind it, so the cache is kept). The next build
// of another uid must still get a cache, not fail its setup, build after
// build, on this build server.
func TestACompilerCacheTooDeepToWalkIsEmptiedNotFatal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files away")
	}
	root := filepath.Join(t.TempDir(), "ccache")
	c := &compilerCaches{root: root, maxBytes: 1 << 20, inUse: map[string]bool{}, owner: map[string]uint32{}}
	const url = "https://example.org/deep.git"
	host := c.dir(url, "native")
	if err := os.MkdirAll(host, 0o700); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(host, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("d", 40)
	for range 200 { // 200 × 41 bytes: past PATH_MAX
		if err := unix.Mkdirat(fd, name, 0o700); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	unix.Close(fd)
	u := &sandbox.User{UID: 1700099002, GID: 1700099002}
	cc, err := c.take(url, "native", u)
	if err != nil || cc == nil {
		t.Fatalf("take after a too-deep tree: %v, %v; want the cache, emptied", cc, err)
	}
	defer cc.release()
	fi, err := os.Lstat(host)
	if err != nil || fi.Sys().(*syscall.Stat_t).Uid != u.UID {
		t.Fatalf("the cache is not the build user's: %v", err)
	}
}
