package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

func TestTheSecondIdenticalRequestIsAnsweredFromTheCache(t *testing.T) {
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 1)
	first := parseResult(t, f.Startcompile("--project", "hello", "-o", "level=2", "--wait", "--json", "a@example.com"))
	if first.State != "succeeded" || first.Cached {
		t.Fatalf("first request: %+v", first)
	}
	// Same options in another order, the default spelled out or left out: one entry.
	for _, args := range [][]string{
		{"-o", "level=2"},
		{"-o", "flavor=plain", "-o", "level=2"},
		{"-o", "level=02"},
		{},
	} {
		argv := append([]string{"--project", "hello", "--json"}, args...)
		r := f.Startcompile(append(argv, "b@example.com")...)
		expectExit(t, r, 0)
		got := parseResult(t, r)
		if !got.Cached || got.BuildID != first.BuildID || got.ArtifactSHA256 != first.ArtifactSHA256 {
			t.Fatalf("request with %v: %+v, want cached build %d", args, got, first.BuildID)
		}
	}
	// A cached answer downloads too.
	out := filepath.Join(t.TempDir(), "out")
	expectExit(t, f.Startcompile("--project", "hello", "--download", out, "c@example.com"), 0)
	if _, err := os.Stat(filepath.Join(out, "hello")); err != nil {
		t.Fatal(err)
	}
	if n := len(listBuilds(t, f)); n != 1 {
		t.Fatalf("%d builds exist, want exactly 1", n)
	}
	// Another option value is another build.
	other := parseResult(t, f.Startcompile("--project", "hello", "-o", "level=1", "--wait", "--json", "a@example.com"))
	if other.Cached || other.BuildID == first.BuildID {
		t.Fatalf("another option value was served from the cache: %+v", other)
	}
}

func TestTwentyConcurrentIdenticalRequestsMakeOneBuild(t *testing.T) {
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 0)
	var wg sync.WaitGroup
	results := make([]farmtest.Result, 20)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = f.Startcompile("--project", "hello", "--wait", "--json", "user"+strconv.Itoa(i)+"@example.com")
		}()
	}
	// Everyone is queued or joined before a build server exists.
	farmtest.Eventually(t, farmtest.WaitTimeout, func() error {
		if b := listBuilds(t, f); len(b) != 1 || b[0].GetWaiters() != 20 {
			return errorf("builds %d, waiters %v", len(b), b)
		}
		return nil
	})
	f.StartBuildserver(f.AddBuildServer("builder"))
	wg.Wait()
	var id uint64
	for i, r := range results {
		expectExit(t, r, 0)
		got := parseResult(t, r)
		if got.State != "succeeded" {
			t.Fatalf("request %d: %+v", i, got)
		}
		if id == 0 {
			id = got.BuildID
		}
		if got.BuildID != id {
			t.Fatalf("request %d got build %d, others %d", i, got.BuildID, id)
		}
	}
	if n := len(listBuilds(t, f)); n != 1 {
		t.Fatalf("%d builds for 20 identical requests", n)
	}
}

func TestAnotherLibcOnTheTargetMissesTheCache(t *testing.T) {
	if _, err := os.Stat("/usr/bin/musl-gcc"); err != nil {
		t.Skip("musl-gcc not installed")
	}
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 1, "--target", "native", "--target", "musl")
	glibc := parseResult(t, f.Startcompile("--project", "hello", "--libc", "glibc", "--wait", "--json", "a@example.com"))
	musl := parseResult(t, f.Startcompile("--project", "hello", "--libc", "musl", "--wait", "--json", "a@example.com"))
	if musl.Cached || musl.BuildID == glibc.BuildID || musl.Platform["libc"] != "musl" || glibc.Platform["libc"] != "glibc" {
		t.Fatalf("glibc %+v\nmusl %+v", glibc, musl)
	}
	// Now each is cached for its own libc.
	again := parseResult(t, f.Startcompile("--project", "hello", "--libc", "musl", "--json", "a@example.com"))
	if !again.Cached || again.BuildID != musl.BuildID {
		t.Fatalf("musl again: %+v", again)
	}
}

func TestARangeIsServedFromACachedCommitInsideItAndBuildsItsEndOtherwise(t *testing.T) {
	f, dir, a := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 1)
	b := farmtest.Commit(t, dir, map[string]string{"NOTES": "b\n"}, "b")
	c := farmtest.Commit(t, dir, map[string]string{"NOTES": "c\n"}, "c")
	built := parseResult(t, f.Startcompile("--project", "hello", "--revision", b, "--wait", "--json", "a@example.com"))
	if built.Commit != b {
		t.Fatalf("built %s, want %s", built.Commit, b)
	}
	inRange := parseResult(t, f.Startcompile("--project", "hello", "--revision", a+".."+c, "--json", "a@example.com"))
	if !inRange.Cached || inRange.BuildID != built.BuildID {
		t.Fatalf("range %s..%s containing %s: %+v", a[:8], c[:8], b[:8], inRange)
	}
	d := farmtest.Commit(t, dir, map[string]string{"NOTES": "d\n"}, "d")
	outside := parseResult(t, f.Startcompile("--project", "hello", "--revision", c+".."+d, "--wait", "--json", "a@example.com"))
	if outside.Cached || outside.Commit != d {
		t.Fatalf("range without a cached commit must build its end %s: %+v", d[:8], outside)
	}
}

func TestACorruptBlobIsNeverServedAndTheBuildIsRedone(t *testing.T) {
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 1)
	first := parseResult(t, f.Startcompile("--project", "hello", "--wait", "--json", "a@example.com"))
	blob := blobPath(f.MetaDataDir(), first.ArtifactSHA256)
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(blob, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	r := f.Startcompile("status", "--download", out, strconv.FormatUint(first.BuildID, 10))
	expectExit(t, r, 3)
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Fatalf("a corrupt artifact left files behind: %v", entries)
	}
	again := parseResult(t, f.Startcompile("--project", "hello", "--download", out, "--json", "a@example.com"))
	if again.Cached || again.BuildID == first.BuildID || again.State != "succeeded" {
		t.Fatalf("after corruption the build must be redone: %+v", again)
	}
	if sum := sha256File(t, blobPath(f.MetaDataDir(), again.ArtifactSHA256)); sum != again.ArtifactSHA256 {
		t.Fatalf("rebuilt blob hashes to %s", sum)
	}
}

func TestEvictionRemovesLeastRecentlyUsedUnpinnedArtifactsOnly(t *testing.T) {
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
	pinned := build("0")
	f.Pin("release-1", pinned.BuildID)
	b1 := build("1")
	b2 := build("2")
	b3 := build("3")
	if b1.ArtifactSize+b2.ArtifactSize+b3.ArtifactSize+pinned.ArtifactSize <= 7000 {
		t.Fatalf("artifacts too small (%d each) for the test's limit", b1.ArtifactSize)
	}
	farmtest.Eventually(t, farmtest.WaitTimeout, func() error {
		if _, err := os.Stat(blobPath(f.MetaDataDir(), b1.ArtifactSHA256)); err == nil {
			return errorf("least recently used artifact %s still stored", b1.ArtifactSHA256[:12])
		}
		return nil
	})
	for _, keep := range []result{pinned, b3} {
		if _, err := os.Stat(blobPath(f.MetaDataDir(), keep.ArtifactSHA256)); err != nil {
			t.Fatalf("artifact of build %d was evicted: %v", keep.BuildID, err)
		}
	}
	// The pin still resolves to the same bytes.
	out := filepath.Join(t.TempDir(), "pin")
	expectExit(t, f.Startcompile("--pin", "release-1", "--download", out, "a@example.com"), 0)
	if _, err := os.Stat(filepath.Join(out, "hello")); err != nil {
		t.Fatal(err)
	}
	// An evicted artifact is built again on request.
	again := parseResult(t, f.Startcompile("--project", "hello", "-o", "level=1", "--wait", "--json", "a@example.com"))
	if again.Cached || again.BuildID == b1.BuildID {
		t.Fatalf("evicted artifact answered from cache: %+v", again)
	}
}

func TestAnIdenticalRequestJoinsARunningBuildAndBothSeeTheSameResult(t *testing.T) {
	f, _ := faultFarm(t, slowManifest(6), "2s")
	f.StartBuildserver(f.AddBuildServer("a"))
	f.WaitBuildServers(1)
	args := []string{"--project", "hello", "--wait", "--json"}
	var wg sync.WaitGroup
	var firstRes farmtest.Result
	wg.Add(1)
	go func() {
		defer wg.Done()
		firstRes = f.Startcompile(append(args, "first@example.com")...)
	}()
	var id uint64
	farmtest.Eventually(t, farmtest.WaitTimeout, func() error {
		b := listBuilds(t, f)
		if len(b) != 1 {
			return errorf("%d builds", len(b))
		}
		id = b[0].GetId()
		return nil
	})
	waitRunningOn(t, f, id, "a")
	second := f.Startcompile(append(args, "second@example.com")...)
	wg.Wait()
	expectExit(t, firstRes, 0)
	expectExit(t, second, 0)
	r1, r2 := parseResult(t, firstRes), parseResult(t, second)
	if !r2.Joined || r2.Cached || r2.BuildID != id {
		t.Fatalf("the request made while build %d ran: %+v, want joined to it", id, r2)
	}
	if r1.Joined || r1.BuildID != id {
		t.Fatalf("the first request: %+v, want queued build %d", r1, id)
	}
	if r1.State != "succeeded" || r2.State != "succeeded" || r1.ArtifactSHA256 == "" ||
		r1.ArtifactSHA256 != r2.ArtifactSHA256 || r1.ArtifactSize != r2.ArtifactSize || r1.Commit != r2.Commit {
		t.Fatalf("the two requesters saw different results:\n%+v\n%+v", r1, r2)
	}
	b := f.GetBuild(t, id)
	if len(listBuilds(t, f)) != 1 || len(b.GetAttempts()) != 1 || b.GetWaiters() != 2 {
		t.Fatalf("%d builds; build %d has attempts %s and %d waiters, want 1 build, 1 attempt, 2 waiters",
			len(listBuilds(t, f)), id, outcomes(b), b.GetWaiters())
	}
}
