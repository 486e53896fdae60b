package pgstore

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/kilnbuild/kiln/internal/store"
)

// TlogSize implements store.Tx.
func (t *tx) TlogSize() (int64, error) {
	if err := t.read(); err != nil {
		return 0, err
	}
	var v int64
	err := t.q.QueryRow(t.ctx, `SELECT value FROM kiln_meta WHERE key = 'tlog_size'`).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, classify("tlog size", err)
	}
	return v, nil
}

// TlogEntry implements store.Tx.
func (t *tx) TlogEntry(n int64) ([]byte, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	var v []byte
	err := t.q.QueryRow(t.ctx, `SELECT entry FROM tlog_entries WHERE n = $1`, n).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("tlog entry", fmt.Sprint(n))
	}
	if err != nil {
		return nil, classify("tlog entry", err)
	}
	return nonNil(v), nil
}

// TlogHashes implements store.Tx.
func (t *tx) TlogHashes(indexes []int64) ([]tlog.Hash, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	rows, err := t.q.Query(t.ctx, `SELECT i, hash FROM tlog_hashes WHERE i = ANY($1)`, indexes)
	if err != nil {
		return nil, classify("tlog hashes", err)
	}
	defer rows.Close()
	found := make(map[int64]tlog.Hash, len(indexes))
	for rows.Next() {
		var i int64
		var h []byte
		if err := rows.Scan(&i, &h); err != nil {
			return nil, classify("tlog hashes", err)
		}
		var hash tlog.Hash
		copy(hash[:], h)
		found[i] = hash
	}
	if err := rows.Err(); err != nil {
		return nil, classify("tlog hashes", err)
	}
	out := make([]tlog.Hash, len(indexes))
	for k, i := range indexes {
		h, ok := found[i]
		if !ok {
			return nil, notFound("tlog hash", fmt.Sprint(i))
		}
		out[k] = h
	}
	return out, nil
}

// AppendTlog implements store.Tx.
func (t *tx) AppendTlog(n int64, entry []byte, hashes []tlog.Hash) error {
	if err := t.write(); err != nil {
		return err
	}
	size, err := t.TlogSize()
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%w: entry %d appended to a log of %d", store.ErrTlogFork, n, size)
	}
	first := tlog.StoredHashCount(n)
	if want := tlog.StoredHashCount(n+1) - first; int64(len(hashes)) != want {
		return invalid("tlog entry %d with %d hashes, want %d", n, len(hashes), want)
	}
	if _, err := t.exec("append tlog entry", `INSERT INTO tlog_entries (n, entry) VALUES ($1, $2)`, n, nonNil(entry)); err != nil {
		return err
	}
	for i, h := range hashes {
		if _, err := t.exec("append tlog hash", `INSERT INTO tlog_hashes (i, hash) VALUES ($1, $2)`, first+int64(i), h[:]); err != nil {
			return err
		}
	}
	_, err = t.exec("tlog size", `INSERT INTO kiln_meta (key, value) VALUES ('tlog_size', $1)
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, n+1)
	return err
}
