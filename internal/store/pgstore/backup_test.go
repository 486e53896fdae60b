package pgstore_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/pgstore"
	"github.com/kilnbuild/kiln/internal/translog"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// A backup taken while the writer commits build after build restores, in
// another database, to a store that passes Check and holds every build
// whose Update returned before the backup started.
func TestBackup_WhileWritingRestoresEveryAcknowledgedBuild(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	url := pg.SchemaURL(t, "postgres", "live")
	populate(t, url)
	db, err := pgstore.Open(t.Context(), url, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var acked atomic.Uint64 // the highest build id whose Update returned
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var writeErr error
	go func() {
		defer wg.Done()
		for id := uint64(100); id < 100_000; id++ {
			select {
			case <-stop:
				return
			default:
			}
			err := db.Update(func(tx store.Tx) error {
				b := &store.Build{SourceKey: "live", Build: &kilnv1.Build{Id: id, Project: "p", State: kilnv1.BuildState_BUILD_STATE_QUEUED}}
				if err := tx.PutBuild(b); err != nil {
					return err
				}
				rid, err := tx.NextID("request")
				if err != nil {
					return err
				}
				if err := tx.PutRequest(&store.Request{Id: rid, BuildId: id}); err != nil {
					return err
				}
				_, err = translog.Append(tx, []byte("build"))
				return err
			})
			if err != nil {
				writeErr = err
				return
			}
			acked.Store(id)
		}
	}()
	farmtest.Eventually(t, 30*time.Second, func() error {
		if acked.Load() < 150 {
			return errors.New("the writer has not committed 50 builds yet")
		}
		return nil
	})
	before := acked.Load()
	path := filepath.Join(t.TempDir(), "kiln.pgdump")
	rep, err := pgstore.Backup(t.Context(), url, path)
	after := acked.Load()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if writeErr != nil {
		t.Fatalf("the writer failed during the backup: %v", writeErr)
	}
	if after == before {
		t.Fatal("nothing was committed while the backup ran: the test proves nothing")
	}
	if rep.Bytes == 0 || rep.Tables < 19 {
		t.Fatalf("backup report %+v", rep)
	}
	// A backup never replaces a file.
	if _, err := pgstore.Backup(t.Context(), url, path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Backup to the same path: %v, want fs.ErrExist", err)
	}

	restored := strings.Replace(url, "/postgres?", "/restored?", 1)
	pg.CreateDatabase(t, "restored")
	crep, err := pgstore.Restore(t.Context(), restored, path)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if crep.Builds < int64(before-99)+9 {
		t.Fatalf("restored store holds %d builds, want at least the %d acknowledged before the backup", crep.Builds, before-99+9)
	}
	rdb, err := pgstore.Open(t.Context(), restored, pgstore.Options{})
	if err != nil {
		t.Fatalf("Open of the restored store: %v", err)
	}
	defer rdb.Close()
	err = rdb.View(func(tx store.Tx) error {
		for id := uint64(100); id <= before; id++ {
			if _, err := tx.Build(id); err != nil {
				t.Errorf("build %d, acknowledged before the backup: %v", id, err)
			}
			if reqs, err := tx.RequestsForBuild(id); err != nil || len(reqs) != 1 {
				t.Errorf("requests of build %d: %d, %v", id, len(reqs), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Restoring over a store is refused, and changes nothing.
	rdb.Close()
	if _, err := pgstore.Restore(t.Context(), restored, path); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Fatalf("Restore over a store: %v, want a refusal", err)
	}
	if _, err := pgstore.Check(t.Context(), restored, pgstore.CheckOptions{}); err != nil {
		t.Fatalf("the refused restore changed the store: %v", err)
	}
}

func TestBackupRestore_RefuseBadInputAndChangeNothing(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	dir := t.TempDir()
	// A newer or foreign schema is not backed up: no file is left.
	newer := pg.SchemaURL(t, "postgres", "newer")
	populate(t, newer)
	farmtest.ExecSQL(t, newer, `UPDATE kiln_meta SET value = 99 WHERE key = 'version'`)
	var sv *pgstore.SchemaVersionError
	if _, err := pgstore.Backup(t.Context(), newer, filepath.Join(dir, "newer")); !errors.As(err, &sv) {
		t.Fatalf("Backup of a version 99 schema: %v, want *SchemaVersionError", err)
	}
	foreign := pg.SchemaURL(t, "postgres", "foreign")
	farmtest.ExecSQL(t, foreign, `CREATE TABLE accounts (id int)`)
	if _, err := pgstore.Backup(t.Context(), foreign, filepath.Join(dir, "foreign")); !errors.As(err, &sv) {
		t.Fatalf("Backup of another program's schema: %v, want *SchemaVersionError", err)
	}
	if _, err := pgstore.Backup(t.Context(), pg.SchemaURL(t, "postgres", "empty"), filepath.Join(dir, "empty")); !errors.Is(err, pgstore.ErrNoStore) {
		t.Fatalf("Backup of an empty schema: %v, want ErrNoStore", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("refused backups left %d files", len(left))
	}

	good := pg.SchemaURL(t, "postgres", "good")
	populate(t, good)
	archive := filepath.Join(dir, "good.pgdump")
	if _, err := pgstore.Backup(t.Context(), good, archive); err != nil {
		t.Fatal(err)
	}
	target := pg.SchemaURL(t, "postgres", "target")
	for name, path := range map[string]string{
		"garbage":     writeFile(t, dir, "garbage", []byte("not an archive")),
		"truncated":   truncated(t, archive, dir, 2),
		"other dump":  foreignDump(t, foreign, dir),
		"other store": archive, // schema "good" into schema "target"
	} {
		if _, err := pgstore.Restore(t.Context(), target, path); err == nil {
			t.Fatalf("Restore of %s succeeded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
		if n := countTables(t, target); n != 0 {
			t.Fatalf("the refused restore of %s left %d tables", name, n)
		}
	}
}

// An archive cut short after its table of contents fails in the middle
// of pg_restore's one transaction: nothing of it stays.
func TestRestore_ACutArchiveRestoresNothing(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	dir := t.TempDir()
	url := pg.SchemaURL(t, "postgres", "cut")
	populate(t, url)
	archive := filepath.Join(dir, "cut.pgdump")
	if _, err := pgstore.Backup(t.Context(), url, archive); err != nil {
		t.Fatal(err)
	}
	cut := truncated(t, archive, dir, 100)
	pg.CreateDatabase(t, "other")
	target := strings.Replace(url, "/postgres?", "/other?", 1)
	_, err := pgstore.Restore(t.Context(), target, cut)
	if err == nil || !strings.Contains(err.Error(), "nothing was restored") {
		t.Fatalf("Restore of a cut archive: %v, want pg_restore's failure", err)
	}
	t.Log(err)
	if queryBool(t, pg.URL("other"), `SELECT count(*) > 0 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname LIKE 't\_%'`) {
		t.Fatal("the failed restore left tables behind")
	}
	// The whole archive then restores there.
	if _, err := pgstore.Restore(t.Context(), target, archive); err != nil {
		t.Fatalf("Restore after the failed one: %v", err)
	}
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// truncated is archive without its last 1/div.
func truncated(t *testing.T, archive, dir string, div int) string {
	t.Helper()
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, fmt.Sprint("truncated-", div), data[:len(data)-len(data)/div])
}

// foreignDump is a pg_dump archive of another program's schema.
func foreignDump(t *testing.T, url, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "foreign.pgdump")
	farmtest.ExecSQL(t, url, `INSERT INTO accounts VALUES (1)`)
	if err := pgstore.DumpForTest(t.Context(), url, p); err != nil {
		t.Fatal(err)
	}
	return p
}
