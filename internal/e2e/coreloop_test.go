package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestManifestProjectBuildsDownloadsAndKeepsItsLog(t *testing.T) {
	f, _, head := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 1)
	out := filepath.Join(t.TempDir(), "out")
	r := f.Startcompile("--project", "hello", "-o", "level=3", "-o", "flavor=fancy", "--download", out, "--json", "dev@example.com")
	expectExit(t, r, 0)
	res := parseResult(t, r)
	if res.State != "succeeded" || res.Cached || res.Commit != head {
		t.Fatalf("result %+v; want succeeded, not cached, commit %s", res, head)
	}
	bin := filepath.Join(out, "hello")
	got, err := exec.Command(bin).Output()
	if err != nil || strings.TrimSpace(string(got)) != farmtest.Greeting {
		t.Fatalf("downloaded hello printed %q (%v), want %q", got, err, farmtest.Greeting)
	}
	// The artifact's sha256 is the stored blob's, and the blob hashes to its name.
	blob := blobPath(f.MetaDataDir(), res.ArtifactSHA256)
	if sum := sha256File(t, blob); sum != res.ArtifactSHA256 {
		t.Fatalf("stored blob hashes to %s, named %s", sum, res.ArtifactSHA256)
	}
	if len(res.Files) != 1 || res.Files[0] != "hello" {
		t.Fatalf("files %v, want [hello]", res.Files)
	}
	if res.Options["level"] != "3" || res.Options["flavor"] != "fancy" {
		t.Fatalf("options %v, want level=3 flavor=fancy", res.Options)
	}
	// The log is retrievable and shows the steps with the options applied.
	lr := f.Startcompile("log", strconv.FormatUint(res.BuildID, 10))
	expectExit(t, lr, 0)
	for _, want := range []string{"flavor=fancy level=3", "-O3", "make check"} {
		if !strings.Contains(lr.Stdout, want) {
			t.Errorf("log lacks %q:\n%s", want, lr.Stdout)
		}
	}
}

func TestProjectWithoutManifestUsesTheDefaultRecipe(t *testing.T) {
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{}, 1)
	out := filepath.Join(t.TempDir(), "out")
	r := f.Startcompile("--project", "hello", "--download", out, "--json", "dev@example.com")
	expectExit(t, r, 0)
	res := parseResult(t, r)
	// The default recipe's artifact is the install tree of make install DESTDIR=...
	installed := filepath.Join(out, "usr", "bin", "hello")
	got, err := exec.Command(installed).Output()
	if err != nil || strings.TrimSpace(string(got)) != farmtest.Greeting {
		t.Fatalf("installed hello printed %q (%v); files %v", got, err, res.Files)
	}
	lr := f.Startcompile("log", strconv.FormatUint(res.BuildID, 10))
	// make check and make install ran (the target's tools on make's
	// command line), the install into the fixed $KILN_DESTDIR.
	if !strings.Contains(lr.Stdout, " check; fi") || !strings.Contains(lr.Stdout, ` install DESTDIR="$KILN_DESTDIR"`) ||
		!strings.Contains(lr.Stdout, "cp hello /tmp/kiln/dest/usr/bin/hello") {
		t.Errorf("default recipe log lacks make check / make install:\n%s", lr.Stdout)
	}
}

func TestAQueuedBuildSurvivesAMetaserverKill(t *testing.T) {
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 0)
	// No build server yet: the request is acknowledged and queued.
	r := f.Startcompile("--project", "hello", "--json", "dev@example.com")
	expectExit(t, r, 0)
	res := parseResult(t, r)
	if res.State != "queued" || res.BuildID == 0 {
		t.Fatalf("first answer %+v, want queued with an id", res)
	}
	f.Meta().Process.Kill()
	f.Meta().Restart()
	tok := f.AddBuildServer("late-builder")
	f.StartBuildserver(tok)
	out := filepath.Join(t.TempDir(), "out")
	sr := f.Startcompile("status", "--download", out, "--json", strconv.FormatUint(res.BuildID, 10))
	expectExit(t, sr, 0)
	if got := parseResult(t, sr); got.State != "succeeded" || got.BuildID != res.BuildID {
		t.Fatalf("after restart: %+v", got)
	}
	if _, err := os.Stat(filepath.Join(out, "hello")); err != nil {
		t.Fatalf("artifact not downloaded after restart: %v", err)
	}
}

func TestBadInputIsRefusedWithExit2AndStoresNothing(t *testing.T) {
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 0)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"an unknown project", []string{"--project", "nope", "dev@example.com"}, "unknown project"},
		{"an unknown option", []string{"--project", "hello", "-o", "colour=red", "dev@example.com"}, "colour"},
		{"an option of the wrong type", []string{"--project", "hello", "-o", "level=high", "dev@example.com"}, "level"},
		{"an unresolvable revision", []string{"--project", "hello", "--revision", "no-such-branch", "dev@example.com"}, "no-such-branch"},
		{"a malformed email", []string{"--project", "hello", "not-an-email"}, "email"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := f.Startcompile(c.args...)
			expectExit(t, r, 2)
			if !strings.Contains(r.Stderr, c.want) {
				t.Fatalf("stderr %q does not mention %q", r.Stderr, c.want)
			}
		})
	}
	if builds := listBuilds(t, f); len(builds) != 0 {
		t.Fatalf("refused requests left %d builds behind", len(builds))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ov, err := kilnv1.NewStatusServiceClient(f.Conn()).GetOverview(ctx, &kilnv1.GetOverviewRequest{})
	if err != nil || ov.GetWaitingRequests() != 0 || ov.GetQueueLength() != 0 {
		t.Fatalf("overview after refusals: %v %v", ov, err)
	}
}

func TestAWrongTokenIsRefused(t *testing.T) {
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 0)
	p := f.StartBuildserver("kiln_not-a-real-token")
	select {
	case <-p.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("a buildserver with a wrong token kept running")
	}
	var ee *exec.ExitError
	if err := p.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("buildserver with a wrong token: %v, want exit status 2 (bad input)", err)
	}
	if logs := p.Logs(); !strings.Contains(strings.ToLower(logs), "credential") && !strings.Contains(strings.ToLower(logs), "unauthenticated") {
		t.Fatalf("buildserver log does not explain the refusal:\n%s", logs)
	}
	if servers, _ := f.ConnectedBuildServers(context.Background()); len(servers) != 0 {
		t.Fatalf("connected build servers: %v", servers)
	}
}
