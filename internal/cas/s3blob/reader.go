package s3blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"time"

	"github.com/kilnbuild/kiln/internal/cas"
)

// castagnoli is the CRC-32C table (hardware-accelerated on amd64, arm64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// verifier checks a download as it is read and decides at its end: io.EOF
// only for the whole blob, bytes hashing to its name (sha256) or, for an
// object whose verification is remembered, having the verified content's
// CRC-32C; cas.ErrCorrupt otherwise, and the blob is then forgotten. It
// mirrors the directory store's reader (package cas, reader.go).
type verifier struct {
	s       *Store
	body    io.ReadCloser
	cancel  context.CancelFunc
	sha     string
	want    int64
	h       hash.Hash   // sha256; nil for a trusted object
	crc     hash.Hash32 // CRC-32C, always
	trusted bool
	wantCRC uint32
	id      string    // the object's identity when opened
	began   time.Time // when the verification began
	n       int64
	err     error // sticky: io.EOF, corruption, or errClosed
}

func newVerifier(s *Store, body io.ReadCloser, cancel context.CancelFunc, sha string, size int64) *verifier {
	return &verifier{s: s, body: body, cancel: cancel, sha: sha, want: size, h: sha256.New(), crc: crc32.New(castagnoli)}
}

func (r *verifier) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.body.Read(p)
	r.crc.Write(p[:n])
	if r.h != nil {
		r.h.Write(p[:n])
		r.s.hashed.Add(int64(n))
	}
	r.n += int64(n)
	if r.n > r.want {
		r.corrupt(fmt.Errorf("%w: %s grew beyond %d bytes while read", cas.ErrCorrupt, r.sha, r.want))
		return n, r.err
	}
	if err == io.EOF {
		r.end()
		return n, r.err
	}
	if err != nil {
		return n, fmt.Errorf("s3blob: read %s: %w", r.sha, err)
	}
	return n, nil
}

// end decides the outcome at the end of the download.
func (r *verifier) end() {
	if r.n != r.want {
		r.corrupt(fmt.Errorf("%w: %s has %d bytes, want %d", cas.ErrCorrupt, r.sha, r.n, r.want))
		return
	}
	if r.trusted {
		if got := r.crc.Sum32(); got != r.wantCRC {
			r.corrupt(fmt.Errorf("%w: %s has CRC-32C %08x, %08x when last verified", cas.ErrCorrupt, r.sha, got, r.wantCRC))
			return
		}
		r.err = io.EOF
		return
	}
	if got := hex.EncodeToString(r.h.Sum(nil)); got != r.sha {
		r.corrupt(fmt.Errorf("%w: %s hashes to %s", cas.ErrCorrupt, r.sha, got))
		return
	}
	r.err = io.EOF
	// The GET was conditional on the ETag of the HEAD that gave id: these
	// bytes are that object's.
	r.s.memo.Remember(r.sha, r.id, r.crc.Sum32(), r.began)
}

func (r *verifier) corrupt(err error) {
	r.err = err
	r.s.memo.Forget(r.sha)
}

// Close ends the download.
func (r *verifier) Close() error {
	if r.err == nil {
		r.err = errClosed
	}
	err := r.body.Close()
	r.cancel()
	return err
}
