package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// gapsExitCode is the exit status of a finished command run by runCmd.
func gapsExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *osexec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// gapsTarFiles reads a stored artifact (a gzipped tar) and returns its
// regular files' contents by cleaned path.
func gapsTarFiles(t *testing.T, path string) map[string][]byte {
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

// gapsSameTree fails unless dir holds exactly the regular files of want
// with the same bytes.
func gapsSameTree(t *testing.T, dir string, want map[string][]byte) {
	t.Helper()
	got := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
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

func TestGapsAPinAlwaysResolvesToTheSameBytesAndNeverChanges(t *testing.T) {
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
	stored := gapsTarFiles(t, blob)

	fetch := func(when string) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "pin")
		r := f.Startcompile("--pin", "release-1", "--download", out, "--json", "b@example.com")
		expectExit(t, r, 0)
		got := parseResult(t, r)
		if got.BuildID != first.BuildID || got.ArtifactSHA256 != first.ArtifactSHA256 || got.ArtifactSize != first.ArtifactSize {
			t.Fatalf("%s: --pin release-1 answered %+v, want build %d sha256 %s", when, got, first.BuildID, first.ArtifactSHA256)
		}
		gapsSameTree(t, out, stored)
	}
	fetch("after pinning")

	// A pin never changes: naming another build under it is refused.
	meta := farmtest.Binary(t, "metaserver")
	out, err := runCmd(meta, "pin", "--data-dir", f.MetaDataDir(), "release-1", strconv.FormatUint(second.BuildID, 10))
	if code := gapsExitCode(err); code != 2 || !strings.Contains(out, "already names an artifact") {
		t.Fatalf("re-pinning release-1 to build %d: exit %d (%v), want 2 and \"already names an artifact\":\n%s", second.BuildID, code, err, out)
	}
	fetch("after an attempt to re-pin")
	// Re-pinning to the very same build is refused too (a name is created once).
	out, err = runCmd(meta, "pin", "--data-dir", f.MetaDataDir(), "release-1", strconv.FormatUint(first.BuildID, 10))
	if code := gapsExitCode(err); code != 2 {
		t.Fatalf("pinning release-1 again: exit %d (%v), want 2:\n%s", code, err, out)
	}
	// Across a restart too.
	f.Meta().Restart()
	fetch("after a metaserver restart")
}

func TestGapsAnIdenticalRequestJoinsARunningBuildAndBothSeeTheSameResult(t *testing.T) {
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
	b := getBuild(t, f, id)
	if len(listBuilds(t, f)) != 1 || len(b.GetAttempts()) != 1 || b.GetWaiters() != 2 {
		t.Fatalf("%d builds; build %d has attempts %s and %d waiters, want 1 build, 1 attempt, 2 waiters",
			len(listBuilds(t, f)), id, outcomes(b), b.GetWaiters())
	}
}

func TestGapsAdminServiceIsOnlyOnTheOwnerOnlySocket(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s")
	sock := filepath.Join(f.MetaDataDir(), "admin.sock")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %s, want a socket with mode 0600", sock, fi.Mode())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin := kilnv1.NewAdminServiceClient(f.Conn())
	for what, call := range map[string]func() error{
		"ListProjects": func() error {
			_, err := admin.ListProjects(ctx, &kilnv1.ListProjectsRequest{})
			return err
		},
		"AddProject": func() error {
			_, err := admin.AddProject(ctx, &kilnv1.AddProjectRequest{Project: &kilnv1.Project{Name: "intruder", GitUrl: "file:///nonexistent"}})
			return err
		},
		"AddBuildServer": func() error {
			_, err := admin.AddBuildServer(ctx, &kilnv1.AddBuildServerRequest{Name: "intruder"})
			return err
		},
		"CreateEnrollToken": func() error {
			_, err := admin.CreateEnrollToken(ctx, &kilnv1.CreateEnrollTokenRequest{})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.Unimplemented {
			t.Errorf("AdminService.%s over the TCP listener: %v, want Unimplemented", what, err)
		}
	}
	// Nothing was created through the TCP listener.
	out, err := runCmd(farmtest.Binary(t, "metaserver"), "project", "list", "--data-dir", f.MetaDataDir())
	if err != nil || strings.Contains(out, "intruder") {
		t.Fatalf("project list: %v\n%s", err, out)
	}
	bs, err := kilnv1.NewStatusServiceClient(f.Conn()).ListBuildServers(ctx, &kilnv1.ListBuildServersRequest{})
	if err != nil || len(bs.GetBuildServers()) != 0 {
		t.Fatalf("build servers after the refused calls: %v %v", bs, err)
	}
}

func TestGapsTheRequestRateLimitPerAddressRefusesTheThirdRequest(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--requests-per-minute", "2")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	f.AddProject("hello", repo)
	// No build server: the requests stay queued.
	for _, level := range []string{"1", "2"} {
		r := f.Startcompile("--project", "hello", "-o", "level="+level, "--json", "flood@example.com")
		expectExit(t, r, 0)
		if got := parseResult(t, r); got.State != "queued" {
			t.Fatalf("request %s: %+v", level, got)
		}
	}
	r := f.Startcompile("--project", "hello", "-o", "level=3", "flood@example.com")
	expectExit(t, r, 2)
	if !strings.Contains(r.Stderr, "metaserver refused the request (ResourceExhausted)") || !strings.Contains(r.Stderr, "too many requests") {
		t.Fatalf("the refused request's message:\n%s", r.Stderr)
	}
	if n := len(listBuilds(t, f)); n != 2 {
		t.Fatalf("%d builds after the refused request, want 2", n)
	}
	// The same address with --json: exit 2 and the error in the JSON.
	r = f.Startcompile("--project", "hello", "-o", "level=3", "--json", "flood@example.com")
	expectExit(t, r, 2)
	if got := parseResult(t, r); got.BuildID != 0 {
		t.Fatalf("refused request answered %+v", got)
	}
	// Another address is not limited.
	r = f.Startcompile("--project", "hello", "-o", "level=3", "--json", "other@example.com")
	expectExit(t, r, 0)
	if got := parseResult(t, r); got.State != "queued" || got.BuildID == 0 {
		t.Fatalf("another address: %+v", got)
	}
	if n := len(listBuilds(t, f)); n != 3 {
		t.Fatalf("%d builds, want 3", n)
	}
}

func TestGapsWithoutSMTPNoMailIsSentAndTheLogSaysSoOnce(t *testing.T) {
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 1)
	for _, level := range []string{"1", "2"} {
		if got := parseResult(t, f.Startcompile("--project", "hello", "-o", "level="+level, "--wait", "--json", "a@example.com")); got.State != "succeeded" {
			t.Fatalf("build: %+v", got)
		}
	}
	if err := mailOutboxEmpty(f); err != nil {
		t.Fatalf("outbox: %v", err)
	}
	if sent, err := mailMetric(f, "kiln_mail_sent_total"); err != nil || sent != 0 {
		t.Fatalf("kiln_mail_sent_total = %v (%v), want 0", sent, err)
	}
	logs := f.Meta().Process.Logs()
	if n := strings.Count(logs, "no SMTP server configured"); n != 1 || !strings.Contains(logs, "mail disabled") {
		t.Fatalf("the metaserver's log says %d times that there is no SMTP server, want once:\n%s", n, logs)
	}
}

func TestGapsAfterMaxInfraAttemptsTheBuildEndsAsErrorWithEveryReason(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--inline-artifact-bytes", "0", "--max-infra-attempts", "2")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{ManifestText: slowManifest(0)})
	f.AddProject("hello", repo)
	// Neither build server can create its source mirror: a file sits where
	// the mirror directory goes (as in the setup-failure fault test).
	sum := sha256.Sum256([]byte(repo))
	for _, name := range []string{"a", "b"} {
		dir := filepath.Join(t.TempDir(), name+"-data")
		if err := os.MkdirAll(filepath.Join(dir, "mirrors"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "mirrors", hex.EncodeToString(sum[:])[:16]), []byte("not a repository"), 0o600); err != nil {
			t.Fatal(err)
		}
		f.StartBuildserver(f.AddBuildServer(name), "--data-dir", dir)
	}
	f.WaitBuildServers(2)
	r := f.Startcompile("--project", "hello", "--wait", "--json", "dev@example.com")
	expectExit(t, r, 3)
	res := parseResult(t, r)
	if res.State != "error" {
		t.Fatalf("build: %+v, want state error", res)
	}
	b := getBuild(t, f, res.BuildID)
	atts := b.GetAttempts()
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_ERROR || len(atts) != 2 {
		t.Fatalf("build %d: %s with attempts %s, want error after 2", b.GetId(), b.GetState(), outcomes(b))
	}
	servers := map[string]bool{}
	for i, a := range atts {
		servers[a.GetBuildServer()] = true
		if a.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED || a.GetReason() == "" {
			t.Fatalf("attempt %d: %s %q, want setup_failed with a reason", i+1, a.GetOutcome(), a.GetReason())
		}
		want := "attempt " + strconv.Itoa(i+1) + " on " + a.GetBuildServer() + ": setup_failed (" + a.GetReason() + ")"
		if !strings.Contains(b.GetFailure(), want) || !strings.Contains(res.Failure, want) {
			t.Fatalf("the failure reason lacks %q:\nGetBuild: %s\nstartcompile: %s", want, b.GetFailure(), res.Failure)
		}
	}
	if !servers["a"] || !servers["b"] {
		t.Fatalf("attempts ran on %v, want one on each build server", servers)
	}
	// startcompile status reports the same.
	r = f.Startcompile("status", "--json", strconv.FormatUint(res.BuildID, 10))
	expectExit(t, r, 3)
	if got := parseResult(t, r); got.State != "error" || got.Failure != b.GetFailure() {
		t.Fatalf("status: %+v", got)
	}
}

// gapsPadding is incompressible bytes from a fixed seed, so that every
// artifact of the eviction test weighs about the same.
func gapsPadding(n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

func TestGapsEvictionChoosesTheLeastRecentlyUsedNotTheOldest(t *testing.T) {
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
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{ManifestText: manifest, Files: map[string]string{"pad.bin": gapsPadding(pad)}})
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

// The per-network-address limit holds whatever email each request names:
// the third request from this host within the minute is refused even from
// a new requester.
func TestGapsTheRequestRateLimitPerNetworkAddressHoldsAcrossEmails(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--requests-per-minute-per-address", "2")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	f.AddProject("hello", repo)
	for i, email := range []string{"one@example.com", "two@example.com"} {
		r := f.Startcompile("--project", "hello", "-o", "level="+strconv.Itoa(i+1), "--json", email)
		expectExit(t, r, 0)
	}
	r := f.Startcompile("--project", "hello", "-o", "level=3", "three@example.com")
	expectExit(t, r, 2)
	if !strings.Contains(r.Stderr, "ResourceExhausted") || !strings.Contains(r.Stderr, "127.0.0.1") {
		t.Fatalf("the refused request's message names neither the limit nor the address:\n%s", r.Stderr)
	}
	if n := len(listBuilds(t, f)); n != 2 {
		t.Fatalf("%d builds after the refused request, want 2", n)
	}
}
