package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SchemaVersion is the layout this package reads and writes: the tables
// that migrations up to and including this one create.
//
//   - 1: the first layout (the tables in db.go's package doc).
//   - 2: operators (issue 16), samples (the overview's charts) and
//     request_groups (one summary mail per group), as bbolt's schemas 4
//     and 5 added them.
//   - 3: tlog_entries and tlog_hashes (the transparency log; its size is
//     kiln_meta's "tlog_size", absent meaning 0), as bbolt's schema 6.
const SchemaVersion = 3

// migrations[i] brings a database at version i to version i+1. Each runs in
// the transaction that records the new version, so a crash leaves the
// database at its old version. Append only: a released step never changes.
var migrations = []string{
	// 0 → 1
	`
CREATE TABLE kiln_meta (key text COLLATE "C" PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE seqs (name text COLLATE "C" PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE projects (name text COLLATE "C" PRIMARY KEY, rec bytea NOT NULL);
CREATE TABLE build_servers (
  name text COLLATE "C" PRIMARY KEY,
  token_hash text COLLATE "C" UNIQUE,
  rec bytea NOT NULL);
CREATE TABLE builds (
  id bigint PRIMARY KEY,
  state int NOT NULL,
  project text COLLATE "C" NOT NULL,
  arch text COLLATE "C" NOT NULL,
  source_key text COLLATE "C" NOT NULL,
  rec bytea NOT NULL);
CREATE INDEX builds_by_state ON builds (state, id);
CREATE INDEX builds_by_project ON builds (project, id);
CREATE INDEX builds_by_arch ON builds (arch, id);
CREATE TABLE build_counts (state int PRIMARY KEY, n bigint NOT NULL);
CREATE FUNCTION kiln_count_builds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE build_counts SET n = n - 1 WHERE state = OLD.state;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO build_counts AS c (state, n) VALUES (NEW.state, 1)
      ON CONFLICT (state) DO UPDATE SET n = c.n + 1;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER builds_count AFTER INSERT OR DELETE OR UPDATE OF state ON builds
  FOR EACH ROW EXECUTE FUNCTION kiln_count_builds();
CREATE TABLE requests (id bigint PRIMARY KEY, build_id bigint NOT NULL, rec bytea NOT NULL);
CREATE INDEX requests_by_build ON requests (build_id, id);
CREATE TABLE artifacts (
  cache_key text COLLATE "C" PRIMARY KEY,
  source_key text COLLATE "C" NOT NULL,
  rec bytea NOT NULL);
CREATE INDEX artifacts_by_source ON artifacts (source_key, cache_key);
CREATE TABLE pins (name text COLLATE "C" PRIMARY KEY, rec bytea NOT NULL);
CREATE TABLE enroll_tokens (token_hash text COLLATE "C" PRIMARY KEY, rec bytea NOT NULL);
CREATE TABLE blobs (sha256 text COLLATE "C" PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE logs (build_id bigint, attempt int, data bytea NOT NULL, PRIMARY KEY (build_id, attempt));
CREATE TABLE outbox (
  id bigint PRIMARY KEY,
  due_s bigint NOT NULL,
  due_n int NOT NULL,
  rec bytea NOT NULL);
CREATE INDEX outbox_due ON outbox (due_s, due_n, id);
CREATE TABLE kiln_writer (
  one int PRIMARY KEY CHECK (one = 1),
  addr text NOT NULL,
  tls bool NOT NULL,
  secret text NOT NULL,
  since timestamptz NOT NULL DEFAULT now());
`,
	// 1 → 2
	`
CREATE TABLE operators (name text COLLATE "C" PRIMARY KEY, rec bytea NOT NULL);
CREATE TABLE samples (at_s bigint NOT NULL, at_n int NOT NULL, rec bytea NOT NULL, PRIMARY KEY (at_s, at_n));
CREATE TABLE request_groups (id text COLLATE "C" PRIMARY KEY, rec bytea NOT NULL);
`,
	// 2 → 3
	`
CREATE TABLE tlog_entries (n bigint PRIMARY KEY, entry bytea NOT NULL);
CREATE TABLE tlog_hashes (i bigint PRIMARY KEY, hash bytea NOT NULL CHECK (length(hash) = 32));
`,
}

// SchemaVersionError is returned by Open for a database whose schema
// version this package cannot read: written by a newer Kiln, or holding
// tables of another program where Kiln's should be. Nothing is changed.
type SchemaVersionError struct {
	// Found is the version recorded in the database (0: none, yet tables
	// are there).
	Found int64
	// Supported is SchemaVersion.
	Supported int64
}

func (e *SchemaVersionError) Error() string {
	if e.Found == 0 {
		return fmt.Sprintf("pgstore: the schema holds tables but no Kiln schema version (this build writes version %d); give an empty schema or database", e.Supported)
	}
	return fmt.Sprintf("pgstore: the database has schema version %d, this build supports up to %d", e.Found, e.Supported)
}

// migrate brings the schema on conn to SchemaVersion, one step at a time,
// all in one transaction. The caller holds the writer's advisory lock, so
// two processes never migrate at once.
func migrate(ctx context.Context, conn *pgx.Conn) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	found, err := storedVersion(ctx, tx)
	if err != nil {
		return err
	}
	if found > SchemaVersion {
		return &SchemaVersionError{Found: found, Supported: SchemaVersion}
	}
	if found == SchemaVersion {
		return nil
	}
	for v := found; v < SchemaVersion; v++ {
		if _, err := tx.Exec(ctx, migrations[v]); err != nil {
			return fmt.Errorf("pgstore: migrate to schema %d: %w", v+1, err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kiln_meta (key, value) VALUES ('version', $1)
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, int64(SchemaVersion)); err != nil {
		return fmt.Errorf("pgstore: record schema version: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	return nil
}

// storedVersion returns the schema version recorded in the current schema:
// 0 for an empty schema, *SchemaVersionError for one with tables but no
// version (another program's: migrating it as fresh would mix tables).
func storedVersion(ctx context.Context, tx pgx.Tx) (int64, error) {
	var hasMeta bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('kiln_meta') IS NOT NULL`).Scan(&hasMeta); err != nil {
		return 0, fmt.Errorf("pgstore: read schema version: %w", err)
	}
	if !hasMeta {
		var tables int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()`).Scan(&tables); err != nil {
			return 0, fmt.Errorf("pgstore: read schema version: %w", err)
		}
		if tables > 0 {
			return 0, &SchemaVersionError{Found: 0, Supported: SchemaVersion}
		}
		return 0, nil
	}
	var v int64
	err := tx.QueryRow(ctx, `SELECT value FROM kiln_meta WHERE key = 'version'`).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, &SchemaVersionError{Found: 0, Supported: SchemaVersion}
	}
	if err != nil {
		return 0, fmt.Errorf("pgstore: read schema version: %w", err)
	}
	if v <= 0 {
		return 0, &SchemaVersionError{Found: v, Supported: SchemaVersion}
	}
	return v, nil
}
