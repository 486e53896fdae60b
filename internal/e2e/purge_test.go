package e2e

import (
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

// lastAttemptServer is the build server of a build's last attempt.
func lastAttemptServer(t *testing.T, f *farmtest.Farm, id uint64) string {
	t.Helper()
	atts := f.GetBuild(t, id).GetAttempts()
	if len(atts) == 0 {
		t.Fatalf("build %d has no attempt", id)
	}
	return atts[len(atts)-1].GetBuildServer()
}

// Revoking a credential with --purge withdraws what its build server alone
// built, while serve runs: the same request is no cache hit and builds
// again on the other build server, the build says why, and a pin of the
// withdrawn artifact refuses clearly.
func TestPurgeARevokedBuildServersArtifactsAreBuiltAgainElsewhere(t *testing.T) {
	f := farmtest.New(t)
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s")
	f.AddProject("hello", repo)
	suspect := f.StartBuildserver(f.AddBuildServer("suspect"))
	f.WaitBuildServers(1)
	ask := func() result {
		return parseResult(t, f.Startcompile("--project", "hello", "--wait", "--json", "a@example.com"))
	}
	first := ask()
	if first.State != "succeeded" || lastAttemptServer(t, f, first.BuildID) != "suspect" {
		t.Fatalf("first build: %+v, want succeeded on suspect", first)
	}
	f.Pin("release", first.BuildID)
	if again := ask(); !again.Cached || again.BuildID != first.BuildID {
		t.Fatalf("control: the same request is %+v, want a cache hit on build %d", again, first.BuildID)
	}
	f.StartBuildserver(f.AddBuildServer("honest"))
	f.WaitBuildServers(2)

	out, err := runCmd(farmtest.Binary(t, "metaserver"), "buildserver", "revoke", "--data-dir", f.MetaDataDir(), "--purge", "suspect")
	if err != nil {
		t.Fatalf("revoke --purge: %v\n%s", err, out)
	}
	for _, w := range []string{"withdrawn: build " + strconv.FormatUint(first.BuildID, 10) + " (hello at ", first.ArtifactSHA256, "pins release",
		"build server suspect revoked; 1 artifact(s) withdrawn, 0 kept"} {
		if !strings.Contains(out, w) {
			t.Errorf("revoke --purge printed %q; lacks %q", out, w)
		}
	}
	select {
	case <-suspect.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("the revoked buildserver kept running")
	}
	farmtest.Eventually(t, farmtest.WaitTimeout, func() error {
		if logs := f.Meta().Process.Logs(); !strings.Contains(logs, "artifact withdrawn") || !strings.Contains(logs, first.ArtifactSHA256) {
			return errorf("the metaserver logged no line for the withdrawn artifact")
		}
		return nil
	})
	if b := f.GetBuild(t, first.BuildID); b.GetWithdrawn() != "its build server's credential was revoked (suspect)" || b.GetWithdrawnAt() == nil {
		t.Errorf("build %d withdrawn=%q at %v", first.BuildID, b.GetWithdrawn(), b.GetWithdrawnAt())
	}

	rebuilt := ask()
	if rebuilt.Cached || rebuilt.BuildID == first.BuildID || rebuilt.State != "succeeded" {
		t.Fatalf("the same request after the purge: %+v, want a new build", rebuilt)
	}
	if by := lastAttemptServer(t, f, rebuilt.BuildID); by != "honest" {
		t.Fatalf("rebuilt on %q, want honest", by)
	}

	r := f.Startcompile("--pin", "release", "--download", t.TempDir(), "a@example.com")
	if r.Exit == 0 || !strings.Contains(r.Stderr+r.Stdout, `pin "release" names the artifact of build `+strconv.FormatUint(first.BuildID, 10)+`, which was withdrawn: its build server's credential was revoked (suspect)`) {
		t.Fatalf("download by the pin of a withdrawn artifact: exit %d\nstdout: %s\nstderr: %s\nwant a refusal saying why", r.Exit, r.Stdout, r.Stderr)
	}
	pout, err := exec.Command(farmtest.Binary(t, "metaserver"), "pin", "--data-dir", f.MetaDataDir(), "again", strconv.FormatUint(first.BuildID, 10)).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(pout), "withdrawn") {
		t.Fatalf("pinning a withdrawn build: %v\n%s\nwant exit status 2 saying it was withdrawn", err, pout)
	}

	// Without a running metaserver the purge writes the store directly.
	if err := f.Meta().Process.Stop(); err != nil {
		t.Fatal(err)
	}
	out, err = runCmd(farmtest.Binary(t, "metaserver"), "buildserver", "revoke", "--data-dir", f.MetaDataDir(), "--purge", "honest")
	if err != nil || !strings.Contains(out, "withdrawn: build "+strconv.FormatUint(rebuilt.BuildID, 10)+" ") ||
		!strings.Contains(out, "build server honest revoked; 1 artifact(s) withdrawn, 0 kept") {
		t.Fatalf("offline revoke --purge: %v\n%s", err, out)
	}
	f.Meta().Restart()
	if b := f.GetBuild(t, rebuilt.BuildID); b.GetWithdrawn() != "its build server's credential was revoked (honest)" {
		t.Fatalf("after the offline purge build %d withdrawn=%q", rebuilt.BuildID, b.GetWithdrawn())
	}
}
