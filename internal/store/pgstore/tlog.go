package pgstore

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/kilnbuild/kiln/internal/store"
)

// TlogSize implements store.Tx. The size is read once per transaction,
// then kept by AppendTlog.
func (t *tx) TlogSize() (int64, error) {
	if err := t.read(); err != nil {
		return 0, err
	}
	if t.tlogKnown {
		return t.tlogSize, nil
	}
	var v int64
	err := t.queryRow(`SELECT value FROM kiln_meta WHERE key = 'tlog_size'`).Scan(&v)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, classify("tlog size", err)
	}
	t.tlogSize, t.tlogKnown = v, true
	return v, nil
}

// TlogEntry implements store.Tx.
func (t *tx) TlogEntry(n int64) ([]byte, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	var v []byte
	err := t.queryRow(`SELECT entry FROM tlog_entries WHERE n = $1`, n).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("tlog entry", fmt.Sprint(n))
	}
	if err != nil {
		return nil, classify("tlog entry", err)
	}
	return nonNil(v), nil
}

// TlogHashes implements store.Tx. Hashes this transaction appended are
// answered from memory; the others are read in one query.
func (t *tx) TlogHashes(indexes []int64) ([]tlog.Hash, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	found := make(map[int64]tlog.Hash, len(indexes))
	var missing []int64
	for _, i := range indexes {
		if h, ok := t.tlogHashes[i]; ok {
			found[i] = h
		} else {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		if err := t.readTlogHashes(missing, found); err != nil {
			return nil, err
		}
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

// readTlogHashes adds the stored hashes at indexes to found.
func (t *tx) readTlogHashes(indexes []int64, found map[int64]tlog.Hash) error {
	rows, err := t.query(`SELECT i, hash FROM tlog_hashes WHERE i = ANY($1)`, indexes)
	if err != nil {
		return classify("tlog hashes", err)
	}
	defer rows.Close()
	for rows.Next() {
		var i int64
		var h []byte
		if err := rows.Scan(&i, &h); err != nil {
			return classify("tlog hashes", err)
		}
		var hash tlog.Hash
		copy(hash[:], h)
		found[i] = hash
	}
	return classifyNil("tlog hashes", rows.Err())
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
	if err := t.later("append tlog entry", `INSERT INTO tlog_entries (n, entry) VALUES ($1, $2)`, n, nonNil(entry)); err != nil {
		return err
	}
	if t.tlogHashes == nil {
		t.tlogHashes = make(map[int64]tlog.Hash)
	}
	for i, h := range hashes {
		if err := t.later("append tlog hash", `INSERT INTO tlog_hashes (i, hash) VALUES ($1, $2)`, first+int64(i), h[:]); err != nil {
			return err
		}
		t.tlogHashes[first+int64(i)] = h
	}
	if err := t.later("tlog size", `INSERT INTO kiln_meta (key, value) VALUES ('tlog_size', $1)
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, n+1); err != nil {
		return err
	}
	t.tlogSize = n + 1
	return nil
}
