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
// Format: "kiln-cas-memo 2\n", then one record per entry (the 64 hex
// digits of the digest, the identity's length as an unsigned varint and its
// bytes, then the CRC-32C and the verification time as unsigned varints),
// then the CRC-32C of everything before it (4 bytes, big-endian). Version 1
// (the same with a file identity as five varints: dev, ino, size, mtime,
// ctime) is still read.
//
// A Memo of another BlobStore (package s3blob) is saved and loaded the same
// way, with [Memo.Save] and [Memo.Load], in a local file of its own: never
// in the store it vouches for, where whoever may change the objects could
// change the memo too.

// memoFileName is the file SaveMemo writes in the store's directory (not a
// shard: Walk ignores it).
const memoFileName = "verified.memo"

const (
	memoMagic   = "kiln-cas-memo 2\n"
	memoMagicV1 = "kiln-cas-memo 1\n"
)

// SaveMemo writes the remembered verifications to the store's directory
// (atomically: a temporary file renamed into place), for the next Open.
func (s *Store) SaveMemo() error {
	return s.memo.Save(filepath.Join(s.dir, memoFileName), s.tmp)
}

// Save writes the remembered verifications to path, atomically: a
// temporary file in tmpDir (on path's file system; "" is path's directory)
// renamed into place. [Memo.Load] reads it back.
func (m *Memo) Save(path, tmpDir string) error {
	var buf bytes.Buffer
	buf.WriteString(memoMagic)
	m.mu.Lock()
	for sha, v := range m.m {
		buf.WriteString(sha)
		buf.Write(binary.AppendUvarint(nil, uint64(len(v.id))))
		buf.WriteString(v.id)
		buf.Write(binary.AppendUvarint(nil, uint64(v.crc)))
		buf.Write(binary.AppendUvarint(nil, uint64(v.at.UnixNano())))
	}
	m.mu.Unlock()
	buf.Write(binary.BigEndian.AppendUint32(nil, crc32.Checksum(buf.Bytes(), castagnoli)))
	if tmpDir == "" {
		tmpDir = filepath.Dir(path)
	}
	tmp, err := os.CreateTemp(tmpDir, "memo-*")
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
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cas: save memo: %w", err)
	}
	return nil
}

// errBadMemo means the memo file is not one SaveMemo wrote whole.
var errBadMemo = errors.New("cas: memo file is damaged")

// maxIdentity bounds an identity read from a memo file.
const maxIdentity = 4096

// Load reads the memo file at path, if any, into m. A damaged file is
// ignored whole (an error wrapping errBadMemo, nothing loaded); a missing
// one is no error.
func (m *Memo) Load(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(data) < len(memoMagic)+4 {
		return errBadMemo
	}
	v1 := string(data[:len(memoMagicV1)]) == memoMagicV1
	if !v1 && string(data[:len(memoMagic)]) != memoMagic {
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
		var id string
		if v1 {
			id, err = readIDv1(r)
		} else {
			id, err = readID(r)
		}
		if err != nil {
			return errBadMemo
		}
		var x [2]uint64
		for i := range x {
			if x[i], err = binary.ReadUvarint(r); err != nil {
				return errBadMemo
			}
		}
		entries[string(sha)] = verified{id: id, crc: uint32(x[0]), at: time.Unix(0, int64(x[1]))}
	}
	for sha, v := range entries {
		m.put(sha, v)
	}
	return nil
}

// readID reads a version-2 identity: its length, then its bytes.
func readID(r *bytes.Reader) (string, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil || n > maxIdentity || n > uint64(r.Len()) {
		return "", errBadMemo
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", errBadMemo
	}
	return string(b), nil
}

// readIDv1 reads a version-1 file identity: dev, ino, size, mtime, ctime.
func readIDv1(r *bytes.Reader) (string, error) {
	var x [5]uint64
	for i := range x {
		var err error
		if x[i], err = binary.ReadUvarint(r); err != nil {
			return "", errBadMemo
		}
	}
	return fileID{dev: x[0], ino: x[1], size: int64(x[2]), mtime: int64(x[3]), ctime: int64(x[4])}.key(), nil
}
