package e2e

import (
	"encoding/json"
	"errors"
	osexec "os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// sfixExit runs the metaserver binary with args and returns its combined
// output and exit status.
func sfixExit(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := runCmd(farmtest.Binary(t, "metaserver"), args...)
	var ee *osexec.ExitError
	switch {
	case err == nil:
		return out, 0
	case errors.As(err, &ee):
		return out, ee.ExitCode()
	}
	t.Fatalf("metaserver %v: %v\n%s", args, err, out)
	return out, -1
}

func TestSfixAdminCancelEndsAQueuedBuildAndRefusesAFinishedOne(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	f.AddProject("hello", repo)
	// No build server: the build stays queued.
	r := f.Startcompile("--project", "hello", "--json", "dev@example.com")
	expectExit(t, r, 0)
	res := parseResult(t, r)
	if res.State != "queued" || res.BuildID == 0 {
		t.Fatalf("submitted build: %+v, want a queued build", res)
	}
	id := strconv.FormatUint(res.BuildID, 10)

	out, code := sfixExit(t, "cancel", "--data-dir", f.MetaDataDir(), "--reason", "operator says no", id)
	if code != 0 || !strings.Contains(out, "build "+id+" cancelled: operator says no") {
		t.Fatalf("metaserver cancel: exit %d\n%s", code, out)
	}
	b := f.GetBuild(t, res.BuildID)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_CANCELLED || b.GetFailure() != "operator says no" {
		t.Fatalf("after metaserver cancel: state %v, failure %q", b.GetState(), b.GetFailure())
	}
	// The requester sees it too.
	st := f.Startcompile("status", "--json", id)
	if got := parseResult(t, st); got.State != "cancelled" {
		t.Fatalf("startcompile status after cancel: %+v (stderr %s)", got, st.Stderr)
	}

	out, code = sfixExit(t, "cancel", "--data-dir", f.MetaDataDir(), id)
	if code != 2 || !strings.Contains(out, "build "+id+" is already cancelled") {
		t.Fatalf("second cancel: exit %d, want 2 with a clear message\n%s", code, out)
	}
	out, code = sfixExit(t, "cancel", "--data-dir", f.MetaDataDir(), "999999")
	if code != 2 || !strings.Contains(out, "no build 999999") {
		t.Fatalf("cancel of an unknown build: exit %d\n%s", code, out)
	}
	out, code = sfixExit(t, "cancel", "--data-dir", f.MetaDataDir(), "not-a-number")
	if code != 2 || !strings.Contains(out, "is not a build number") {
		t.Fatalf("cancel of a malformed id: exit %d\n%s", code, out)
	}
}

func TestSfixABuildLongerThanAVolunteersMaxBuildTimeWaitsForAnother(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s")
	// The manifest allows 20 minutes; the volunteer caps builds at 10.
	manifest := strings.Replace(farmtest.DefaultManifest, "timeout: 5m", "timeout: 20m", 1)
	if !strings.Contains(manifest, "timeout: 20m") {
		t.Fatalf("farmtest.DefaultManifest no longer sets timeout: 5m:\n%s", farmtest.DefaultManifest)
	}
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{ManifestText: manifest})
	f.AddProject("hello", repo)
	f.StartBuildserver(f.AddBuildServer("capped"), "--max-build-time", "10m")
	f.WaitBuildServers(1)

	r := f.Startcompile("--project", "hello", "--json", "dev@example.com")
	expectExit(t, r, 0)
	res := parseResult(t, r)
	id := strconv.FormatUint(res.BuildID, 10)
	want := "policy: time limit 1200s exceeds the maximum of 600s"
	// The metaserver refuses to dispatch, so the reason is there from the
	// start and stays (no attempt ever runs on the capped server).
	st := f.Startcompile("status", "--json", id)
	got := parseResult(t, st)
	if got.State != "queued" {
		t.Fatalf("with only a capped volunteer the build is %q, want queued", got.State)
	}
	var full struct {
		WaitingReasons []string `json:"waiting_reasons"`
	}
	if err := json.Unmarshal([]byte(st.Stdout), &full); err != nil {
		t.Fatal(err)
	}
	reasons := strings.Join(full.WaitingReasons, "\n")
	if !strings.Contains(reasons, want) {
		t.Fatalf("waiting reasons %q lack %q", reasons, want)
	}
	if b := f.GetBuild(t, res.BuildID); len(b.GetAttempts()) != 0 {
		t.Fatalf("the capped volunteer got attempts: %v", b.GetAttempts())
	}

	f.StartBuildserver(f.AddBuildServer("uncapped"))
	done := f.Startcompile("status", "--wait", "--json", id)
	if got := parseResult(t, done); got.State != "succeeded" {
		t.Fatalf("after an uncapped volunteer joined: %+v\n%s", got, done.Stderr)
	}
	b := f.GetBuild(t, res.BuildID)
	if n := len(b.GetAttempts()); n != 1 || b.GetAttempts()[0].GetBuildServer() != "uncapped" {
		t.Fatalf("attempts %v, want exactly one, on uncapped", b.GetAttempts())
	}
}
