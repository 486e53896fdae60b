package e2e

import (
	"context"
	"errors"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestAdminCommandsWorkWithTheMetaserverStoppedAndRunning(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s")
	if err := f.Meta().Process.Stop(); err != nil {
		t.Fatal(err)
	}
	meta := farmtest.Binary(t, "metaserver")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	// Offline: straight into the store.
	if out, err := runCmd(meta, "project", "add", "--data-dir", f.MetaDataDir(), "hello", repo); err != nil {
		t.Fatalf("offline project add: %v\n%s", err, out)
	}
	token, err := runCmd(meta, "buildserver", "add", "--data-dir", f.MetaDataDir(), "offline-builder")
	if err != nil || !strings.HasPrefix(token, "kiln_") {
		t.Fatalf("offline buildserver add: %v %q", err, token)
	}
	// The credential is stored only as a hash.
	db, err := os.ReadFile(filepath.Join(f.MetaDataDir(), "kiln.db"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(db), strings.TrimSpace(token)) {
		t.Fatal("the token is stored in clear in kiln.db")
	}
	f.Meta().Restart()
	// Online: over the admin socket while serve holds the store's lock.
	if out, err := runCmd(meta, "project", "add", "--data-dir", f.MetaDataDir(), "second", repo); err != nil {
		t.Fatalf("online project add: %v\n%s", err, out)
	}
	if out, _ := runCmd(meta, "project", "add", "--data-dir", f.MetaDataDir(), "second", repo); !strings.Contains(out, "already registered") {
		t.Fatalf("a taken project name was accepted: %s", out)
	}
	out, err := runCmd(meta, "project", "list", "--data-dir", f.MetaDataDir())
	if err != nil || !strings.Contains(out, "hello\t") || !strings.Contains(out, "second\t") {
		t.Fatalf("project list: %v\n%s", err, out)
	}
	// The offline credential works.
	f.StartBuildserver(strings.TrimSpace(token))
	f.WaitBuildServers(1)
	res := parseResult(t, f.Startcompile("--project", "second", "--wait", "--json", "dev@example.com"))
	if res.State != "succeeded" {
		t.Fatalf("build of a project added online: %+v", res)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bs, err := kilnv1.NewStatusServiceClient(f.Conn()).ListBuildServers(ctx, &kilnv1.ListBuildServersRequest{})
	if err != nil || len(bs.GetBuildServers()) != 1 || bs.GetBuildServers()[0].GetName() != "offline-builder" {
		t.Fatalf("build servers: %v %v", bs, err)
	}
}

func TestAdminServiceIsOnlyOnTheOwnerOnlySocket(t *testing.T) {
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

// metaserverExit runs the metaserver binary with args and returns its combined
// output and exit status.
func metaserverExit(t *testing.T, args ...string) (string, int) {
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

func TestAdminCancelEndsAQueuedBuildAndRefusesAFinishedOne(t *testing.T) {
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

	out, code := metaserverExit(t, "cancel", "--data-dir", f.MetaDataDir(), "--reason", "operator says no", id)
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

	out, code = metaserverExit(t, "cancel", "--data-dir", f.MetaDataDir(), id)
	if code != 2 || !strings.Contains(out, "build "+id+" is already cancelled") {
		t.Fatalf("second cancel: exit %d, want 2 with a clear message\n%s", code, out)
	}
	out, code = metaserverExit(t, "cancel", "--data-dir", f.MetaDataDir(), "999999")
	if code != 2 || !strings.Contains(out, "no build 999999") {
		t.Fatalf("cancel of an unknown build: exit %d\n%s", code, out)
	}
	out, code = metaserverExit(t, "cancel", "--data-dir", f.MetaDataDir(), "not-a-number")
	if code != 2 || !strings.Contains(out, "is not a build number") {
		t.Fatalf("cancel of a malformed id: exit %d\n%s", code, out)
	}
}
