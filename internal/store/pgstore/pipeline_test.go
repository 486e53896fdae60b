package pgstore_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/pgstore"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// A write queued for the next round trip (PutRequest here) that
// PostgreSQL refuses must make the whole Update fail and write nothing,
// even when the transaction's closure returned nil, or swallowed the
// error of the read that carried the write.
func TestUpdate_ARefusedQueuedWriteFailsTheUpdateAndWritesNothing(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	url := pg.SchemaURL(t, "postgres", "pipeline")
	db, err := pgstore.Open(t.Context(), url, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The hostile case: the database refuses one row (a DBA's trigger, a
	// constraint), which the Put cannot see when it returns.
	farmtest.ExecSQL(t, url, `CREATE FUNCTION refuse_13() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.id = 13 THEN RAISE EXCEPTION 'request 13 refused'; END IF; RETURN NEW; END $$;
CREATE TRIGGER refuse_13 BEFORE INSERT OR UPDATE ON requests FOR EACH ROW EXECUTE FUNCTION refuse_13();`)
	build := func(id uint64) *store.Build {
		return &store.Build{Build: &kilnv1.Build{Id: id, Project: "p", State: kilnv1.BuildState_BUILD_STATE_QUEUED}}
	}
	closures := map[string]func(tx store.Tx) error{
		"returns nil": func(tx store.Tx) error {
			if err := tx.PutBuild(build(1)); err != nil {
				return err
			}
			if err := tx.PutRequest(&store.Request{Id: 13, BuildId: 1}); err != nil {
				return err
			}
			return tx.PutBuild(build(2))
		},
		"swallows the read's error": func(tx store.Tx) error {
			_ = tx.PutBuild(build(1))
			_ = tx.PutRequest(&store.Request{Id: 13, BuildId: 1})
			if _, err := tx.Build(1); err == nil {
				t.Error("a read after the refused write succeeded")
			}
			return nil
		},
	}
	for name, fn := range closures {
		err := db.Update(fn)
		if err == nil || !strings.Contains(err.Error(), "request 13 refused") {
			t.Fatalf("%s: Update = %v, want the refusal of request 13", name, err)
		}
		err = db.View(func(tx store.Tx) error { _, err := tx.Build(1); return err })
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s: build 1 of the failed Update: %v, want ErrNotFound", name, err)
		}
	}
	// The store goes on; the next Update writes what it queued.
	if err := db.Update(func(tx store.Tx) error {
		if err := tx.PutBuild(build(1)); err != nil {
			return err
		}
		return tx.PutRequest(&store.Request{Id: 14, BuildId: 1})
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx store.Tx) error {
		reqs, err := tx.RequestsForBuild(1)
		if err == nil && len(reqs) != 1 {
			t.Errorf("requests of build 1: %d, want 1", len(reqs))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// The writer remembers build servers across transactions; a transaction
// that changed one and then failed, or panicked, must leave no trace of
// the change in what the next one reads.
func TestUpdate_AFailedTransactionsBuildServerChangeIsNotRemembered(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	db, err := pgstore.Open(t.Context(), pg.SchemaURL(t, "postgres", "servers"), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx store.Tx) error {
		return tx.CreateBuildServer(&store.BuildServer{Name: "alpha", TokenHash: "aaaa", BuildsSucceeded: 1})
	}); err != nil {
		t.Fatal(err)
	}
	bump := func(tx store.Tx) error {
		b, err := tx.BuildServer("alpha")
		if err != nil {
			return err
		}
		b.BuildsSucceeded += 10
		return tx.PutBuildServer(b)
	}
	boom := errors.New("changed my mind")
	if err := db.Update(func(tx store.Tx) error {
		if err := bump(tx); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("Update: %v", err)
	}
	func() {
		defer func() { _ = recover() }()
		_ = db.Update(func(tx store.Tx) error {
			if err := bump(tx); err != nil {
				return err
			}
			panic("mid-transaction")
		})
	}()
	var got uint64
	if err := db.Update(func(tx store.Tx) error {
		b, err := tx.BuildServer("alpha")
		got = b.GetBuildsSucceeded()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got != 1 {
		t.Fatalf("builds succeeded after two failed bumps: %d, want 1", got)
	}
	// A committed bump is seen by the writer and by a View alike.
	if err := db.Update(bump); err != nil {
		t.Fatal(err)
	}
	for name, run := range map[string]func(func(store.Tx) error) error{"Update": db.Update, "View": db.View} {
		if err := run(func(tx store.Tx) error {
			b, err := tx.BuildServer("alpha")
			if err == nil && b.GetBuildsSucceeded() != 11 {
				t.Errorf("%s: builds succeeded %d, want 11", name, b.GetBuildsSucceeded())
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
}
