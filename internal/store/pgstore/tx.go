package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// querier is what a tx needs of pgx.Tx.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// tx implements store.Tx on one PostgreSQL transaction.
type tx struct {
	q        querier
	ctx      context.Context
	writable bool
	done     bool
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

// exec runs a writing statement.
func (t *tx) exec(what, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := t.q.Exec(t.ctx, sql, args...)
	if err != nil {
		return tag, classify(what, err)
	}
	return tag, nil
}

// getRec decodes into m the rec column the query selects. found is false,
// with a nil error, when there is no row.
func (t *tx) getRec(what string, m proto.Message, sql string, args ...any) (found bool, err error) {
	var v []byte
	err = t.q.QueryRow(t.ctx, sql, args...).Scan(&v)
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
	err := t.q.QueryRow(t.ctx, sql, args...).Scan(&one)
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
	rows, err := t.q.Query(t.ctx, sql, args...)
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
