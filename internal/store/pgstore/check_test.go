package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/pgstore"
	"github.com/kilnbuild/kiln/internal/translog"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Digests of the fixture's blobs: one kept inline, one in the blob store.
var (
	inlineSHA = strings.Repeat("a", 64)
	outerSHA  = strings.Repeat("b", 64)
)

// populate writes a small farm into the store at url through pgstore:
// builds in several states with their requests, two artifacts (one blob
// inline, one outside), a pin, an outbox message and tlog entries.
func populate(t *testing.T, url string) {
	t.Helper()
	db, err := pgstore.Open(t.Context(), url, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx store.Tx) error {
		states := []kilnv1.BuildState{kilnv1.BuildState_BUILD_STATE_QUEUED, kilnv1.BuildState_BUILD_STATE_RUNNING, kilnv1.BuildState_BUILD_STATE_SUCCEEDED}
		for id := uint64(1); id <= 9; id++ {
			b := &store.Build{SourceKey: fmt.Sprint("src", id%3), Build: &kilnv1.Build{Id: id, Project: "p", State: states[id%3],
				Constraints: &kilnv1.PlatformConstraints{Arch: "x86_64"}}}
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
		}
		for i, sha := range []string{inlineSHA, outerSHA} {
			a := &store.Artifact{CacheKey: fmt.Sprint("key", i), SourceKey: "src0", BuildId: 3, Artifact: &kilnv1.Artifact{Sha256: sha}}
			if err := tx.PutArtifact(a); err != nil {
				return err
			}
		}
		if err := tx.PutBlob(inlineSHA, []byte("small")); err != nil {
			return err
		}
		if err := tx.CreatePin(&store.Pin{Name: "release", BuildId: 3, Sha256: outerSHA, CacheKey: "key1"}); err != nil {
			return err
		}
		oid, err := tx.NextID("outbox")
		if err != nil {
			return err
		}
		if err := tx.PutOutbox(&store.Outbox{Id: oid, To: "x@example.org"}); err != nil {
			return err
		}
		for i := range 5 {
			if _, err := translog.Append(tx, fmt.Appendf(nil, "entry %d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// blobStore says outerSHA is in the blob store, nothing else.
func blobStore(_ context.Context, sha string) error {
	if sha == outerSHA {
		return nil
	}
	return fmt.Errorf("blob %s: %w", sha, cas.ErrNotFound)
}

func TestCheck_AWholeStorePassesAndCountsWhatItChecked(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	url := pg.SchemaURL(t, "postgres", "whole")
	populate(t, url)
	// While a writer holds the store: a check is a read-only snapshot.
	db, err := pgstore.Open(t.Context(), url, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rep, err := pgstore.Check(t.Context(), url, pgstore.CheckOptions{Blob: blobStore})
	if err != nil {
		t.Fatalf("Check of a whole store: %v", err)
	}
	if rep.Builds != 9 || rep.Requests != 9 || rep.Artifacts != 2 || rep.TlogEntries != 5 || rep.InlineBlobs != 1 ||
		rep.BlobsOutside != 1 || rep.BlobsVerified != 1 || rep.BlobsUnchecked || rep.Version != pgstore.SchemaVersion {
		t.Fatalf("report %+v", rep)
	}
	rep, err = pgstore.Check(t.Context(), url, pgstore.CheckOptions{})
	if err != nil || !rep.BlobsUnchecked || rep.BlobsVerified != 0 {
		t.Fatalf("Check without a blob store: %+v, %v; want the outside blob left unchecked", rep, err)
	}
}

// Each damage is made behind pgstore's back (a DBA's statement, a bad
// restore); Check must name it, and leave it as it found it.
func TestCheck_NamesEachDamageAndChangesNothing(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	cases := []struct {
		name, damage, want, still string
		blob                      func(context.Context, string) error
	}{
		{name: "counts", damage: `UPDATE build_counts SET n = n + 5 WHERE state = 1`,
			want: "build_counts says", still: `SELECT n - 5 = (SELECT count(*) FROM builds WHERE state = 1) FROM build_counts WHERE state = 1`},
		{name: "state column", damage: `ALTER TABLE builds DISABLE TRIGGER builds_count; UPDATE builds SET state = 4 WHERE id = 1; ALTER TABLE builds ENABLE TRIGGER builds_count`,
			want: "build 1: indexed in state", still: `SELECT state = 4 FROM builds WHERE id = 1`},
		{name: "source key column", damage: `UPDATE builds SET source_key = 'other' WHERE id = 2`,
			want: "build 2: indexed under source key", still: `SELECT source_key = 'other' FROM builds WHERE id = 2`},
		{name: "garbage record", damage: `UPDATE requests SET rec = '\xffffffff' WHERE id = 3`,
			want: "request 3: the record does not decode", still: `SELECT rec = '\xffffffff' FROM requests WHERE id = 3`},
		{name: "orphan request", damage: `ALTER TABLE builds DISABLE TRIGGER builds_count; DELETE FROM builds WHERE id = 4; ALTER TABLE builds ENABLE TRIGGER builds_count; UPDATE build_counts SET n = n - 1 WHERE state = 2`,
			want: "waits on build 4, which does not exist", still: `SELECT count(*) = 0 FROM builds WHERE id = 4`},
		{name: "sequence", damage: `UPDATE seqs SET value = 2 WHERE name = 'request'`,
			want: `sequence "request" is at 2`, still: `SELECT value = 2 FROM seqs WHERE name = 'request'`},
		{name: "tlog entry", damage: `UPDATE tlog_entries SET entry = 'forged' WHERE n = 2`,
			want: "stored hash 3 is not the hash of its entry", still: `SELECT entry = 'forged' FROM tlog_entries WHERE n = 2`},
		{name: "tlog size", damage: `UPDATE kiln_meta SET value = 7 WHERE key = 'tlog_size'`,
			want: "size is 7 but it holds 5 entries", still: `SELECT value = 7 FROM kiln_meta WHERE key = 'tlog_size'`},
		{name: "missing table", damage: `DROP TABLE pins`,
			want: "table pins is missing", still: `SELECT to_regclass('pins') IS NULL`},
		{name: "missing trigger", damage: `DROP TRIGGER builds_count ON builds`,
			want: "trigger builds_count", still: `SELECT count(*) = 0 FROM pg_trigger WHERE tgrelid = 'builds'::regclass AND tgname = 'builds_count'`},
		{name: "inline blob gone", damage: `DELETE FROM blobs`, blob: blobStore,
			want: "blob " + inlineSHA + ", named by artifact key0, is not in the blob store", still: `SELECT count(*) = 0 FROM blobs`},
		{name: "outside blob gone", blob: func(context.Context, string) error { return cas.ErrNotFound },
			want: "blob " + outerSHA},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := pg.SchemaURL(t, "postgres", "damage-"+c.name)
			populate(t, url)
			if c.damage != "" {
				farmtest.ExecSQL(t, url, c.damage)
			}
			_, err := pgstore.Check(t.Context(), url, pgstore.CheckOptions{Blob: c.blob})
			var ce *pgstore.CheckError
			if !errors.As(err, &ce) || !errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Check: %v, want a *CheckError (ErrDamaged) naming %q", err, c.want)
			}
			if c.still != "" && !queryBool(t, url, c.still) {
				t.Fatalf("the damage changed under Check (%s is false)", c.still)
			}
		})
	}
}

func TestCheck_RefusesAnUnknownSchemaAndWritesNothing(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	newer := pg.SchemaURL(t, "postgres", "newer")
	populate(t, newer)
	farmtest.ExecSQL(t, newer, `UPDATE kiln_meta SET value = 99 WHERE key = 'version'`)
	var sv *pgstore.SchemaVersionError
	if _, err := pgstore.Check(t.Context(), newer, pgstore.CheckOptions{}); !errors.As(err, &sv) || sv.Found != 99 {
		t.Fatalf("Check of a version 99 schema: %v, want *SchemaVersionError{Found: 99}", err)
	}
	foreign := pg.SchemaURL(t, "postgres", "foreign")
	farmtest.ExecSQL(t, foreign, `CREATE TABLE accounts (id int)`)
	if _, err := pgstore.Check(t.Context(), foreign, pgstore.CheckOptions{}); !errors.As(err, &sv) || sv.Found != 0 {
		t.Fatalf("Check of another program's schema: %v, want *SchemaVersionError{Found: 0}", err)
	}
	empty := pg.SchemaURL(t, "postgres", "empty")
	if _, err := pgstore.Check(t.Context(), empty, pgstore.CheckOptions{}); !errors.Is(err, pgstore.ErrNoStore) {
		t.Fatalf("Check of an empty schema: %v, want ErrNoStore", err)
	}
	if n := countTables(t, empty); n != 0 {
		t.Fatalf("Check created %d tables in the empty schema", n)
	}
	// Open would create the schema a search_path names; Check must not.
	missing := pg.URL("postgres") + "&search_path=kiln_missing"
	if _, err := pgstore.Check(t.Context(), missing, pgstore.CheckOptions{}); !errors.Is(err, pgstore.ErrNoStore) {
		t.Fatalf("Check of a missing schema: %v, want ErrNoStore", err)
	}
	if queryBool(t, pg.URL("postgres"), `SELECT count(*) > 0 FROM pg_namespace WHERE nspname = 'kiln_missing'`) {
		t.Fatal("Check created the schema the search_path named")
	}
}
