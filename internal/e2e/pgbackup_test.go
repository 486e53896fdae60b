package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

// metaRunEnv is metaRun with the farm's environment (the S3 credentials).
func metaRunEnv(t *testing.T, sf *scaledFarm, args ...string) (string, int) {
	t.Helper()
	return metaRunWith(t, "", sf.MetaEnv, 60*time.Second, args...)
}

// An operator's backup of a farm on PostgreSQL + S3, taken while a build
// is submitted and running, restores into another database to a store that
// `metaserver check` (with the bucket) passes and that holds every build
// acknowledged before the backup began; check names a damage and a
// foreign schema version with exit 2, and neither check nor a refused
// backup or restore changes anything.
func TestScaleOut_BackupWhileBuildingRestoresToACheckedStore(t *testing.T) {
	sf := newScaledFarm(t)
	sf.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--inline-artifact-bytes", "0")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	sf.AddProject("hello", repo)
	sf.StartBuildserver(sf.AddBuildServer("builder-1"))
	sf.WaitBuildServers(1)

	var acked []uint64
	for i := range 2 {
		c := farmtest.Commit(t, repo, map[string]string{"note.txt": strconv.Itoa(i)}, "change "+strconv.Itoa(i))
		res := parseResult(t, sf.Startcompile("--project", "hello", "--revision", c, "--wait", "--json", "dev@example.com"))
		if res.State != "succeeded" {
			t.Fatalf("build %d: %+v", i, res)
		}
		acked = append(acked, res.BuildID)
	}
	// The farm is writing: one more build submitted (acknowledged: its id
	// was printed) and dispatched while the backup runs.
	c := farmtest.Commit(t, repo, map[string]string{"note.txt": "busy"}, "busy")
	busy := parseResult(t, sf.Startcompile("--project", "hello", "--revision", c, "--json", "dev@example.com"))
	acked = append(acked, busy.BuildID)
	archive := filepath.Join(t.TempDir(), "kiln.pgdump")
	if out, code := metaRunEnv(t, sf, "backup", "--store", sf.StoreURL, archive); code != 0 || !strings.Contains(out, "read back") {
		t.Fatalf("backup --store: exit %d\n%s", code, out)
	}
	if out, code := metaRunEnv(t, sf, "backup", "--store", sf.StoreURL, archive); code != 2 || !strings.Contains(out, "already exists") {
		t.Fatalf("a backup over an existing file: exit %d\n%s", code, out)
	}
	// The live store checks, bucket included, beside the running writer.
	if out, code := metaRunEnv(t, sf, "check", "--store", sf.StoreURL, "--blobs", sf.BlobsURL); code != 0 || !strings.Contains(out, "found in the bucket") {
		t.Fatalf("check --store --blobs of the live store: exit %d\n%s", code, out)
	}

	restored := sf.pg.CreateDatabase(t, "restored")
	out, code := metaRunEnv(t, sf, "restore", "--store", restored, archive)
	if code != 0 {
		t.Fatalf("restore: exit %d\n%s", code, out)
	}
	if out, code := metaRunEnv(t, sf, "check", "--store", restored, "--blobs", sf.BlobsURL); code != 0 || !strings.Contains(out, "ok (") {
		t.Fatalf("check of the restored store: exit %d\n%s", code, out)
	}
	rc, err := pgx.Connect(t.Context(), restored)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range acked {
		var n int
		if err := rc.QueryRow(t.Context(), `SELECT count(*) FROM builds b JOIN requests r ON r.build_id = b.id WHERE b.id = $1`, int64(id)).Scan(&n); err != nil || n == 0 {
			t.Errorf("build %d, acknowledged before the backup, is not in the restored store with its request (%v)", id, err)
		}
	}
	rc.Close(t.Context())
	if out, code := metaRunEnv(t, sf, "restore", "--store", restored, archive); code != 2 || !strings.Contains(out, "already holds") {
		t.Fatalf("a restore over a store: exit %d\n%s", code, out)
	}

	// Damage behind Kiln's back: check names it, exit 2, and leaves it.
	farmtest.ExecSQL(t, restored, `UPDATE build_counts SET n = n + 3 WHERE state = (SELECT min(state) FROM builds)`)
	if out, code := metaRunEnv(t, sf, "check", "--store", restored); code != 2 || !strings.Contains(out, "build_counts says") {
		t.Fatalf("check of a damaged store: exit %d\n%s", code, out)
	}
	if out, code := metaRunEnv(t, sf, "check", "--store", restored); code != 2 {
		t.Fatalf("the damage was repaired by check: exit %d\n%s", code, out)
	}
	// A schema of a newer Kiln: check and backup refuse it, no file left.
	farmtest.ExecSQL(t, restored, `UPDATE kiln_meta SET value = 99 WHERE key = 'version'`)
	if out, code := metaRunEnv(t, sf, "check", "--store", restored); code != 2 || !strings.Contains(out, "schema version 99") {
		t.Fatalf("check of a version 99 schema: exit %d\n%s", code, out)
	}
	refused := filepath.Join(t.TempDir(), "refused.pgdump")
	if out, code := metaRunEnv(t, sf, "backup", "--store", restored, refused); code != 2 || !strings.Contains(out, "schema version 99") {
		t.Fatalf("backup of a version 99 schema: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(refused); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused backup left a file: %v", err)
	}
	// A bucket that is not there is an error, and is not created by check.
	if out, code := metaRunEnv(t, sf, "check", "--store", sf.StoreURL, "--blobs", strings.Replace(sf.BlobsURL, sf.bucket, "no-such-bucket", 1)); code != 1 || !strings.Contains(out, "does not exist") {
		t.Fatalf("check with a missing bucket: exit %d\n%s", code, out)
	}
	if ok, err := sf.s3Client(t).BucketExists(t.Context(), "no-such-bucket"); err != nil || ok {
		t.Fatalf("check created the missing bucket (%v)", err)
	}
}
