package bolt

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/kilnbuild/kiln/internal/store"
)

// TlogSize implements store.Tx.
func (t *tx) TlogSize() (int64, error) {
	if err := t.read(); err != nil {
		return 0, err
	}
	v := t.bucket(bucketMeta).Get(keyTlogSize)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, damaged("meta/tlog_size of %d bytes", len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// TlogEntry implements store.Tx.
func (t *tx) TlogEntry(n int64) ([]byte, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, notFound("tlog entry", n)
	}
	v := t.bucket(bucketTlogEntries).Get(u64(uint64(n)))
	if v == nil {
		return nil, notFound("tlog entry", n)
	}
	return append([]byte(nil), v...), nil
}

// TlogHashes implements store.Tx.
func (t *tx) TlogHashes(indexes []int64) ([]tlog.Hash, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	b := t.bucket(bucketTlogHashes)
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 {
			return nil, notFound("tlog hash", x)
		}
		v := b.Get(u64(uint64(x)))
		if v == nil {
			return nil, notFound("tlog hash", x)
		}
		if len(v) != tlog.HashSize {
			return nil, damaged("tlog hash %d of %d bytes", x, len(v))
		}
		copy(out[i][:], v)
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
	if err := t.bucket(bucketTlogEntries).Put(u64(uint64(n)), append([]byte{}, entry...)); err != nil {
		return err
	}
	hb := t.bucket(bucketTlogHashes)
	for i, h := range hashes {
		if err := hb.Put(u64(uint64(first+int64(i))), append([]byte{}, h[:]...)); err != nil {
			return err
		}
	}
	return t.bucket(bucketMeta).Put(keyTlogSize, u64(uint64(n+1)))
}

// damaged reports a record the layout cannot hold: the file was changed
// behind the store's back.
func damaged(format string, args ...any) error {
	return &DamagedError{Path: "(open store)", Reason: fmt.Sprintf(format, args...)}
}
