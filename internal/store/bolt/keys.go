package bolt

import (
	"encoding/binary"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// u64 encodes v big-endian so that byte order is numeric order.
func u64(v uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)
}

// appendStr appends s prefixed by its length, so that the key of one string
// is never a prefix of the key of another.
func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// strKey is the index prefix of s.
func strKey(s string) []byte {
	return appendStr(make([]byte, 0, len(s)+binary.MaxVarintLen64+8), s)
}

// strIDKey is an index key: str s then id.
func strIDKey(s string, id uint64) []byte {
	return binary.BigEndian.AppendUint64(strKey(s), id)
}

// idIDKey is an index key: two u64.
func idIDKey(a, b uint64) []byte {
	k := make([]byte, 0, 16)
	k = binary.BigEndian.AppendUint64(k, a)
	return binary.BigEndian.AppendUint64(k, b)
}

// trailingID returns the u64 id ending an index key.
func trailingID(k []byte) uint64 {
	return binary.BigEndian.Uint64(k[len(k)-8:])
}

// dueLen is the length of the time part of an outbox_due key.
const dueLen = 12

// dueTime encodes a timestamp as 12 bytes ordered like time: seconds with
// the sign bit flipped, then nanoseconds. A nil timestamp is the Unix epoch,
// so a message without a next attempt time is due at once.
func dueTime(ts *timestamppb.Timestamp) []byte {
	k := make([]byte, 0, dueLen+8)
	k = binary.BigEndian.AppendUint64(k, uint64(ts.GetSeconds())^(1<<63))
	return binary.BigEndian.AppendUint32(k, uint32(ts.GetNanos()))
}

// dueKey is the outbox_due key of message id due at ts.
func dueKey(ts *timestamppb.Timestamp, id uint64) []byte {
	return binary.BigEndian.AppendUint64(dueTime(ts), id)
}

// dueBound is the time part of now, for comparing against dueKey prefixes.
func dueBound(now time.Time) []byte {
	return dueTime(timestamppb.New(now))
}

// successor returns the smallest key greater than every key starting with k.
// It returns nil when no such key exists (k is all 0xff).
func successor(k []byte) []byte {
	s := append([]byte(nil), k...)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] != 0xff {
			s[i]++
			return s[:i+1]
		}
	}
	return nil
}
