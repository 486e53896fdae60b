package cas

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Remembered verifications across a restart.
//
// SaveMemo writes the verifications the store remembers to memoFileName in
// its directory (a graceful stop of the metaserver calls it), and Open loads
// them, so the first read of a blob after a restart is not hashed with
// sha256 again when the file is unchanged. Nothing is trusted beyond what
// the memo already trusts: an entry still names the file's identity
// (device, inode, size, mtime, ctime), which any change to the file alters,
// and the time of its sha256 verification, after which DefaultReverifyAfter
// still applies. A file that is torn, truncated or altered fails its own
// CRC-32C and is ignored whole (every blob is then hashed on its first
// read); after a crash there is no new file, and an older one only names
// identities that have changed or verifications that are older.
//
// Format: "kiln-cas-memo 1\n", then one record per entry (the 64 hex
// digits of the digest, then dev, ino, size, mtime, ctime, CRC-32C and the
// verification time as unsigned varints), then the CRC-32C of everything
// before it (4 bytes, big-endian).

// memoFileName is the file SaveMemo writes in the store's directory (not a
// shard: Walk ignores it).
const memoFileName = "verified.memo"

const memoMagic = "kiln-cas-memo 1\n"

// SaveMemo writes the remembered verifications to the store's directory
// (atomically: a temporary file renamed into place), for the next Open.
func (s *Store) SaveMemo() error {
	var buf bytes.Buffer
	buf.WriteString(memoMagic)
	s.memo.mu.Lock()
	for sha, v := range s.memo.m {
		buf.WriteString(sha)
		for _, x := range []uint64{v.id.dev, v.id.ino, uint64(v.id.size), uint64(v.id.mtime), uint64(v.id.ctime), uint64(v.crc), uint64(v.at.UnixNano())} {
			buf.Write(binary.AppendUvarint(nil, x))
		}
	}
	s.memo.mu.Unlock()
	buf.Write(binary.BigEndian.AppendUint32(nil, crc32.Checksum(buf.Bytes(), castagnoli)))
	tmp, err := os.CreateTemp(s.tmp, "memo-*")
	if err != nil {
		return fmt.Errorf("cas: save memo: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("cas: save memo: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cas: save memo: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.dir, memoFileName)); err != nil {
		return fmt.Errorf("cas: save memo: %w", err)
	}
	return nil
}

// errBadMemo means the memo file is not one SaveMemo wrote whole.
var errBadMemo = errors.New("cas: memo file is damaged")

// load reads the memo file, if any, into m. A damaged file is ignored
// whole (errBadMemo); a missing one is no error.
func (m *memo) load(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(data) < len(memoMagic)+4 || string(data[:len(memoMagic)]) != memoMagic {
		return errBadMemo
	}
	body, sum := data[:len(data)-4], binary.BigEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return errBadMemo
	}
	entries := map[string]verified{}
	r := bytes.NewReader(body[len(memoMagic):])
	for r.Len() > 0 {
		sha := make([]byte, 64)
		if _, err := io.ReadFull(r, sha); err != nil || !ValidDigest(string(sha)) {
			return errBadMemo
		}
		var x [7]uint64
		for i := range x {
			if x[i], err = binary.ReadUvarint(r); err != nil {
				return errBadMemo
			}
		}
		entries[string(sha)] = verified{
			id:  fileID{dev: x[0], ino: x[1], size: int64(x[2]), mtime: int64(x[3]), ctime: int64(x[4])},
			crc: uint32(x[5]),
			at:  time.Unix(0, int64(x[6])),
		}
	}
	for sha, v := range entries {
		m.put(sha, v)
	}
	return nil
}
