package cas

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"time"
)

// Open opens blob sha for reading and returns it with its size. The reader
// verifies while reading: at end of file it returns an error wrapping
// ErrCorrupt, instead of io.EOF, if the content does not hash to sha or its
// length differs from the returned size. So the bytes read are trustworthy
// only once Read returned io.EOF. A missing blob is an error wrapping
// ErrNotFound. The caller must Close the reader.
//
// A blob file that was hashed completely and found intact, and has not
// changed since, is checked against the CRC-32C of that verified content
// instead of sha256 for [DefaultReverifyAfter] (see [Store.SetReverifyAfter]
// and the rules in memo.go); any mismatch is ErrCorrupt all the same.
func (s *Store) Open(ctx context.Context, sha string) (io.ReadCloser, int64, error) {
	r, size, err := s.open(ctx, sha, false)
	if err != nil {
		return nil, 0, err // not a nil *verifyingReader in an interface
	}
	return r, size, nil
}

// open is Open; with fullHash it hashes with sha256 whatever the memo says.
func (s *Store) open(ctx context.Context, sha string, fullHash bool) (*verifyingReader, int64, error) {
	if err := check(ctx, sha); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(s.path(sha))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, sha)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("cas: open %s: %w", sha, err)
	}
	began := s.memo.now()
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("cas: stat %s: %w", sha, err)
	}
	r := &verifyingReader{s: s, f: f, sha: sha, want: fi.Size(), began: began, crc: crc32.New(castagnoli)}
	r.id, r.identified = statID(fi)
	if r.identified && !fullHash {
		r.wantCRC, r.trusted = s.memo.trusted(sha, r.id)
	}
	if !r.trusted {
		r.h = sha256.New()
	}
	return r, fi.Size(), nil
}

// castagnoli is the CRC-32C table (hardware-accelerated on amd64 and arm64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// verifyingReader hashes a blob as it is read and checks it at EOF: with
// sha256, or for a trusted blob with CRC-32C against wantCRC.
type verifyingReader struct {
	s          *Store
	f          *os.File
	sha        string
	want       int64
	h          hash.Hash   // sha256; nil for a trusted blob
	crc        hash.Hash32 // CRC-32C, always
	trusted    bool
	wantCRC    uint32
	id         fileID // the file's identity when opened
	identified bool
	began      time.Time
	n          int64
	err        error // sticky final error (io.EOF or corruption)
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.f.Read(p)
	r.crc.Write(p[:n])
	if r.h != nil {
		r.h.Write(p[:n])
		r.s.hashed.Add(int64(n))
	}
	r.n += int64(n)
	if r.n > r.want {
		r.corrupt(fmt.Errorf("%w: %s grew beyond %d bytes while read", ErrCorrupt, r.sha, r.want))
		return n, r.err
	}
	if err == io.EOF {
		r.end()
		return n, r.err
	}
	if err != nil {
		return n, fmt.Errorf("cas: read %s: %w", r.sha, err)
	}
	return n, nil
}

// end decides the outcome at end of file.
func (r *verifyingReader) end() {
	if r.n != r.want {
		r.corrupt(fmt.Errorf("%w: %s has %d bytes, want %d", ErrCorrupt, r.sha, r.n, r.want))
		return
	}
	if r.trusted {
		if got := r.crc.Sum32(); got != r.wantCRC {
			r.corrupt(fmt.Errorf("%w: %s has CRC-32C %08x, %08x when last verified", ErrCorrupt, r.sha, got, r.wantCRC))
			return
		}
		r.err = io.EOF
		return
	}
	r.err = io.EOF
	if got := hex.EncodeToString(r.h.Sum(nil)); got != r.sha {
		r.corrupt(fmt.Errorf("%w: %s hashes to %s", ErrCorrupt, r.sha, got))
		return
	}
	// Remember the verification only if the file stayed the same throughout.
	if now, ok := identify(r.f); ok && r.identified && now == r.id {
		r.s.memo.remember(r.sha, r.id, r.crc.Sum32(), r.began)
	}
}

func (r *verifyingReader) corrupt(err error) {
	r.err = err
	r.s.memo.forget(r.sha)
}

func (r *verifyingReader) Close() error { return r.f.Close() }
