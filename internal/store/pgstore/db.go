// Package pgstore implements store.Store on PostgreSQL (through pgx), for a
// farm that outgrows one machine's bbolt file.
//
// # Tables
//
// Records are the same deterministic protobuf as bolt's (proto/kilnstore/v1),
// kept whole in a bytea column; the columns beside them are what the
// indexes and lookups need, derived from the record by the Put methods in
// the same statement, so they are always in step with it. Text keys use
// the "C" collation: listings come in byte order, as bolt's do.
//
//	kiln_meta      key -> value        ("version": SchemaVersion)
//	seqs           name -> value       NextID
//	projects       name, rec
//	build_servers  name, token_hash (unique, NULL when none), rec
//	builds         id, state, project, arch (store.BuildArch), source_key, rec
//	               indexes (state, id), (project, id), (arch, id)
//	build_counts   state -> n          kept by a trigger on builds
//	requests       id, build_id, rec   index (build_id, id)
//	artifacts      cache_key, source_key, rec  index (source_key, cache_key)
//	pins           name, rec
//	enroll_tokens  token_hash, rec
//	blobs          sha256, data        small artifacts kept inline
//	logs           (build_id, attempt), data
//	outbox         id, due_s, due_n (next_attempt_at; nil = epoch), rec
//	               index (due_s, due_n, id)
//	kiln_writer    the writer's admin endpoint (at most one row; Advertise)
//
// The tables live in the connection's current schema (the first of its
// search_path, settable in the URL: ?search_path=kiln, created by Open if
// missing), so one database can hold several stores.
//
// # One writer
//
// store.Store's rule of one writer is kept with a session advisory lock
// (pg_try_advisory_lock on a key derived from the schema's name) taken by
// Open on a connection of its own and held for the store's life. Every
// Update runs on that very connection, so a process whose connection (and
// with it the lock) was lost cannot write any more: its Updates fail, it
// never reconnects, and Lost is closed; another process may then Open the
// store. A second Open while the lock is held waits up to
// Options.LockTimeout and fails with ErrLocked. Views run on a pool of
// other connections, each in a read-only REPEATABLE READ transaction (one
// consistent snapshot).
//
// # Round trips
//
// The one writer's transactions are serial, so its round trips bound the
// farm's rate: writes no caller waits for are queued and sent with the
// next statement that is waited for (pipeline.go), and the build server
// records it read or wrote are kept in memory across transactions
// (servercache.go), coherent because nothing else writes the store.
//
// # Schema versions
//
// kiln_meta's version is the layout above. Open refuses a schema written by
// a newer Kiln, or holding other tables without a Kiln version
// (*SchemaVersionError), and migrates an older one explicitly, one step at
// a time, in one transaction under the lock (schema.go).
//
// # Errors
//
// A commit PostgreSQL refuses for a full disk (SQLSTATE 53100) wraps
// store.ErrNoSpace; data or index corruption it reports (XX001, XX002)
// wraps store.ErrDamaged.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kilnbuild/kiln/internal/store"
)

var _ store.Store = (*DB)(nil)

// ErrLocked is returned by Open when another process holds the store's
// writer lock for longer than Options.LockTimeout.
var ErrLocked = errors.New("pgstore: another process holds the store's writer lock")

// ErrLost is returned by Update once the connection holding the writer lock
// failed: another process may be the writer now, so this one never writes
// again (reopen the store to try to become the writer anew).
var ErrLost = errors.New("pgstore: the writer lock's connection was lost")

// DefaultLockTimeout is how long Open waits for the writer lock when
// Options.LockTimeout is 0.
const DefaultLockTimeout = 2 * time.Second

// pingEvery is how often an idle writer connection is checked, so that a
// lost lock is noticed (Lost) even when nothing is written.
const pingEvery = 2 * time.Second

// Options tune Open. The zero value is what the metaserver uses.
type Options struct {
	// LockTimeout is how long Open waits for another process to release
	// the writer lock before failing with ErrLocked; 0 means
	// DefaultLockTimeout.
	LockTimeout time.Duration
	// MaxReaders bounds the pool of read connections; 0 means 8.
	MaxReaders int32
}

// DB is a store.Store on one PostgreSQL schema. It is safe for concurrent
// use: any number of Views run in parallel on the pool, Updates one at a
// time on the writer connection.
type DB struct {
	pool   *pgxpool.Pool
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex // the writer connection; held for a whole Update
	conn     *pgx.Conn
	lost     chan struct{}
	lostOnce sync.Once
	lostErr  error
	closed   bool
	pinger   sync.WaitGroup
	// servers is the writer's cache of build servers (servercache.go).
	servers serverCache
}

// Open connects to the database at url (any libpq URL or keyword string;
// the password from the URL or PGPASSWORD), takes the writer lock (waiting
// up to opts.LockTimeout, then ErrLocked), migrates the schema to
// SchemaVersion and returns the store. It fails with *SchemaVersionError
// for a schema it cannot read, leaving it as it was.
func Open(ctx context.Context, url string, opts Options) (*DB, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.MaxReaders <= 0 {
		opts.MaxReaders = 8
	}
	ccfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, ccfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: connect: %w", err)
	}
	fail := func(err error) (*DB, error) {
		_ = conn.Close(context.Background())
		return nil, err
	}
	if err := ensureSchema(ctx, conn); err != nil {
		return fail(err)
	}
	// If this host dies or is cut off, PostgreSQL notices within ~11 s
	// (not the kernel's 2 h) and frees the lock for a standby.
	if _, err := conn.Exec(ctx, `SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3`); err != nil {
		return fail(classify("keepalives", err))
	}
	if err := lock(ctx, conn, opts.LockTimeout); err != nil {
		return fail(err)
	}
	if err := migrate(ctx, conn); err != nil {
		return fail(err)
	}
	// The planner's statistics of a table that just grew (a burst of
	// submissions, then a crash) lag until autovacuum's next pass; with
	// them the lookups of startup recovery and of the first minutes
	// (requests by build, builds by state) scan whole tables: 10 times
	// slower over 50,000 queued builds (BenchmarkRecovery). ANALYZE samples
	// a bounded number of rows: ~100 ms at that size.
	if _, err := conn.Exec(ctx, `ANALYZE builds, requests, artifacts, outbox`); err != nil {
		return fail(classify("analyze", err))
	}
	// A dead writer's endpoint must not be taken for this one's.
	if _, err := conn.Exec(ctx, `DELETE FROM kiln_writer`); err != nil {
		return fail(classify("clear the writer endpoint", err))
	}
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return fail(fmt.Errorf("pgstore: %w", err))
	}
	pcfg.MaxConns = opts.MaxReaders
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fail(fmt.Errorf("pgstore: connect: %w", err))
	}
	dctx, cancel := context.WithCancel(context.Background())
	db := &DB{pool: pool, ctx: dctx, cancel: cancel, conn: conn, lost: make(chan struct{}), servers: serverCache{}}
	db.pinger.Add(1)
	go db.ping()
	return db, nil
}

// ensureSchema creates the first schema of the connection's search_path
// when it names one that does not exist yet (?search_path=kiln on a fresh
// database), so that the store has a current schema to live in.
func ensureSchema(ctx context.Context, conn *pgx.Conn) error {
	var current *string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&current); err != nil {
		return classify("current schema", err)
	}
	if current != nil {
		return nil
	}
	first := strings.TrimSpace(strings.Split(conn.Config().RuntimeParams["search_path"], ",")[0])
	first = strings.Trim(first, `"`)
	if first == "" || strings.HasPrefix(first, "$") {
		return errors.New("pgstore: no schema to keep the store in: the search_path names none that exists")
	}
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{first}.Sanitize()); err != nil {
		return classify("create schema "+first, err)
	}
	return nil
}

// lockKey is the SQL expression of the writer lock's key: one per schema.
const lockKey = `hashtextextended('kiln-store-writer:' || current_schema(), 0)`

// lock takes the writer lock of conn's current schema, polling until
// timeout.
func lock(ctx context.Context, conn *pgx.Conn, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var got bool
		err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(`+lockKey+`)`).Scan(&got)
		if err != nil {
			return fmt.Errorf("pgstore: writer lock: %w", err)
		}
		if got {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w (waited %s)", ErrLocked, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // a poll interval
		}
	}
}

// ping checks the idle writer connection every pingEvery until Close.
func (db *DB) ping() {
	defer db.pinger.Done()
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	for {
		select {
		case <-db.ctx.Done():
			return
		case <-t.C:
		}
		db.mu.Lock()
		if db.closed || db.lostErr != nil {
			db.mu.Unlock()
			return
		}
		ctx, cancel := context.WithTimeout(db.ctx, pingEvery)
		err := db.conn.Ping(ctx)
		cancel()
		if err != nil && db.ctx.Err() == nil {
			db.loseLocked(err)
		}
		db.mu.Unlock()
	}
}

// loseLocked records that the writer connection failed; db.mu is held.
func (db *DB) loseLocked(cause error) {
	db.lostOnce.Do(func() {
		db.lostErr = fmt.Errorf("%w: %v", ErrLost, cause)
		close(db.lost)
	})
}

// Lost is closed once the writer lock's connection has failed: from then on
// every Update fails with ErrLost. A metaserver stops when it closes, since
// another may have become the writer.
func (db *DB) Lost() <-chan struct{} { return db.lost }

// View runs fn in a read-only REPEATABLE READ transaction on a pooled
// connection: one consistent snapshot. Writes inside fn fail with
// ErrReadOnly. fn's error is returned as is.
func (db *DB) View(fn func(store.Tx) error) error {
	ptx, err := db.pool.BeginTx(db.ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return classify("begin view", err)
	}
	defer func() { _ = ptx.Rollback(context.Background()) }()
	t := &tx{q: ptx, ctx: db.ctx}
	defer func() { t.done = true }()
	return fn(t)
}

// Update runs fn in a read-write transaction on the writer connection and
// commits before it returns nil (PostgreSQL's synchronous commit: the WAL is
// flushed). If fn returns an error (returned as is) or panics, nothing is
// written. A queued write the database refused after its Put returned nil
// (pipeline.go) fails Update with its error, even if fn went on. A commit refused for a full disk wraps store.ErrNoSpace. Once
// the writer connection failed, Update fails with ErrLost.
func (db *DB) Update(fn func(store.Tx) error) (err error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return errors.New("pgstore: store closed")
	}
	if db.lostErr != nil {
		return db.lostErr
	}
	ptx, err := db.conn.Begin(db.ctx)
	if err != nil {
		return db.connFailed("begin", err)
	}
	committed := false
	defer func() {
		if !committed {
			if rerr := ptx.Rollback(context.Background()); rerr != nil && db.conn.IsClosed() {
				db.loseLocked(rerr)
			}
		}
	}()
	t := &tx{q: ptx, ctx: db.ctx, writable: true, cache: db.servers}
	func() {
		defer func() { t.done = true }()
		err = fn(t)
	}()
	if err != nil {
		return err
	}
	if err := t.flush(); err != nil {
		if db.conn.IsClosed() {
			db.loseLocked(err)
			return db.lostErr
		}
		return err
	}
	if err := ptx.Commit(db.ctx); err != nil {
		return db.connFailed("commit", err)
	}
	committed = true
	t.committed()
	return nil
}

// connFailed classifies err of the writer connection, recording the lock as
// lost when the connection closed.
func (db *DB) connFailed(op string, err error) error {
	if db.conn.IsClosed() {
		db.loseLocked(err)
		return db.lostErr
	}
	return classify(op, err)
}

// Close releases the writer lock (by closing its connection) and the
// pool. Calling it more than once is harmless.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	db.cancel()
	err := db.conn.Close(context.Background())
	db.mu.Unlock()
	db.pinger.Wait()
	db.pool.Close()
	if err != nil {
		return fmt.Errorf("pgstore: close: %w", err)
	}
	return nil
}

// classify wraps err with op, adding store.ErrNoSpace or store.ErrDamaged
// where PostgreSQL's SQLSTATE says so.
func classify(op string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "53100": // disk_full
			return fmt.Errorf("pgstore: %s: %w: %w", op, store.ErrNoSpace, err)
		case "XX001", "XX002": // data_corrupted, index_corrupted
			return fmt.Errorf("pgstore: %s: %w: %w", op, store.ErrDamaged, err)
		case "25006": // read_only_sql_transaction
			return fmt.Errorf("pgstore: %s: %w: %w", op, ErrReadOnly, err)
		}
	}
	return fmt.Errorf("pgstore: %s: %w", op, err)
}
