package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/store"
)

// ErrReadOnly is returned by the writing methods of a Tx handed out by View.
// It wraps bbolt's ErrTxNotWritable.
var ErrReadOnly = fmt.Errorf("bolt: write in a read-only transaction: %w", berrors.ErrTxNotWritable)

// ErrTxDone is returned by every method of a Tx used after its closure
// returned.
var ErrTxDone = errors.New("bolt: transaction used after its closure returned")

// ErrInvalid is returned when a record lacks its key (a nil message, an empty
// name, a zero id) or has a value the layout cannot hold.
var ErrInvalid = errors.New("bolt: invalid record")

var marshal = proto.MarshalOptions{Deterministic: true}

// tx implements store.Tx on one bbolt transaction.
type tx struct {
	btx  *bbolt.Tx
	done bool
	// counts are the changes to build_counts not yet written, by state
	// byte: PutBuild adds to them and flushCounts writes them once at the
	// end of the closure (a few bbolt operations per transaction instead of
	// four per PutBuild); CountBuildsByState adds them to what it reads.
	counts map[byte]int64
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
	if !t.btx.Writable() {
		return ErrReadOnly
	}
	return nil
}

// bucket returns the top-level bucket name. The indexes whose keys end with
// an increasing id and whose entries never grow are filled to the brim when
// a leaf splits (bbolt's default is half), since new keys land after the last
// one: half as many pages to hold and write.
func (t *tx) bucket(name []byte) *bbolt.Bucket {
	b := t.btx.Bucket(name)
	if appendIndex(name) {
		b.FillPercent = 1.0
	}
	return b
}

// appendIndex reports whether name is an index filled in id order.
func appendIndex(name []byte) bool {
	switch string(name) {
	case "builds_by_state", "builds_by_project", "builds_by_arch", "requests_by_build", "tlog_entries", "tlog_hashes":
		return true
	}
	return false
}

// get decodes the record at key into m. found is false, with a nil error,
// when there is none. m is decoded from a copy, so it shares no memory with
// the transaction.
func (t *tx) get(bucket, key []byte, m proto.Message) (found bool, err error) {
	v := t.bucket(bucket).Get(key)
	if v == nil {
		return false, nil
	}
	return true, decode(bucket, key, v, m)
}

// decode unmarshals the value v found at bucket/key into m. proto.Unmarshal
// copies bytes and strings, so m outlives the transaction.
func decode(bucket, key, v []byte, m proto.Message) error {
	if err := proto.Unmarshal(v, m); err != nil {
		return fmt.Errorf("bolt: decode %s/%x: %w", bucket, key, err)
	}
	return nil
}

// put encodes m deterministically at key.
func (t *tx) put(bucket, key []byte, m proto.Message) error {
	v, err := marshal.Marshal(m)
	if err != nil {
		return fmt.Errorf("bolt: encode %s/%x: %w", bucket, key, err)
	}
	if err := t.bucket(bucket).Put(key, v); err != nil {
		return fmt.Errorf("bolt: put %s/%x: %w", bucket, key, err)
	}
	return nil
}

// mark adds an empty-valued index entry.
func (t *tx) mark(bucket, key []byte) error {
	if err := t.bucket(bucket).Put(key, []byte{}); err != nil {
		return fmt.Errorf("bolt: index %s/%x: %w", bucket, key, err)
	}
	return nil
}

// del removes key from bucket (no error when absent).
func (t *tx) del(bucket, key []byte) error {
	if err := t.bucket(bucket).Delete(key); err != nil {
		return fmt.Errorf("bolt: delete %s/%x: %w", bucket, key, err)
	}
	return nil
}

// add adds delta to the u64 counter at key, deleting the key at zero. It
// refuses to go below zero: that would mean an index out of step.
func (t *tx) add(bucket, key []byte, delta int64) error {
	b := t.bucket(bucket)
	var n uint64
	if v := b.Get(key); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	if delta < 0 && n < uint64(-delta) {
		return fmt.Errorf("bolt: counter %s/%x would go below zero", bucket, key)
	}
	n = uint64(int64(n) + delta)
	if n == 0 {
		return t.del(bucket, key)
	}
	if err := b.Put(key, u64(n)); err != nil {
		return fmt.Errorf("bolt: counter %s/%x: %w", bucket, key, err)
	}
	return nil
}

// countBuild adds delta to the number of builds in state byte sb, written
// by flushCounts.
func (t *tx) countBuild(sb byte, delta int64) {
	if t.counts == nil {
		t.counts = make(map[byte]int64, 4)
	}
	t.counts[sb] += delta
}

// flushCounts writes the pending build count changes, in state order.
func (t *tx) flushCounts() error {
	states := make([]byte, 0, len(t.counts))
	for sb, d := range t.counts {
		if d != 0 {
			states = append(states, sb)
		}
	}
	slices.Sort(states)
	for _, sb := range states {
		if err := t.add(bucketBuildCounts, []byte{sb}, t.counts[sb]); err != nil {
			return err
		}
	}
	t.counts = nil
	return nil
}

// keysWithPrefix returns copies of the keys of bucket starting with prefix,
// in order.
func (t *tx) keysWithPrefix(bucket, prefix []byte) [][]byte {
	var keys [][]byte
	c := t.bucket(bucket).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	return keys
}

// each calls fn for each key of bucket starting with prefix, in order. It
// seeks afresh after every call, so fn may write to bucket (even delete the
// key it was given) without keys being skipped; keys added behind the
// current one are not visited, keys added ahead are.
func (t *tx) each(bucket, prefix []byte, fn func(k, v []byte) error) error {
	from := prefix
	for {
		k, v := t.bucket(bucket).Cursor().Seek(from)
		if k == nil || !bytes.HasPrefix(k, prefix) {
			return nil
		}
		k, v = bytes.Clone(k), bytes.Clone(v)
		if err := fn(k, v); err != nil {
			if errors.Is(err, store.ErrStop) {
				return nil
			}
			return err
		}
		from = append(k, 0)
	}
}

// notFound wraps store.ErrNotFound with what was looked up.
func notFound(what string, key any) error {
	return fmt.Errorf("bolt: %s %v: %w", what, key, store.ErrNotFound)
}

// exists wraps store.ErrExists with what was created.
func exists(what string, key any) error {
	return fmt.Errorf("bolt: %s %v: %w", what, key, store.ErrExists)
}

// invalid wraps ErrInvalid with why.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}
