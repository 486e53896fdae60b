package e2e

import (
	"context"
	"errors"
	osexec "os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

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

// sfixBuild reads build id through the CompileService.
func sfixBuild(t *testing.T, f *farmtest.Farm, id uint64) *kilnv1.Build {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kilnv1.NewCompileServiceClient(f.Conn()).GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: id})
	if err != nil {
		t.Fatalf("GetBuild %d: %v", id, err)
	}
	return resp.GetBuild()
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
	b := sfixBuild(t, f, res.BuildID)
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
