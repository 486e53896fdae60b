package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
