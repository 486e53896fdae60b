package e2e

import (
	"context"
	"errors"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// metaRun runs `metaserver ARGS...` in dir ("" for the test's), bounded
// by 30 s (a metaserver that starts serving instead of refusing is killed
// and reported as exit -1), and returns its output and exit status.
func metaRun(t *testing.T, dir string, args ...string) (string, int) {
	t.Helper()
	return metaRunWith(t, dir, nil, 30*time.Second, args...)
}

// metaRunWith is metaRun with env added to the metaserver's environment
// and bounded by limit.
func metaRunWith(t *testing.T, dir string, env []string, limit time.Duration, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := osexec.CommandContext(ctx, farmtest.Binary(t, "metaserver"), args...)
	cmd.Dir = dir
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	var ee *osexec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("metaserver %s: %v", strings.Join(args, " "), err)
	return "", 0
}

// damageLeafPage overwrites the header of the first leaf or branch page
// in use, so that it names another page (a misdirected write).
func damageLeafPage(t *testing.T, path string) {
	t.Helper()
	raw, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second}) // read-write: ReadOnly leaves the freelist unloaded, and Tx.Page needs it
	if err != nil {
		t.Fatal(err)
	}
	var target, pageSize int
	err = raw.View(func(tx *bbolt.Tx) error {
		pageSize = raw.Info().PageSize
		for id := 2; target == 0; id++ {
			p, err := tx.Page(id)
			if err != nil || p == nil {
				return errors.New("no leaf or branch page in use")
			}
			if p.Type == "leaf" || p.Type == "branch" {
				target = id
			}
		}
		return nil
	})
	if cerr := raw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{0x39, 0x05, 0, 0, 0, 0, 0, 0}, int64(target*pageSize)); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDamagedStoreIsRefusedAndABackupRestoresEverything(t *testing.T) {
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 1)
	res := parseResult(t, f.Startcompile("--project", "hello", "--wait", "--json", "dev@example.com"))
	if res.State != "succeeded" {
		t.Fatalf("build: %+v", res)
	}
	dir := f.MetaDataDir()
	db := filepath.Join(dir, "kiln.db")
	builds := listBuilds(t, f)

	// An online backup, while serve holds the store.
	backup := filepath.Join(f.Dir, "backup.db")
	if out, code := metaRun(t, "", "backup", "--data-dir", dir, backup); code != 0 {
		t.Fatalf("online backup: exit %d\n%s", code, out)
	}
	if out, code := metaRun(t, "", "backup", "--data-dir", dir, backup); code != 2 || !strings.Contains(out, "already exists") {
		t.Fatalf("a backup over an existing file: exit %d\n%s", code, out)
	}
	if out, code := metaRun(t, "", "check", backup); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("check of the backup: exit %d\n%s", code, out)
	}
	if err := f.Meta().Process.Stop(); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(f.Dir, "good.db")
	copyFile(t, db, good)
	if out, code := metaRun(t, "", "check", "--data-dir", dir); code != 0 {
		t.Fatalf("check of the stopped metaserver's store: exit %d\n%s", code, out)
	}

	damages := []struct {
		name   string
		damage func(t *testing.T, path string)
		say    string
	}{
		{"zero-length", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}, "empty"},
		{"truncated", func(t *testing.T, path string) {
			// Cut into the pages in use, not only into the unused tail
			// bbolt grows the file by (half the file may be free).
			db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			var used int64
			err = db.View(func(tx *bbolt.Tx) error { used = tx.Size(); return nil })
			if cerr := db.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, used-int64(os.Getpagesize())); err != nil {
				t.Fatal(err)
			}
		}, "truncated"},
		{"damaged page", damageLeafPage, "consistency check"},
	}
	for _, d := range damages {
		copyFile(t, good, db)
		d.damage(t, db)
		before := sha256File(t, db)
		for _, args := range [][]string{
			{"serve", "--data-dir", dir, "--listen", farmtest.FreeAddr(t)},
			{"project", "list", "--data-dir", dir},
			{"buildserver", "add", "--data-dir", dir, "intruder"},
			{"check", "--data-dir", dir},
		} {
			out, code := metaRun(t, "", args...)
			if code != 2 || !strings.Contains(out, "damaged") || !strings.Contains(out, d.say) {
				t.Errorf("%s store, metaserver %s: exit %d, want 2 and a message saying %q\n%s", d.name, args[0], code, d.say, out)
			}
			if strings.Contains(out, "goroutine ") || strings.Contains(out, ".go:") || strings.Contains(out, "panic") {
				t.Errorf("%s store, metaserver %s: a Go panic trace\n%s", d.name, args[0], out)
			}
			if after := sha256File(t, db); after != before {
				t.Fatalf("%s store: metaserver %s changed the file", d.name, args[0])
			}
		}
	}

	// Restore: the documented steps.
	if err := os.Rename(db, db+".damaged"); err != nil {
		t.Fatal(err)
	}
	copyFile(t, backup, db)
	f.Meta().Restart()
	out, code := metaRun(t, "", "project", "list", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "hello\t") {
		t.Fatalf("projects after the restore: exit %d\n%s", code, out)
	}
	f.WaitBuildServers(1) // its credential is back: it reconnects
	after := listBuilds(t, f)
	if len(after) != len(builds) {
		t.Fatalf("after the restore: %d builds, want %d", len(after), len(builds))
	}
	for i, b := range builds {
		if a := after[i]; a.GetId() != b.GetId() || a.GetState() != b.GetState() || a.GetArtifact().GetSha256() != b.GetArtifact().GetSha256() {
			t.Errorf("build %d after the restore: %v, want %v", b.GetId(), a, b)
		}
	}
	// Ids go on after the restored ones: a new build is not given an old id.
	res2 := parseResult(t, f.Startcompile("--project", "hello", "-o", "level=3", "--json", "dev@example.com"))
	if res2.BuildID <= res.BuildID {
		t.Fatalf("a build after the restore got id %d, want above %d (%+v)", res2.BuildID, res.BuildID, res2)
	}
}

func TestRelativeDataDirsWorkForEveryProgram(t *testing.T) {
	f := farmtest.New(t)
	f.RelativeDirs = true
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--inline-artifact-bytes", "0")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	f.AddProject("hello", repo)
	f.StartBuildserver(f.AddBuildServer("builder-1"))
	f.WaitBuildServers(1) // the probe ran with a relative --data-dir
	res := parseResult(t, f.Startcompile("--project", "hello", "--wait", "--json", "dev@example.com"))
	if res.State != "succeeded" {
		t.Fatalf("build with relative data directories: %+v", res)
	}
	f.Pin("release-1", res.BuildID) // over the admin socket, named relatively
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kilnv1.NewCompileServiceClient(f.Conn()).GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: res.BuildID})
	if err != nil || resp.GetBuild().GetArtifact().GetSha256() != res.ArtifactSHA256 {
		t.Fatalf("GetBuild %d: %v %v", res.BuildID, resp, err)
	}
	// A backup named relatively lands in the command's directory, not the
	// metaserver's.
	work := t.TempDir()
	rel, err := filepath.Rel(work, f.MetaDataDir())
	if err != nil {
		t.Fatal(err)
	}
	if out, code := metaRun(t, work, "backup", "--data-dir", rel, "copy.db"); code != 0 {
		t.Fatalf("backup: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(work, "copy.db")); err != nil {
		t.Fatalf("the relative backup path: %v", err)
	}
}

// mountTmpfs mounts a tmpfs of size bytes on dir and unmounts it when the
// test ends (after the processes started later are stopped). It skips the
// test when it cannot: a real full disk needs root and mount permission.
func mountTmpfs(t *testing.T, dir string, size int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a real full disk needs a tmpfs mount: run as root")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)+",mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): a real full disk needs it", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

func TestFullDiskRefusesWritesServesReadsAndRecovers(t *testing.T) {
	f := farmtest.New(t)
	// Only the store is on the small file system (through a symbolic
	// link), so that what fills up is the store, not the git mirrors.
	small := filepath.Join(f.Dir, "small")
	mountTmpfs(t, small, 4<<20)
	if err := os.Symlink(filepath.Join(small, "kiln.db"), filepath.Join(f.MetaDataDir(), "kiln.db")); err != nil {
		t.Fatal(err)
	}
	f.StartMetaserver()
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	f.AddProject("hello", repo)
	first := submit(t, f)

	filler := filepath.Join(small, "filler")
	fh, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for i := 0; i < 1024; i++ { // 64 MiB at most; the file system holds 4
		if _, err = fh.Write(chunk); err != nil {
			break
		}
	}
	fh.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the file system: %v", err)
	}

	// New requests: the first whose commit finds the disk full waits
	// (it may stay unanswered until space returns); later ones are refused.
	var refused farmtest.Result
	var waiting []int
	for level := 10; level < 200 && refused.Stderr == ""; level++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		r := f.StartcompileContext(ctx, "--project", "hello", "-o", "level="+strconv.Itoa(level), "--json", "dev@example.com")
		cancel()
		switch {
		case strings.Contains(r.Stderr, "disk is full"):
			refused = r
		case r.Exit == -1:
			waiting = append(waiting, level)
		case r.Exit != 0:
			t.Fatalf("request at level %d: exit %d\n%s%s", level, r.Exit, r.Stdout, r.Stderr)
		}
	}
	if refused.Stderr == "" {
		t.Fatal("no request was refused on a full disk")
	}
	if refused.Exit != 3 || !strings.Contains(refused.Stderr, "writes are refused until space returns") {
		t.Fatalf("the refusal: exit %d, want 3 (infrastructure, retry)\n%s", refused.Exit, refused.Stderr)
	}
	t.Logf("refused after %d requests left waiting", len(waiting))
	if !f.Meta().Process.Running() {
		t.Fatal("the metaserver stopped on a full disk")
	}
	// Reads go on.
	if b := f.GetBuild(t, first); b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED {
		t.Fatalf("build %d on a full disk: %v", first, b)
	}
	before := len(listBuilds(t, f))

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// Writes are accepted again, without a restart, and the waiting
	// change was committed.
	farmtest.Eventually(t, 30*time.Second, func() error {
		r := f.Startcompile("--project", "hello", "-o", "level=500", "--json", "dev@example.com")
		if r.Exit != 0 {
			return errorf("request after space returned: exit %d %s", r.Exit, r.Stderr)
		}
		return nil
	})
	if n := len(listBuilds(t, f)); n < before+1 || (len(waiting) > 0 && n < before+2) {
		t.Fatalf("%d builds after space returned, had %d and %d requests waiting", n, before, len(waiting))
	}
	f.Meta().Restart() // and what was committed is on disk
	if n := len(listBuilds(t, f)); n < before+1 {
		t.Fatalf("after a restart: %d builds, want at least %d", n, before+1)
	}
}
