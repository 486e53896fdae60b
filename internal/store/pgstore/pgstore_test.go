package pgstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/pgstore"
	"github.com/kilnbuild/kiln/internal/store/storetest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// openAt returns a storetest.OpenFunc on pg: one schema per path.
func openAt(pg *farmtest.Postgres) storetest.OpenFunc {
	return func(t *testing.T, path string) store.Store {
		db, err := pgstore.Open(t.Context(), pg.SchemaURL(t, "postgres", path), pgstore.Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return db
	}
}

func TestStoreSuite(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	storetest.Run(t, openAt(pg))
}

func TestOpen_SecondWriterWaitsThenFailsWithErrLocked(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	url := pg.SchemaURL(t, "postgres", "one")
	first, err := pgstore.Open(t.Context(), url, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	second, err := pgstore.Open(t.Context(), url, pgstore.Options{LockTimeout: 300 * time.Millisecond})
	if !errors.Is(err, pgstore.ErrLocked) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("second Open while the first is open: %v, want ErrLocked", err)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("second Open gave up after %s, before its LockTimeout", waited)
	}
	// Another schema is another store, with its own lock.
	other, err := pgstore.Open(t.Context(), pg.SchemaURL(t, "postgres", "two"), pgstore.Options{})
	if err != nil {
		t.Fatalf("Open of another schema: %v", err)
	}
	other.Close()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := pgstore.Open(t.Context(), url, pgstore.Options{})
	if err != nil {
		t.Fatalf("Open after the first closed: %v", err)
	}
	again.Close()
}

func TestUpdate_AfterTheLockConnectionDiesFailsWithErrLostAndAnotherTakesOver(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	url := pg.SchemaURL(t, "postgres", "lost")
	first, err := pgstore.Open(t.Context(), url, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if err := first.Update(func(tx store.Tx) error { _, err := tx.NextID("x"); return err }); err != nil {
		t.Fatal(err)
	}
	// The hostile case: the writer's session is killed behind its back
	// (a DBA, a network cut that PostgreSQL noticed). Its lock is gone.
	admin := pg.URL("postgres")
	killWriters(t, admin)
	second, err := pgstore.Open(t.Context(), url, pgstore.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Open after the writer's session died: %v", err)
	}
	defer second.Close()
	err = first.Update(func(tx store.Tx) error { _, err := tx.NextID("x"); return err })
	if !errors.Is(err, pgstore.ErrLost) {
		t.Fatalf("Update of the old writer: %v, want ErrLost", err)
	}
	select {
	case <-first.Lost():
	default:
		t.Fatal("Lost not closed after the writer connection failed")
	}
	// And it stays refused: the old writer never reconnects.
	if err := first.Update(func(tx store.Tx) error { return nil }); !errors.Is(err, pgstore.ErrLost) {
		t.Fatalf("second Update of the old writer: %v, want ErrLost", err)
	}
	var id uint64
	if err := second.Update(func(tx store.Tx) (err error) { id, err = tx.NextID("x"); return err }); err != nil {
		t.Fatal(err)
	}
	if id != 2 {
		t.Fatalf("new writer's NextID = %d, want 2", id)
	}
}

func TestOpen_RefusesANewerSchemaAndForeignTables(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	url := pg.SchemaURL(t, "postgres", "newer")
	db, err := pgstore.Open(t.Context(), url, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	farmtest.ExecSQL(t, url, `UPDATE kiln_meta SET value = 99 WHERE key = 'version'`)
	var sv *pgstore.SchemaVersionError
	if _, err := pgstore.Open(t.Context(), url, pgstore.Options{}); !errors.As(err, &sv) || sv.Found != 99 {
		t.Fatalf("Open of a version 99 schema: %v, want *SchemaVersionError{Found: 99}", err)
	}
	foreign := pg.SchemaURL(t, "postgres", "foreign")
	farmtest.ExecSQL(t, foreign, `CREATE TABLE accounts (id int)`)
	if _, err := pgstore.Open(t.Context(), foreign, pgstore.Options{}); !errors.As(err, &sv) || sv.Found != 0 {
		t.Fatalf("Open of a schema with another program's table: %v, want *SchemaVersionError{Found: 0}", err)
	}
	if got := countTables(t, foreign); got != 1 {
		t.Fatalf("the refused schema has %d tables, want its 1", got)
	}
}

func TestOpen_BadURLIsAClearError(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := pgstore.Open(ctx, "postgres://nobody@127.0.0.1:1/x?sslmode=disable", pgstore.Options{}); err == nil {
		t.Fatal("Open of an unreachable server succeeded")
	}
	if _, err := pgstore.Open(ctx, "postgres://%zz", pgstore.Options{}); err == nil {
		t.Fatal("Open of a malformed URL succeeded")
	}
}

func TestOpen_CreatesTheSchemaTheURLNames(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	url := pg.URL("postgres") + "&search_path=kiln_fresh"
	db, err := pgstore.Open(t.Context(), url, pgstore.Options{})
	if err != nil {
		t.Fatalf("Open with a search_path naming a missing schema: %v", err)
	}
	if err := db.Update(func(tx store.Tx) error { _, err := tx.NextID("x"); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if got := countTables(t, url); got == 0 {
		t.Fatal("no tables in the schema the URL named")
	}
}

func TestUpdate_APanicWritesNothingAndTheStoreGoesOn(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	db, err := pgstore.Open(t.Context(), pg.SchemaURL(t, "postgres", "panic"), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the panic did not come through Update")
			}
		}()
		_ = db.Update(func(tx store.Tx) error {
			if err := tx.CreateProject(&store.Project{Project: &kilnv1.Project{Name: "half", GitUrl: "x"}}); err != nil {
				return err
			}
			panic("mid-transaction")
		})
	}()
	err = db.View(func(tx store.Tx) error { _, err := tx.Project("half"); return err })
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("project of the panicked Update: %v, want ErrNotFound", err)
	}
	if err := db.Update(func(tx store.Tx) error {
		return tx.CreateProject(&store.Project{Project: &kilnv1.Project{Name: "whole", GitUrl: "x"}})
	}); err != nil {
		t.Fatalf("Update after the panic: %v", err)
	}
}
