package e2e

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
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
