package s3blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"

	"github.com/kilnbuild/kiln/internal/cas"
)

// verifier hashes a download as it is read and decides at its end: io.EOF
// only for the whole blob, bytes hashing to its name; cas.ErrCorrupt
// otherwise.
type verifier struct {
	body   io.ReadCloser
	cancel context.CancelFunc
	sha    string
	want   int64
	h      hash.Hash
	n      int64
	err    error // sticky: io.EOF, corruption, or errClosed
}

func newVerifier(body io.ReadCloser, cancel context.CancelFunc, sha string, size int64) *verifier {
	return &verifier{body: body, cancel: cancel, sha: sha, want: size, h: sha256.New()}
}

func (r *verifier) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.body.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	if r.n > r.want {
		r.err = fmt.Errorf("%w: %s grew beyond %d bytes while read", cas.ErrCorrupt, r.sha, r.want)
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
		r.err = fmt.Errorf("%w: %s has %d bytes, want %d", cas.ErrCorrupt, r.sha, r.n, r.want)
		return
	}
	if got := hex.EncodeToString(r.h.Sum(nil)); got != r.sha {
		r.err = fmt.Errorf("%w: %s hashes to %s", cas.ErrCorrupt, r.sha, got)
		return
	}
	r.err = io.EOF
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
