package cas

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
)

// Open opens blob sha for reading and returns it with its size. The reader
// verifies while reading: at end of file it returns an error wrapping
// ErrCorrupt, instead of io.EOF, if the content does not hash to sha or its
// length differs from the returned size. So the bytes read are trustworthy
// only once Read returned io.EOF. A missing blob is an error wrapping
// ErrNotFound. The caller must Close the reader.
func (s *Store) Open(sha string) (io.ReadCloser, int64, error) {
	if err := checkDigest(sha); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(s.path(sha))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, sha)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("cas: open %s: %w", sha, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("cas: stat %s: %w", sha, err)
	}
	return &verifyingReader{f: f, sha: sha, want: fi.Size(), h: sha256.New()}, fi.Size(), nil
}

// verifyingReader hashes a blob as it is read and checks it at EOF.
type verifyingReader struct {
	f    *os.File
	sha  string
	want int64
	h    hash.Hash
	n    int64
	err  error // sticky final error (io.EOF or corruption)
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.f.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	if r.n > r.want {
		r.err = fmt.Errorf("%w: %s grew beyond %d bytes while read", ErrCorrupt, r.sha, r.want)
		return n, r.err
	}
	if err == io.EOF {
		switch got := hex.EncodeToString(r.h.Sum(nil)); {
		case r.n != r.want:
			r.err = fmt.Errorf("%w: %s has %d bytes, want %d", ErrCorrupt, r.sha, r.n, r.want)
		case got != r.sha:
			r.err = fmt.Errorf("%w: %s hashes to %s", ErrCorrupt, r.sha, got)
		default:
			r.err = io.EOF
		}
		return n, r.err
	}
	if err != nil {
		return n, fmt.Errorf("cas: read %s: %w", r.sha, err)
	}
	return n, nil
}

func (r *verifyingReader) Close() error { return r.f.Close() }
