package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/store"
)

// ErrReadOnly is returned by the writing methods of a Tx handed out by View.
var ErrReadOnly = errors.New("pgstore: write in a read-only transaction")

// ErrTxDone is returned by every method of a Tx used after its closure
// returned.
var ErrTxDone = errors.New("pgstore: transaction used after its closure returned")

// ErrInvalid is returned when a record lacks its key (a nil message, an
// empty name, a zero id) or has a value the tables cannot hold.
var ErrInvalid = errors.New("pgstore: invalid record")

var marshal = proto.MarshalOptions{Deterministic: true}

// querier is what a tx needs of pgx.Tx: every statement goes through a
// batch (pipeline.go).
type querier interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// tx implements store.Tx on one PostgreSQL transaction.
type tx struct {
	q        querier
	ctx      context.Context
	writable bool
	done     bool

	// pending holds the writes whose answer nobody waits for (later),
	// sent ahead of the next statement that is waited for, in its round
	// trip, or before the commit; whats names each for its error.
	pending *pgx.Batch
	whats   []string
	// failed is the error of a pending write: the transaction is lost,
	// and every later statement and the commit fail with it.
	failed error

	// tlogSize is the transparency log's size once read or appended to
	// in this transaction (tlogKnown); tlogHashes are the hashes this
	// transaction appended, so the next append reads none of them back.
	tlogSize   int64
	tlogKnown  bool
	tlogHashes map[int64]tlog.Hash

	// wroteBuild holds the ids of the builds PutBuild wrote in this
	// transaction, buildsWritten counts its calls: BuildsByState reads
	// such a build afresh rather than from its page.
	wroteBuild    map[int64]bool
	buildsWritten int

	// servers maps the build servers this transaction read or wrote to
	// their token hashes: PutBuildServer of one of them, hash unchanged,
	// cannot fail and is queued (later).
	servers map[string]string
	// cache is the writer's cache of committed build servers (nil in a
	// View); serverWrites are this transaction's, merged into it once
	// committed.
	cache        serverCache
	serverWrites map[string]*store.BuildServer

	// pageRequests are the requests (records) of the builds of the page
	// a read-only BuildsByState is visiting, by build id.
	pageRequests map[int64][][]byte
}

var _ store.Tx = (*tx)(nil)

// read checks that the transaction may still be used.
func (t *tx) read() error {
	if t.done {
		return ErrTxDone
	}
	return nil
}

// write checks that the transaction may still be used and is writable.
func (t *tx) write() error {
	if t.done {
		return ErrTxDone
	}
	if !t.writable {
		return ErrReadOnly
	}
	return nil
}

// exec runs a writing statement and waits for its answer (with any
// pending writes ahead of it, in one round trip).
func (t *tx) exec(what, sql string, args ...any) (pgconn.CommandTag, error) {
	br, err := t.roundTrip(sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return tag, classify(what, err)
	}
	return tag, nil
}

// getRec decodes into m the rec column the query selects. found is false,
// with a nil error, when there is no row.
func (t *tx) getRec(what string, m proto.Message, sql string, args ...any) (found bool, err error) {
	var v []byte
	err = t.queryRow(sql, args...).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, classify(what, err)
	}
	return true, decode(what, v, m)
}

// exists reports whether the query returns a row.
func (t *tx) exists(what, sql string, args ...any) (bool, error) {
	var one int
	err := t.queryRow(sql, args...).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, classify(what, err)
	}
	return true, nil
}

// decode unmarshals a record column.
func decode(what string, v []byte, m proto.Message) error {
	if err := proto.Unmarshal(v, m); err != nil {
		return fmt.Errorf("pgstore: decode %s: %w", what, err)
	}
	return nil
}

// encode marshals m deterministically.
func encode(what string, m proto.Message) ([]byte, error) {
	v, err := marshal.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("pgstore: encode %s: %w", what, err)
	}
	return v, nil
}

// collect runs a query selecting one rec column and decodes each row with
// newRec.
func collect[T proto.Message](t *tx, what string, newRec func() T, sql string, args ...any) ([]T, error) {
	rows, err := t.query(sql, args...)
	if err != nil {
		return nil, classify(what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v []byte
		if err := rows.Scan(&v); err != nil {
			return nil, classify(what, err)
		}
		m := newRec()
		if err := decode(what, v, m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, classify(what, err)
	}
	return out, nil
}

// notFound wraps store.ErrNotFound with what was looked up.
func notFound(what string, key any) error {
	return fmt.Errorf("pgstore: %s %v: %w", what, key, store.ErrNotFound)
}

// existsErr wraps store.ErrExists with what was created.
func existsErr(what string, key any) error {
	return fmt.Errorf("pgstore: %s %v: %w", what, key, store.ErrExists)
}

// invalid wraps ErrInvalid with why.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// nullable maps "" to SQL NULL.
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
