package pgstore_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/store/pgstore"
)

// A party with write access to a store's schema plants a function there
// and a CHECK constraint calling it on a table that has rows. Backup
// copies both into the archive; a restore would run the function for every
// row pg_restore copies, as the restoring role, in the target database:
// here it empties the builds of every other store there. Restore refuses
// the archive and changes nothing.
func TestRestore_ArchiveWithPlantedCodeIsRefused(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	dir := t.TempDir()
	src := pg.SchemaURL(t, "postgres", "tampered")
	populate(t, src)
	own := currentSchema(t, src)
	farmtest.ExecSQL(t, src, `CREATE FUNCTION planted() RETURNS bool LANGUAGE plpgsql AS $f$
DECLARE s text;
BEGIN
	IF current_database() = 'postgres' THEN RETURN true; END IF;
	FOR s IN SELECT table_schema FROM information_schema.tables WHERE table_name = 'builds' AND table_schema <> '`+own+`' LOOP
		EXECUTE format('SET LOCAL search_path = %I', s);
		EXECUTE format('DELETE FROM %I.builds', s);
	END LOOP;
	RETURN true;
END $f$`)
	farmtest.ExecSQL(t, src, `ALTER TABLE kiln_meta ADD CONSTRAINT planted CHECK (planted())`)
	archive := filepath.Join(dir, "tampered.pgdump")
	if _, err := pgstore.Backup(t.Context(), src, archive); err != nil {
		t.Fatal(err)
	}

	pg.CreateDatabase(t, "victim")
	victim := pg.SchemaURL(t, "victim", "prod")
	populate(t, victim)
	before := countBuilds(t, victim)
	if before == 0 {
		t.Fatal("the victim store holds no builds: the test proves nothing")
	}
	target := strings.Replace(src, "/postgres?", "/victim?", 1)
	_, err := pgstore.Restore(t.Context(), target, archive)
	if after := countBuilds(t, victim); after != before {
		t.Fatalf("restoring the tampered archive changed another store: %d builds, was %d (Restore: %v)", after, before, err)
	}
	if !errors.Is(err, pgstore.ErrRestoreRefused) {
		t.Fatalf("Restore of an archive holding a function: %v, want ErrRestoreRefused", err)
	}
	t.Log(err)
	if n := countTables(t, target); n != 0 {
		t.Fatalf("the refused restore left %d tables", n)
	}
	if queryBool(t, target, `SELECT count(*) > 0 FROM pg_namespace WHERE nspname LIKE 'kiln\_restore\_ref\_%'`) {
		t.Fatal("the restore left its scratch schema behind")
	}
	// The same store's backup without the planted code restores there.
	farmtest.ExecSQL(t, src, `ALTER TABLE kiln_meta DROP CONSTRAINT planted; DROP FUNCTION planted()`)
	clean := filepath.Join(dir, "clean.pgdump")
	if _, err := pgstore.Backup(t.Context(), src, clean); err != nil {
		t.Fatal(err)
	}
	if _, err := pgstore.Restore(t.Context(), target, clean); err != nil {
		t.Fatalf("Restore of the clean archive: %v", err)
	}
	if after := countBuilds(t, victim); after != before {
		t.Fatalf("the clean restore changed another store: %d builds, was %d", after, before)
	}
}

func countBuilds(t *testing.T, url string) int {
	t.Helper()
	return queryInt(t, url, `SELECT count(*) FROM builds`)
}

func currentSchema(t *testing.T, url string) string {
	t.Helper()
	c, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(t.Context())
	var s string
	if err := c.QueryRow(t.Context(), `SELECT current_schema()`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// A hand-made archive: the COPY statement pg_restore sends for a table's
// data is text of the archive's, and pg_restore runs whatever it says.
// Edited in place (the same length, so the archive's offsets hold), a
// Kiln backup's builds data entry first empties another store's builds.
func TestRestore_ArchiveWhoseCopyStatementRunsSQLIsRefused(t *testing.T) {
	pg := farmtest.StartPostgres(t)
	dir := t.TempDir()
	src := pg.SchemaURL(t, "postgres", "edited")
	populate(t, src)
	archive := filepath.Join(dir, "edited.pgdump")
	if _, err := pgstore.Backup(t.Context(), src, archive); err != nil {
		t.Fatal(err)
	}
	own := currentSchema(t, src)
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	copyStmt := "COPY " + own + ".builds (id, state, project, arch, source_key, rec) FROM stdin;\n"
	hostile := "TRUNCATE v.builds;COPY " + own + ".builds FROM stdin;\n"
	hostile = strings.Repeat(" ", len(copyStmt)-len(hostile)) + hostile
	if bytes.Count(data, []byte(copyStmt)) != 1 {
		t.Fatalf("the archive holds %d copies of %q", bytes.Count(data, []byte(copyStmt)), copyStmt)
	}
	edited := writeFile(t, dir, "hostile.pgdump", bytes.Replace(data, []byte(copyStmt), []byte(hostile), 1))

	victimDB := pg.CreateDatabase(t, "victim")
	farmtest.ExecSQL(t, victimDB, `CREATE SCHEMA v; CREATE TABLE v.builds (id int); INSERT INTO v.builds VALUES (1), (2)`)
	target := strings.Replace(src, "/postgres?", "/victim?", 1)
	_, err = pgstore.Restore(t.Context(), target, edited)
	if !queryBool(t, victimDB, `SELECT count(*) = 2 FROM v.builds`) {
		t.Fatalf("restoring the edited archive emptied another schema's table (Restore: %v)", err)
	}
	if !errors.Is(err, pgstore.ErrRestoreRefused) {
		t.Fatalf("Restore of an archive with an edited COPY statement: %v, want ErrRestoreRefused", err)
	}
	t.Log(err)
}
