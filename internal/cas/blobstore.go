package cas

import (
	"context"
	"io"
	"time"
)

// BlobStore is what the metaserver uses of a blob store: blobs named by
// their lowercase hex sha256 (see [ValidDigest]). [*Store], a local
// directory, implements it, and so does package s3blob on an S3-compatible
// object store, with the same errors and the same guarantees (package
// castest is the suite both pass):
//
//   - Verified reads. Open's reader returns io.EOF only when what it read
//     hashes to the blob's name and has the size Open returned, or when an
//     earlier full verification of the unchanged object is remembered and
//     still vouches for it; otherwise it ends with an error wrapping
//     ErrCorrupt. A consumer trusts the bytes only after io.EOF.
//   - No partial objects. A blob is absent until a BlobWriter's Commit
//     returned nil, and complete from then on; Stat, Open and Walk never see
//     one being written, and Commit never replaces an existing blob with
//     other bytes. A committed blob survives a crash of the process.
//   - Deletion only by Delete. The store never drops a blob on its own; the
//     collector that calls Delete (package server) decides what is still
//     named. Committing content that already exists refreshes the modTime
//     Walk reports, so a collector that spares recent blobs spares it.
//
// Every method takes a context: a call whose ctx is already done fails
// with ctx.Err() before touching the store, and a remote implementation
// bounds its requests by it. Errors wrap ErrNotFound, ErrInvalidDigest,
// ErrMismatch, ErrCorrupt and ErrClosed as documented on each; test them
// with errors.Is. An implementation is safe for concurrent use.
type BlobStore interface {
	// Stat returns the size of blob sha, or an error wrapping ErrNotFound.
	// It does not verify the content.
	Stat(ctx context.Context, sha string) (int64, error)
	// Open returns a verifying reader of blob sha and its size, or an
	// error wrapping ErrNotFound. The caller must Close the reader; ctx
	// bounds opening, not the reads that follow.
	Open(ctx context.Context, sha string) (io.ReadCloser, int64, error)
	// Create starts a blob whose name is known only once written: the
	// caller must Commit or Abort the BlobWriter.
	Create(ctx context.Context) (BlobWriter, error)
	// Delete removes blob sha, or returns an error wrapping ErrNotFound. A
	// reader that already opened it may finish reading it.
	Delete(ctx context.Context, sha string) error
	// Walk calls fn with the digest and last write time of every blob, in
	// no particular order, until fn returns an error (which Walk returns).
	// Blobs added or removed meanwhile may or may not be seen.
	Walk(ctx context.Context, fn func(sha string, modTime time.Time) error) error
	// Close releases the store; the directory saves its remembered
	// verifications for the next process (see [Store.SaveMemo]). No other
	// method may be called after it.
	Close() error
}

// BlobWriter writes one blob: Write any number of times, then Commit or
// Abort. It is not safe for concurrent use.
type BlobWriter interface {
	// Write appends p to the blob. An error is sticky: Commit returns it.
	io.Writer
	// Commit finishes the blob and returns its digest and size, failing
	// with an error wrapping ErrMismatch, and storing nothing, when
	// wantSHA256 is not "" and differs from the content's sha256 or
	// wantSize is not -1 and differs from its size. After Commit, whether
	// it failed or not, the writer is finished.
	Commit(ctx context.Context, wantSHA256 string, wantSize int64) (sha string, size int64, err error)
	// Abort discards the blob. It is a no-op after Commit or Abort, so
	// `defer w.Abort()` is safe.
	Abort()
}

var (
	_ BlobStore  = (*Store)(nil)
	_ BlobWriter = (*Writer)(nil)
)
