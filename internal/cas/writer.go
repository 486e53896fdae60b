package cas

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"os"
	"path/filepath"
	"time"
)

// Writer writes one blob: Write any number of times, then Commit or Abort.
// Memory use is bounded (a 256 KiB buffer) whatever the blob's size. A Writer
// is not safe for concurrent use.
type Writer struct {
	s    *Store
	f    *os.File // nil once committed or aborted
	bw   *bufio.Writer
	h    hash.Hash // sha256
	crc  uint32    // CRC-32C, for the memo (memo.go)
	size int64
	err  error // first write error; sticky
}

// Create starts a new blob in a temporary file. The caller must call Commit
// or Abort, or the temporary file stays until the next Open. The result is
// a *Writer.
func (s *Store) Create(ctx context.Context) (BlobWriter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.tmp, "blob-*")
	if err != nil {
		return nil, fmt.Errorf("cas: create temporary file: %w", err)
	}
	return &Writer{s: s, f: f, bw: bufio.NewWriterSize(f, copyBufferSize), h: sha256.New()}, nil
}

// Write appends p to the blob. An error is sticky: Commit will return it.
func (w *Writer) Write(p []byte) (int, error) {
	if w.f == nil {
		return 0, ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.bw.Write(p)
	w.h.Write(p[:n])
	w.crc = crc32.Update(w.crc, castagnoli, p[:n])
	w.size += int64(n)
	if err != nil {
		w.err = fmt.Errorf("cas: write: %w", err)
		return n, w.err
	}
	return n, nil
}

// Commit finishes the blob and returns its digest and size. It fails with an
// error wrapping ErrMismatch, storing nothing, when wantSHA256 is not "" and
// differs from the content's sha256, or wantSize is not -1 and differs from
// its size (an invalid wantSHA256 fails with ErrInvalidDigest).
//
// Otherwise the file is fsynced, linked into place and its directory
// fsynced before Commit returns, so a committed blob survives a crash. If the
// blob already exists, the existing file is kept and Commit succeeds:
// committing is idempotent, and the existing file's modification time
// becomes now. After Commit, whether it failed or not, the
// Writer is finished and its temporary file gone.
//
// A blob that Commit placed is remembered as verified, with the CRC-32C of
// what was written, so reads of the unchanged file check that instead of
// sha256 (memo.go); an existing blob kept instead is not.
func (w *Writer) Commit(ctx context.Context, wantSHA256 string, wantSize int64) (sha string, size int64, err error) {
	if w.f == nil {
		return "", 0, ErrClosed
	}
	defer w.Abort() // removes the temporary file on every path
	if err := ctx.Err(); err != nil {
		return "", 0, err
	}
	if wantSHA256 != "" {
		if err := checkDigest(wantSHA256); err != nil {
			return "", 0, err
		}
	}
	if w.err != nil {
		return "", 0, w.err
	}
	if err := w.bw.Flush(); err != nil {
		return "", 0, fmt.Errorf("cas: write: %w", err)
	}
	sha = hex.EncodeToString(w.h.Sum(nil))
	if wantSize != -1 && w.size != wantSize {
		return "", 0, fmt.Errorf("%w: got %d bytes, want %d", ErrMismatch, w.size, wantSize)
	}
	if wantSHA256 != "" && sha != wantSHA256 {
		return "", 0, fmt.Errorf("%w: got sha256 %s, want %s", ErrMismatch, sha, wantSHA256)
	}
	if err := w.f.Sync(); err != nil {
		return "", 0, fmt.Errorf("cas: fsync: %w", err)
	}
	written, identified := identify(w.f)
	if err := w.f.Close(); err != nil {
		return "", 0, fmt.Errorf("cas: close: %w", err)
	}
	existed, err := w.s.place(w.f.Name(), sha)
	if err != nil {
		return "", 0, err
	}
	if existed {
		// The verified bytes are in our temporary file, not in the blob
		// kept, whose ctime our mtime refresh just moved (memo.go).
		w.s.memo.forget(sha)
		return sha, w.size, nil
	}
	w.rememberPlaced(sha, written, identified)
	return sha, w.size, nil
}

// rememberPlaced records the Writer's verification of blob sha, just placed,
// in the memo (see memo.go). written is the temporary file's identity after
// fsync; its device, inode, size and mtime are compared with the placed
// file's, not its ctime: the link and the removal of the temporary name
// below change that. The identity remembered is the
// placed file's after that removal, the Writer's last change to it.
func (w *Writer) rememberPlaced(sha string, written fileID, identified bool) {
	tmp := w.f.Name()
	if err := os.Remove(tmp); err != nil {
		return // Abort retries; the blob is placed, only not remembered
	}
	if !identified {
		return
	}
	fi, err := os.Stat(w.s.path(sha))
	if err != nil {
		return
	}
	placed, ok := statID(fi)
	if !ok || placed.dev != written.dev || placed.ino != written.ino || placed.size != w.size || placed.mtime != written.mtime {
		return // replaced or written meanwhile: not the file we verified
	}
	w.s.memo.rememberWritten(sha, placed, w.crc, w.s.memo.now())
}

// place links the finished temporary file tmp to the blob's path, unless the
// blob exists; existed reports that it did (and its mtime was refreshed). A
// link never replaces an existing file, so concurrent commits of the same
// content cannot clobber each other or a blob being read.
func (s *Store) place(tmp, sha string) (existed bool, err error) {
	shard := filepath.Join(s.dir, sha[:2])
	switch err := os.Mkdir(shard, 0o755); {
	case err == nil:
		// A new shard's own entry must be durable too.
		if err := syncDir(s.dir); err != nil {
			return false, err
		}
	case !errors.Is(err, os.ErrExist):
		return false, fmt.Errorf("cas: create shard: %w", err)
	}
	err = os.Link(tmp, s.path(sha))
	for range 2 {
		if !errors.Is(err, os.ErrExist) {
			break
		}
		// Already stored: keep the existing file, but mark it written now,
		// as a collector of unreferenced blobs spares recent files. If it
		// was deleted in between, link ours after all.
		now := time.Now()
		terr := os.Chtimes(s.path(sha), now, now)
		if terr == nil {
			return true, nil
		}
		if !errors.Is(terr, os.ErrNotExist) {
			return false, fmt.Errorf("cas: touch existing blob: %w", terr)
		}
		err = os.Link(tmp, s.path(sha))
	}
	if err != nil {
		return false, fmt.Errorf("cas: link blob: %w", err)
	}
	return false, syncDir(shard)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cas: fsync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("cas: fsync %s: %w", dir, err)
	}
	return nil
}

// Abort discards the blob and removes its temporary file. It is a no-op
// after Commit or a previous Abort, so `defer w.Abort()` is safe.
func (w *Writer) Abort() {
	if w.f == nil {
		return
	}
	w.f.Close() // may already be closed by Commit
	os.Remove(w.f.Name())
	w.f = nil
	w.bw = nil
}
