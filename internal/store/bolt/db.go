// Package bolt implements store.Store on one bbolt file.
//
// # Bucket tree
//
// Every bucket below is created when the file is opened, so transactions never
// find one missing. Records are deterministic protobuf (proto/kilnstore/v1);
// index entries have empty values. u64 is 8 bytes big-endian, so byte order is
// numeric order; str is a string prefixed by its length as a uvarint, so one
// string is never the prefix of another's key.
//
//	meta/
//	  "version"            -> u64 schema version (SchemaVersion, 4)
//	  "outbox_len"         -> u64 messages in outbox/
//	  "tlog_size"          -> u64 entries in tlog_entries/ (absent: 0)
//	seq/
//	  <sequence name>/     bucket whose NextSequence is NextID(name)
//	projects/              name -> ProjectRecord
//	build_servers/         name -> BuildServerRecord
//	operators/             name -> OperatorRecord (schema 4)
//	build_servers_by_token/ token_hash -> name (servers with a token hash only)
//	builds/                u64 id -> BuildRecord
//	builds_by_state/       state byte + u64 id
//	builds_by_project/     str project + u64 id
//	builds_by_arch/        str store.BuildArch + u64 id
//	build_counts/          state byte -> u64 builds in that state (absent: 0)
//	requests/              u64 id -> RequestRecord
//	requests_by_build/     u64 build id + u64 request id
//	artifacts/             cache_key -> ArtifactRecord
//	artifacts_by_source/   str source_key + cache_key
//	pins/                  name -> PinRecord
//	enroll_tokens/         token hash -> EnrollTokenRecord
//	blobs/                 sha256 -> raw bytes of a small artifact stored inline
//	logs/                  build id, attempt number -> a small attempt log, whole
//	tlog_entries/          u64 n -> entry n of the transparency log, as logged
//	tlog_hashes/           u64 stored hash index (tlog.StoredHashIndex) -> 32 bytes
//	outbox/                u64 id -> OutboxRecord
//	outbox_due/            next_attempt_at (u64 seconds with the sign bit
//	                       flipped + u32 nanos; nil = epoch) + u64 id
//	samples/               at (encoded like outbox_due's time) -> SampleRecord;
//	                       the oldest deleted beyond PutSample's keep
//	request_groups/        group id -> RequestGroupRecord
//
// PutBuild, PutRequest, PutArtifact and PutOutbox read the previous version of
// the record to remove its stale index entries, so the indexes are always in
// step with the records in the same transaction.
//
// # Integrity
//
// Open refuses, before writing anything, an existing file that is empty,
// shorter than the pages its meta page counts, without a valid meta page,
// or (unless Options.NoCheck) failing bbolt's Tx.Check: a *DamagedError
// wrapping store.ErrDamaged (integrity.go). A missing file is created.
// Afterwards a page bbolt cannot decode fails the transaction that reads
// it with a *DamagedError instead of a panic, and a commit that finds the
// disk full fails with store.ErrNoSpace, having written nothing. Backup
// and BackupFile copy the store from one read transaction; CheckFile
// checks a file read-only.
//
// # Schema versions
//
// meta/version is the layout above. Open refuses a file written by a newer
// Kiln (*SchemaVersionError) and upgrades an older one explicitly, one step at
// a time (see upgrade in schema.go).
package bolt

import (
	"errors"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/kilnbuild/kiln/internal/store"
)

var _ store.Store = (*DB)(nil)

// DefaultTimeout is how long Open waits for the file lock, applied by
// Open to a zero Options.Timeout.
const DefaultTimeout = time.Second

// Options tune Open. The zero value is what the metaserver uses.
type Options struct {
	// Timeout is how long Open waits for another process to release the
	// file lock before failing with an error wrapping bbolt's ErrTimeout;
	// 0 means DefaultTimeout.
	Timeout time.Duration
	// NoSync skips fsync on commit. Only for tests and benchmarks: a
	// committed transaction may be lost on power failure.
	NoSync bool
	// NoCheck skips the consistency check of every page that Open runs on
	// an existing file before writing to it (the cheap check of its size
	// against its meta page always runs). The check walks every page: about
	// 60-110 ms for a 221 MiB store of 100,000 builds with a warm page cache
	// (more from a cold disk).
	NoCheck bool
}

// DB is a store.Store backed by one bbolt file. It is safe for concurrent
// use: any number of View calls run in parallel with one writer at a time.
type DB struct {
	db   *bbolt.DB
	path string
}

// Open opens (creating it with mode 0600 if needed) the bbolt file at path,
// creates missing buckets and checks the schema version. Before it writes
// anything to an existing file it checks it: its size against its meta page
// (a zero-length or truncated file), then, unless opts.NoCheck, every page
// (bbolt's Tx.Check); a file that fails is refused with a *DamagedError
// (wrapping store.ErrDamaged) and left as it was. It fails with an error
// wrapping bbolt's ErrTimeout when another process holds the file for longer
// than opts.Timeout, and with *SchemaVersionError when the file was written
// by a newer schema or is not a Kiln store.
func Open(path string, opts Options) (*DB, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if err := precheck(path); err != nil {
		return nil, err
	}
	var bdb *bbolt.DB
	err := guard(path, func() error {
		var err error
		bdb, err = bbolt.Open(path, 0o600, &bbolt.Options{
			Timeout:      opts.Timeout,
			NoSync:       opts.NoSync,
			FreelistType: bbolt.FreelistMapType,
		})
		return err
	})
	if err != nil {
		var d *DamagedError
		if errors.As(err, &d) {
			return nil, err
		}
		if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) {
			return nil, &DamagedError{Path: path, Reason: err.Error()}
		}
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	db := &DB{db: bdb, path: path}
	if !opts.NoCheck {
		// Before the first write: a damaged file must stay as it was.
		if err := guard(path, func() error {
			return bdb.View(func(btx *bbolt.Tx) error { return check(path, btx) })
		}); err != nil {
			return nil, errors.Join(err, bdb.Close())
		}
	}
	if err := guard(path, func() error {
		return bdb.Update(func(btx *bbolt.Tx) error { return upgrade(btx, path) })
	}); err != nil {
		var d *DamagedError
		if errors.As(err, &d) {
			return nil, errors.Join(err, bdb.Close())
		}
		return nil, errors.Join(fmt.Errorf("bolt: open %s: %w", path, err), bdb.Close())
	}
	return db, nil
}

// Path returns the file path given to Open.
func (db *DB) Path() string { return db.path }

// View runs fn in a read-only transaction on a consistent snapshot. Writes
// inside fn fail with ErrReadOnly. fn's error is returned as is.
func (db *DB) View(fn func(store.Tx) error) error {
	return guard(db.path, func() error {
		return db.db.View(func(btx *bbolt.Tx) error { return run(btx, fn) })
	})
}

// Update runs fn in a read-write transaction and commits with fsync before
// returning nil. If fn returns an error (returned as is) or panics, nothing
// is written. A commit that finds the disk full fails with an error
// wrapping store.ErrNoSpace, having written nothing; the store stays
// usable. A page bbolt cannot decode, in fn's reads or in the commit, fails
// it with a *DamagedError instead of a panic.
func (db *DB) Update(fn func(store.Tx) error) error {
	return noSpace(guard(db.path, func() error {
		return db.db.Update(func(btx *bbolt.Tx) error { return run(btx, fn) })
	}))
}

// Close waits for running transactions and closes the file. Calling Close
// more than once is harmless.
func (db *DB) Close() error {
	if err := db.db.Close(); err != nil {
		return fmt.Errorf("bolt: close %s: %w", db.path, err)
	}
	return nil
}

// run hands fn a Tx that refuses use once fn has returned, and writes what
// fn left pending in it (build counts) when fn succeeded.
func run(btx *bbolt.Tx, fn func(store.Tx) error) error {
	t := &tx{btx: btx}
	defer func() { t.done = true }()
	if err := fn(t); err != nil {
		return err
	}
	return t.flushCounts()
}
