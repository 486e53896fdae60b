package s3blob

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/crc32"
	"os"

	"github.com/minio/minio-go/v7"

	"github.com/kilnbuild/kiln/internal/cas"
)

// spoolBuffer is the writer's buffer in front of its spool file.
const spoolBuffer = 256 << 10

// writer spools one blob to a temporary file, hashing it, and uploads it
// whole at Commit.
type writer struct {
	s    *Store
	f    *os.File // nil once committed or aborted
	bw   *bufio.Writer
	h    hash.Hash
	crc  hash.Hash32 // CRC-32C, for the memo
	size int64
	err  error // sticky
}

// Create starts a blob in a temporary file of the spool directory. The
// caller must Commit or Abort it.
func (s *Store) Create(ctx context.Context) (cas.BlobWriter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.spool, "kiln-s3blob-*")
	if err != nil {
		return nil, fmt.Errorf("s3blob: spool file: %w", err)
	}
	return &writer{s: s, f: f, bw: bufio.NewWriterSize(f, spoolBuffer), h: sha256.New(), crc: crc32.New(castagnoli)}, nil
}

// Write appends p to the blob; an error is sticky.
func (w *writer) Write(p []byte) (int, error) {
	if w.f == nil {
		return 0, cas.ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.bw.Write(p)
	w.h.Write(p[:n])
	w.crc.Write(p[:n])
	w.size += int64(n)
	if err != nil {
		w.err = fmt.Errorf("s3blob: spool: %w", err)
		return n, w.err
	}
	return n, nil
}

// Commit checks the content against wantSHA256 ("" skips) and wantSize (-1
// skips), failing with cas.ErrMismatch and uploading nothing on a
// difference, then uploads it as one object, visible whole or not at all.
// The writer is finished afterwards, whatever the outcome.
func (w *writer) Commit(ctx context.Context, wantSHA256 string, wantSize int64) (string, int64, error) {
	if w.f == nil {
		return "", 0, cas.ErrClosed
	}
	defer w.Abort()
	if err := ctx.Err(); err != nil {
		return "", 0, err
	}
	if wantSHA256 != "" && !cas.ValidDigest(wantSHA256) {
		return "", 0, fmt.Errorf("%w: %q", cas.ErrInvalidDigest, wantSHA256)
	}
	if w.err != nil {
		return "", 0, w.err
	}
	if err := w.bw.Flush(); err != nil {
		return "", 0, fmt.Errorf("s3blob: spool: %w", err)
	}
	sha := hex.EncodeToString(w.h.Sum(nil))
	if wantSize != -1 && w.size != wantSize {
		return "", 0, fmt.Errorf("%w: got %d bytes, want %d", cas.ErrMismatch, w.size, wantSize)
	}
	if wantSHA256 != "" && sha != wantSHA256 {
		return "", 0, fmt.Errorf("%w: got sha256 %s, want %s", cas.ErrMismatch, sha, wantSHA256)
	}
	if _, err := w.f.Seek(0, 0); err != nil {
		return "", 0, fmt.Errorf("s3blob: spool: %w", err)
	}
	up, err := w.s.c.PutObject(ctx, w.s.bucket, w.s.key(sha), w.f, w.size, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
	})
	if err != nil {
		return "", 0, fmt.Errorf("s3blob: upload %s: %w", sha, err)
	}
	w.rememberUploaded(ctx, sha, up)
	return sha, w.size, nil
}

// rememberUploaded records the writer's verification of blob sha, just
// uploaded as up, in the memo with the object's identity read back by a
// HEAD, if that HEAD shows the object this upload made: the ETag the store
// answered the upload with, the size, and the CRC64NVME the store computed
// of the bytes received (when it reports one). Otherwise nothing is
// remembered (someone else wrote it meanwhile, or the HEAD failed): the
// next read hashes with sha256.
func (w *writer) rememberUploaded(ctx context.Context, sha string, up minio.UploadInfo) {
	m := w.s.memo
	at := m.Now()
	info, err := w.s.c.StatObject(ctx, w.s.bucket, w.s.key(sha), minio.StatObjectOptions{Checksum: true})
	if err != nil || up.ETag == "" || info.ETag != up.ETag || info.Size != w.size ||
		(up.ChecksumCRC64NVME != "" && info.ChecksumCRC64NVME != up.ChecksumCRC64NVME) {
		m.Forget(sha)
		return
	}
	m.Remember(sha, w.s.identity(info), w.crc.Sum32(), at)
}

// Abort discards the blob; a no-op after Commit or Abort.
func (w *writer) Abort() {
	if w.f == nil {
		return
	}
	w.f.Close()
	os.Remove(w.f.Name())
	w.f = nil
	w.bw = nil
}
