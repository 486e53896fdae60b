package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

// A requester waiting on a build does not lose it when the metaserver is
// stopped gracefully mid-build and started again: the metaserver ends the
// watch cleanly, startcompile resumes it against the restarted metaserver,
// the build server reports the build it kept running, and the wait ends
// with the artifact, once.
func TestStopSIGTERMOnTheMetaserverMidBuildKeepsAWaitingRequesterWaiting(t *testing.T) {
	f, _ := faultFarm(t, slowManifest(4), "8s")
	f.StartBuildserver(f.AddBuildServer("a"))
	f.WaitBuildServers(1)
	// The requester submits and waits in one process: once the build
	// exists, Submit was answered and startcompile is watching (or about
	// to: opening the watch is retried like a broken one).
	done := make(chan farmtest.Result, 1)
	go func() {
		done <- f.StartcompileContext(context.Background(), "--project", "hello", "--wait", "--json", "dev@example.com")
	}()
	var id uint64
	farmtest.Eventually(t, farmtest.WaitTimeout, func() error {
		builds := listBuilds(t, f)
		if len(builds) != 1 {
			return errorf("%d builds", len(builds))
		}
		id = builds[0].GetId()
		return nil
	})
	waitRunningOn(t, f, id, "a")

	start := time.Now()
	if err := f.Meta().Process.Stop(); err != nil {
		t.Fatalf("metaserver SIGTERM: %v", err)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Fatalf("graceful stop took %s with a watch and a session open", took)
	}
	if logs := f.Meta().Process.Logs(); !strings.Contains(logs, "metaserver stopped cleanly") {
		t.Fatalf("no clean stop:\n%s", logs)
	}
	select {
	case r := <-done:
		t.Fatalf("startcompile --wait gave up while the metaserver was down: exit %d\n%s\n%s", r.Exit, r.Stdout, r.Stderr)
	default:
	}
	f.Meta().Restart()

	var r farmtest.Result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("startcompile --wait did not finish after the metaserver came back")
	}
	expectExit(t, r, 0)
	out := parseResult(t, r)
	if out.State != "succeeded" || out.BuildID != id || out.ArtifactSHA256 == "" {
		t.Fatalf("waited result: %+v", out)
	}
	b := f.GetBuild(t, id)
	if outcomes(b) != "a:SUCCEEDED" {
		t.Fatalf("attempts %s: the running build should have been kept, not redone", outcomes(b))
	}
}
