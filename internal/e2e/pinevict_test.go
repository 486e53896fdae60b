package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/compilecli"
	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// A build whose artifact was evicted cannot be pinned: the pin would name
// bytes that are gone. The refusal says what to do, and changes nothing.
func TestPinevictAnEvictedBuildCannotBePinned(t *testing.T) {
	f := farmtest.New(t)
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	// Artifacts of this project are a few KiB; the limit holds about two.
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--cache-max-bytes", "7000", "--inline-artifact-bytes", "0")
	f.AddProject("hello", repo)
	f.StartBuildserver(f.AddBuildServer("builder"))
	f.WaitBuildServers(1)
	build := func(level string) result {
		return parseResult(t, f.Startcompile("--project", "hello", "-o", "level="+level, "--wait", "--json", "a@example.com"))
	}
	old := build("1")
	build("2")
	build("0")
	farmtest.Eventually(t, farmtest.WaitTimeout, func() error {
		if _, err := os.Stat(blobPath(f.MetaDataDir(), old.ArtifactSHA256)); err == nil {
			return errorf("build %d's artifact still stored", old.BuildID)
		}
		return nil
	})

	out, err := exec.Command(farmtest.Binary(t, "metaserver"), "pin", "--data-dir", f.MetaDataDir(), "release-old", strconv.FormatUint(old.BuildID, 10)).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "evicted") {
		t.Fatalf("pinning an evicted build: %v\n%s\nwant exit status 2 saying it was evicted", err, out)
	}
	r := f.Startcompile("--pin", "release-old", "--download", t.TempDir(), "a@example.com")
	if r.Exit == 0 {
		t.Fatalf("the refused pin resolves:\n%s", r.Stdout)
	}
}

// exitCode is the exit status of a finished command run by runCmd.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// tarFiles reads a stored artifact (a gzipped tar) and returns its
// regular files' contents by cleaned path.
func tarFiles(t *testing.T, path string) map[string][]byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("artifact %s is not gzip: %v", path, err)
	}
	tr := tar.NewReader(zr)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("artifact %s: %v", path, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Clean(h.Name)] = b
	}
	return out
}

// sameTree fails unless dir holds exactly the regular files of want
// with the same bytes.
func sameTree(t *testing.T, dir string, want map[string][]byte) {
	t.Helper()
	got := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == compilecli.ProvenanceDir {
			return filepath.SkipDir // the proof kept beside the artifact's files
		}
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		got[rel] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("downloaded %d files into %s, the stored artifact holds %d", len(got), dir, len(want))
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || !bytes.Equal(g, w) {
			t.Fatalf("downloaded %s differs from the stored artifact's (present %v, %d vs %d bytes)", name, ok, len(g), len(w))
		}
	}
}

func TestAPinAlwaysResolvesToTheSameBytesAndNeverChanges(t *testing.T) {
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 1)
	first := parseResult(t, f.Startcompile("--project", "hello", "-o", "level=1", "--wait", "--json", "a@example.com"))
	second := parseResult(t, f.Startcompile("--project", "hello", "-o", "level=3", "--wait", "--json", "a@example.com"))
	if first.State != "succeeded" || second.State != "succeeded" || first.ArtifactSHA256 == second.ArtifactSHA256 {
		t.Fatalf("builds: %+v\n%+v", first, second)
	}
	f.Pin("release-1", first.BuildID)
	blob := blobPath(f.MetaDataDir(), first.ArtifactSHA256)
	if sum := sha256File(t, blob); sum != first.ArtifactSHA256 {
		t.Fatalf("the pinned build's blob hashes to %s, its ArtifactSHA256 is %s", sum, first.ArtifactSHA256)
	}
	stored := tarFiles(t, blob)

	fetch := func(when string) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "pin")
		r := f.Startcompile("--pin", "release-1", "--download", out, "--json", "b@example.com")
		expectExit(t, r, 0)
		got := parseResult(t, r)
		if got.BuildID != first.BuildID || got.ArtifactSHA256 != first.ArtifactSHA256 || got.ArtifactSize != first.ArtifactSize {
			t.Fatalf("%s: --pin release-1 answered %+v, want build %d sha256 %s", when, got, first.BuildID, first.ArtifactSHA256)
		}
		sameTree(t, out, stored)
	}
	fetch("after pinning")

	// A pin never changes: naming another build under it is refused.
	meta := farmtest.Binary(t, "metaserver")
	out, err := runCmd(meta, "pin", "--data-dir", f.MetaDataDir(), "release-1", strconv.FormatUint(second.BuildID, 10))
	if code := exitCode(err); code != 2 || !strings.Contains(out, "already names an artifact") {
		t.Fatalf("re-pinning release-1 to build %d: exit %d (%v), want 2 and \"already names an artifact\":\n%s", second.BuildID, code, err, out)
	}
	fetch("after an attempt to re-pin")
	// Re-pinning to the very same build is refused too (a name is created once).
	out, err = runCmd(meta, "pin", "--data-dir", f.MetaDataDir(), "release-1", strconv.FormatUint(first.BuildID, 10))
	if code := exitCode(err); code != 2 {
		t.Fatalf("pinning release-1 again: exit %d (%v), want 2:\n%s", code, err, out)
	}
	// Across a restart too.
	f.Meta().Restart()
	fetch("after a metaserver restart")
}

// padding is incompressible bytes from a fixed seed, so that every
// artifact of the eviction test weighs about the same.
func padding(n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

func TestEvictionChoosesTheLeastRecentlyUsedNotTheOldest(t *testing.T) {
	const pad, limit = 20000, 76000
	// level.txt makes every level's artifact distinct (-O2 and -O3 give
	// the same program, and identical artifacts share one blob).
	const manifest = `options:
  level: {type: int, default: 2}
build:
  - make CFLAGS=-O$KILN_OPT_LEVEL
  - echo "$KILN_OPT_LEVEL" > level.txt
artifacts: [hello, level.txt, pad.bin]
timeout: 2m
`
	f := farmtest.New(t)
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{ManifestText: manifest, Files: map[string]string{"pad.bin": padding(pad)}})
	// Three artifacts fit under the limit (the pinned one counts), four do not.
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--cache-max-bytes", strconv.Itoa(limit), "--inline-artifact-bytes", "0")
	f.AddProject("hello", repo)
	f.StartBuildserver(f.AddBuildServer("builder"))
	f.WaitBuildServers(1)
	build := func(level string) result {
		t.Helper()
		r := parseResult(t, f.Startcompile("--project", "hello", "-o", "level="+level, "--wait", "--json", "a@example.com"))
		if r.State != "succeeded" || r.Cached {
			t.Fatalf("level %s: %+v", level, r)
		}
		return r
	}
	stored := func(r result) bool {
		_, err := os.Stat(blobPath(f.MetaDataDir(), r.ArtifactSHA256))
		return err == nil
	}
	pinned := build("0")
	f.Pin("release-1", pinned.BuildID)
	b1 := build("1")
	b2 := build("2")
	if pinned.ArtifactSize+b1.ArtifactSize+b2.ArtifactSize > limit {
		t.Fatalf("artifact sizes %d, %d, %d exceed the limit %d together: the test's sizes are off",
			pinned.ArtifactSize, b1.ArtifactSize, b2.ArtifactSize, limit)
	}
	if !stored(b1) || !stored(b2) || !stored(pinned) {
		t.Fatal("an artifact was evicted while the cache was under its limit")
	}
	// b1 is the oldest but now the most recently used of b1 and b2.
	hit := parseResult(t, f.Startcompile("--project", "hello", "-o", "level=1", "--json", "b@example.com"))
	if !hit.Cached || hit.BuildID != b1.BuildID {
		t.Fatalf("touching level 1: %+v, want cached build %d", hit, b1.BuildID)
	}
	b3 := build("3")
	total := pinned.ArtifactSize + b1.ArtifactSize + b2.ArtifactSize + b3.ArtifactSize
	if total <= limit || total-b2.ArtifactSize > limit {
		t.Fatalf("artifact sizes %d, %d, %d, %d: evicting exactly one must fit the limit %d; the test's sizes are off",
			pinned.ArtifactSize, b1.ArtifactSize, b2.ArtifactSize, b3.ArtifactSize, limit)
	}
	farmtest.Eventually(t, farmtest.WaitTimeout, func() error {
		if stored(b2) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ov, err := kilnv1.NewStatusServiceClient(f.Conn()).GetOverview(ctx, &kilnv1.GetOverviewRequest{})
			return errorf("the least recently used artifact (build %d) is still stored (sizes %d %d %d %d; metaserver counts %d bytes in %d artifacts, %v)",
				b2.BuildID, pinned.ArtifactSize, b1.ArtifactSize, b2.ArtifactSize, b3.ArtifactSize, ov.GetCacheBytes(), ov.GetCacheArtifacts(), err)
		}
		if n, err := mailMetric(f, "kiln_cache_evictions_total"); err != nil || n != 1 {
			return errorf("kiln_cache_evictions_total = %v (%v), want 1", n, err)
		}
		return nil
	})
	for _, keep := range []result{pinned, b1, b3} {
		if !stored(keep) {
			t.Fatalf("artifact of build %d was evicted (b1 %d was used last, b2 %d least recently)", keep.BuildID, b1.BuildID, b2.BuildID)
		}
	}
	// The touched one is still answered from the cache; the evicted one is built again.
	if got := parseResult(t, f.Startcompile("--project", "hello", "-o", "level=1", "--json", "b@example.com")); !got.Cached || got.BuildID != b1.BuildID {
		t.Fatalf("level 1 after eviction: %+v, want cached build %d", got, b1.BuildID)
	}
	if got := parseResult(t, f.Startcompile("--project", "hello", "-o", "level=2", "--json", "b@example.com")); got.Cached || got.BuildID == b2.BuildID {
		t.Fatalf("level 2 after its eviction: %+v, want a new build", got)
	}
}
