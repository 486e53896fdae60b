package cas

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Errors of the store; test with errors.Is.
var (
	// ErrNotFound is returned for a blob that is not in the store.
	ErrNotFound = errors.New("cas: blob not found")
	// ErrCorrupt is returned when a stored blob does not hash to its name or
	// has the wrong size. The blob should be deleted and uploaded again.
	ErrCorrupt = errors.New("cas: stored blob is corrupt")
	// ErrMismatch is returned by Commit and Put when the written content does
	// not match the expected digest or size. Nothing is stored.
	ErrMismatch = errors.New("cas: content does not match the expected digest or size")
	// ErrInvalidDigest is returned for a digest that is not 64 lowercase
	// hexadecimal characters. The file system is not touched.
	ErrInvalidDigest = errors.New("cas: invalid sha256 digest")
	// ErrClosed is returned when a Writer is used after Commit or Abort.
	ErrClosed = errors.New("cas: writer already committed or aborted")
)

// ValidDigest reports whether s is a sha256 digest in the store's spelling:
// 64 lowercase hexadecimal characters.
func ValidDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Store is a directory of blobs named by sha256. Safe for concurrent use.
type Store struct {
	dir  string
	tmp  string
	memo *Memo
	// hashed counts the bytes hashed on read, for tests.
	hashed atomic.Int64
}

// tmpDirName is the subdirectory of blobs being written.
const tmpDirName = "tmp"

// Open opens the store in dir, creating dir and dir/tmp if needed, and
// removes temporary files left by a crashed writer. Only one process may use
// a directory at a time.
func Open(dir string) (*Store, error) {
	s := &Store{dir: dir, tmp: filepath.Join(dir, tmpDirName), memo: NewMemo()}
	if err := os.MkdirAll(s.tmp, 0o755); err != nil {
		return nil, fmt.Errorf("cas: open %s: %w", dir, err)
	}
	stale, err := os.ReadDir(s.tmp)
	if err != nil {
		return nil, fmt.Errorf("cas: open %s: %w", dir, err)
	}
	for _, e := range stale {
		if err := os.RemoveAll(filepath.Join(s.tmp, e.Name())); err != nil {
			return nil, fmt.Errorf("cas: remove stale temporary file: %w", err)
		}
	}
	// Verifications remembered by the previous process (see SaveMemo); a
	// file that cannot be read or is damaged only means hashing again.
	_ = s.memo.Load(filepath.Join(dir, memoFileName))
	return s, nil
}

// Close saves the remembered verifications for the next Open (SaveMemo).
// The Store must not be used afterwards.
func (s *Store) Close() error { return s.SaveMemo() }

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// path returns the file of a digest, which must be valid.
func (s *Store) path(sha string) string {
	return filepath.Join(s.dir, sha[:2], sha)
}

func checkDigest(sha string) error {
	if !ValidDigest(sha) {
		return fmt.Errorf("%w: %q", ErrInvalidDigest, truncate(sha))
	}
	return nil
}

// check is checkDigest after ctx: a done context fails first, as
// BlobStore promises.
func check(ctx context.Context, sha string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return checkDigest(sha)
}

// truncate keeps error messages short when a client sends garbage.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Stat returns the size of blob sha, or an error wrapping ErrNotFound. It
// does not verify the content.
func (s *Store) Stat(ctx context.Context, sha string) (int64, error) {
	if err := check(ctx, sha); err != nil {
		return 0, err
	}
	fi, err := os.Stat(s.path(sha))
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("%w: %s", ErrNotFound, sha)
	}
	if err != nil {
		return 0, fmt.Errorf("cas: stat %s: %w", sha, err)
	}
	return fi.Size(), nil
}

// Delete removes blob sha; it returns an error wrapping ErrNotFound if there
// is none. A reader that already opened the blob can finish reading it.
func (s *Store) Delete(ctx context.Context, sha string) error {
	if err := check(ctx, sha); err != nil {
		return err
	}
	s.memo.forget(sha)
	err := os.Remove(s.path(sha))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, sha)
	}
	if err != nil {
		return fmt.Errorf("cas: delete %s: %w", sha, err)
	}
	return nil
}

// Verify reads blob sha completely and returns nil if it hashes to sha,
// an error wrapping ErrCorrupt if not, or one wrapping ErrNotFound. It
// always hashes, whatever an earlier verification found.
func (s *Store) Verify(ctx context.Context, sha string) error {
	r, _, err := s.open(ctx, sha, true)
	if err != nil {
		return err
	}
	defer r.Close()
	buf := make([]byte, copyBufferSize)
	_, err = io.CopyBuffer(discard{}, r, buf)
	return err
}

// discard is io.Discard without its ReadFrom, which would read through an
// 8 KiB buffer of its own instead of the caller's: a read syscall per 8 KiB
// costs more than hashing them with CRC-32C.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// copyBufferSize is the buffer of Put and Verify, and the Writer's.
const copyBufferSize = 256 << 10

// Put stores the content of r, checked against wantSHA256 and wantSize as by
// Writer.Commit ("" and -1 skip the checks), and returns its digest and size.
// On any error nothing is stored.
func (s *Store) Put(ctx context.Context, r io.Reader, wantSHA256 string, wantSize int64) (string, int64, error) {
	w, err := s.Create(ctx)
	if err != nil {
		return "", 0, err
	}
	buf := make([]byte, copyBufferSize)
	if _, err := io.CopyBuffer(w, r, buf); err != nil {
		w.Abort()
		return "", 0, fmt.Errorf("cas: put: %w", err)
	}
	return w.Commit(ctx, wantSHA256, wantSize)
}

// Walk calls fn with the digest and modification time of every stored blob,
// in no particular order, until fn returns an error (which Walk returns).
// Blobs added or removed meanwhile may or may not be seen. Walk stops with
// ctx.Err() between shards once ctx is done.
func (s *Store) Walk(ctx context.Context, fn func(sha string, modTime time.Time) error) error {
	shards, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("cas: walk: %w", err)
	}
	for _, shard := range shards {
		if !shard.IsDir() || len(shard.Name()) != 2 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		entries, err := os.ReadDir(filepath.Join(s.dir, shard.Name()))
		if err != nil {
			return fmt.Errorf("cas: walk: %w", err)
		}
		for _, e := range entries {
			if !ValidDigest(e.Name()) || e.Name()[:2] != shard.Name() {
				continue
			}
			info, err := e.Info()
			if errors.Is(err, os.ErrNotExist) {
				continue // deleted meanwhile
			}
			if err != nil {
				return fmt.Errorf("cas: walk: %w", err)
			}
			if err := fn(e.Name(), info.ModTime()); err != nil {
				return err
			}
		}
	}
	return nil
}
