//go:build kiln_cheat

package worker

import "io"

// tamper flips the lowest bit of the first byte of every file the
// artifact holds: the build server built with the kiln_cheat tag is the
// cheating volunteer of the trust tests (internal/e2e/trust_test.go). Its
// artifacts are valid tar.gz archives for the right machine; only their
// content differs from what the honest build servers produce. Never
// built into a release: farmtest.BinaryTags builds it for tests.
func tamper(r io.Reader) io.Reader { return &flipFirst{r: r} }

type flipFirst struct {
	r    io.Reader
	done bool
}

func (f *flipFirst) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 && !f.done {
		p[0] ^= 1
		f.done = true
	}
	return n, err
}
