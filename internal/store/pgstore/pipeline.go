package pgstore

import (
	"github.com/jackc/pgx/v5"
)

// Every statement of a tx crosses the network in a batch (pgx's pipeline),
// and a write whose answer no caller waits for (an upsert of a record, an
// append to the transparency log) is not sent on its own: later queues it,
// and it leaves with the next statement that is waited for, or just before
// the commit. A transaction of the metaserver's committer (many builds
// dispatched and finished at once) thus costs a round trip per read, not
// one per statement: on the 50,000-build dispatch cycle that was 27 round
// trips per build, one after the other on the single writer connection.
//
// What it changes for a caller: the error of a queued write (a constraint,
// the connection lost) comes back from the next statement of the
// transaction, whatever it is, or from Update; the transaction is then
// lost (PostgreSQL aborts it), every later statement fails with the same
// error and Update commits nothing. A Put that returned nil is therefore
// not yet known to be accepted, exactly as before it was not yet
// committed: only Update's nil says it is.

// maxPending bounds the writes queued before they are sent anyway, so a
// transaction that writes much holds a bounded batch in memory.
const maxPending = 512

// later queues a write whose answer nobody waits for; what names it in
// its error.
func (t *tx) later(what, sql string, args ...any) error {
	if t.failed != nil {
		return t.failed
	}
	if t.pending == nil {
		t.pending = &pgx.Batch{}
	}
	t.pending.Queue(sql, args...)
	t.whats = append(t.whats, what)
	if len(t.whats) >= maxPending {
		return t.flush()
	}
	return nil
}

// flush sends the pending writes and waits for their answers.
func (t *tx) flush() error {
	if t.pending == nil {
		return t.failed
	}
	br, err := t.roundTrip("", nil)
	if err != nil {
		return err
	}
	if err := br.Close(); err != nil {
		t.failed = classify("pending writes", err)
		return t.failed
	}
	return nil
}

// roundTrip sends the pending writes, then sql (unless ""), in one batch,
// and reads the writes' answers. It returns the results positioned at
// sql's, which the caller reads and then closes.
func (t *tx) roundTrip(sql string, args []any) (pgx.BatchResults, error) {
	if t.failed != nil {
		return nil, t.failed
	}
	b, whats := t.pending, t.whats
	t.pending, t.whats = nil, nil
	if b == nil {
		b = &pgx.Batch{}
	}
	if sql != "" {
		b.Queue(sql, args...)
	}
	br := t.q.SendBatch(t.ctx, b)
	for _, what := range whats {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			t.failed = classify(what, err)
			return nil, t.failed
		}
	}
	return br, nil
}

// queryRow is pgx's QueryRow through roundTrip: the statement leaves when
// the row is scanned.
func (t *tx) queryRow(sql string, args ...any) pgx.Row {
	return pendingRow{t: t, sql: sql, args: args}
}

type pendingRow struct {
	t    *tx
	sql  string
	args []any
}

func (r pendingRow) Scan(dest ...any) error {
	br, err := r.t.roundTrip(r.sql, r.args)
	if err != nil {
		return err
	}
	err = br.QueryRow().Scan(dest...)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// query is pgx's Query through roundTrip. Closing the rows ends the
// batch; no other statement of t may run until then.
func (t *tx) query(sql string, args ...any) (pgx.Rows, error) {
	br, err := t.roundTrip(sql, args)
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// batchRows closes its batch with itself.
type batchRows struct {
	pgx.Rows
	br pgx.BatchResults
}

func (r *batchRows) Close() {
	r.Rows.Close()
	_ = r.br.Close()
}
