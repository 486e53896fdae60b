package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestStopCancelKillsTheRunningBuildAndOnlyARequesterMayCancel(t *testing.T) {
	f, _ := faultFarm(t, slowManifest(300), "2s")
	bs := f.StartBuildserver(f.AddBuildServer("a"))
	f.WaitBuildServers(1)
	id := submit(t, f)
	waitRunningOn(t, f, id, "a")
	idArg := strconv.FormatUint(id, 10)
	expectExit(t, f.Startcompile("cancel", "--email", "intruder@example.com", idArg), 2)
	if b := f.GetBuild(t, id); b.GetState() != kilnv1.BuildState_BUILD_STATE_RUNNING {
		t.Fatalf("a stranger's cancel changed the build: %s", b.GetState())
	}
	start := time.Now()
	expectExit(t, f.Startcompile("cancel", "--email", "dev@example.com", idArg), 0)
	b := waitFinal(t, f, id, 10*time.Second)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_CANCELLED {
		t.Fatalf("after cancel: %s", b.GetState())
	}
	// The build server killed the step (a 300 s sleep) and is free again.
	farmtest.Eventually(t, 15*time.Second, func() error {
		if !strings.Contains(bs.Logs(), "CANCELLED") {
			return errorf("build server has not reported the cancelled attempt")
		}
		return nil
	})
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("cancellation took %s", took)
	}
	next := submit(t, f, "-o", "n=1")
	_ = next
	// The next build needs the same slot: it can only start once the cancelled step is gone.
	waitRunningOn(t, f, next, "a")
}

func TestStopSIGTERMOnABuildserverFinishesItsBuildFirst(t *testing.T) {
	f, _ := faultFarm(t, slowManifest(2), "2s")
	bs := f.StartBuildserver(f.AddBuildServer("a"), "--grace", "30s")
	f.WaitBuildServers(1)
	id := submit(t, f)
	waitRunningOn(t, f, id, "a")
	if err := bs.Stop(); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, bs.Logs())
	}
	b := f.GetBuild(t, id)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || outcomes(b) != "a:SUCCEEDED" {
		t.Fatalf("build after SIGTERM: %s %s", b.GetState(), outcomes(b))
	}
}

func TestStopSIGTERMPastTheGracePeriodHandsTheBuildBack(t *testing.T) {
	f, _ := faultFarm(t, slowManifest(4), "2s")
	a := f.StartBuildserver(f.AddBuildServer("a"), "--grace", "500ms")
	f.WaitBuildServers(1)
	id := submit(t, f)
	waitRunningOn(t, f, id, "a")
	if err := a.Stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	if b := f.GetBuild(t, id); b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED || outcomes(b) != "a:RETURNED" {
		t.Fatalf("after the grace period: %s %s", b.GetState(), outcomes(b))
	}
	f.StartBuildserver(f.AddBuildServer("b"))
	if b := waitFinal(t, f, id, 30*time.Second); b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || outcomes(b) != "a:RETURNED,b:SUCCEEDED" {
		t.Fatalf("handed-back build: %s %s", b.GetState(), outcomes(b))
	}
}

func TestStopSIGTERMOnTheMetaserverStopsCleanlyAndKeepsEverything(t *testing.T) {
	f, _ := faultFarm(t, slowManifest(0), "2s")
	f.StartBuildserver(f.AddBuildServer("a"))
	f.WaitBuildServers(1)
	done := parseResult(t, f.Startcompile("--project", "hello", "--wait", "--json", "dev@example.com"))
	start := time.Now()
	if err := f.Meta().Process.Stop(); err != nil {
		t.Fatalf("metaserver SIGTERM: %v", err)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Fatalf("graceful stop took %s with build servers connected", took)
	}
	if logs := f.Meta().Process.Logs(); !strings.Contains(logs, "metaserver stopped cleanly") {
		t.Fatalf("no clean stop:\n%s", logs)
	}
	f.Meta().Restart()
	again := parseResult(t, f.Startcompile("--project", "hello", "--json", "dev@example.com"))
	if !again.Cached || again.BuildID != done.BuildID {
		t.Fatalf("after a restart the cache lost the build: %+v", again)
	}
}

func TestStopASmallArtifactKeptInTheStoreSurvivesASIGKILL(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s") // default: small artifacts inline
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	f.AddProject("hello", repo)
	f.StartBuildserver(f.AddBuildServer("a"))
	f.WaitBuildServers(1)
	first := parseResult(t, f.Startcompile("--project", "hello", "--wait", "--json", "dev@example.com"))
	if first.State != "succeeded" || first.ArtifactSize > 256<<10 {
		t.Fatalf("build: %+v", first)
	}
	if _, err := os.Stat(blobPath(f.MetaDataDir(), first.ArtifactSHA256)); err == nil {
		t.Fatal("a small artifact was written as a file")
	}
	f.Meta().Process.Kill()
	f.Meta().Restart()
	out := filepath.Join(t.TempDir(), "out")
	r := f.Startcompile("status", "--download", out, "--json", strconv.FormatUint(first.BuildID, 10))
	expectExit(t, r, 0)
	if got := parseResult(t, r); got.ArtifactSHA256 != first.ArtifactSHA256 {
		t.Fatalf("after SIGKILL: %+v", got)
	}
	if _, err := os.Stat(filepath.Join(out, "hello")); err != nil {
		t.Fatal(err)
	}
}
