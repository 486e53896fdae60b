// Package castest is the behaviour every cas.BlobStore implementation must
// show (the guarantees written on cas.BlobStore), written once and run
// against each: the directory (cas.Store) and S3 (s3blob).
//
//	func TestBlobStoreSuite(t *testing.T) {
//		castest.Run(t, func(t *testing.T) castest.Harness {
//			s, err := cas.Open(t.TempDir())
//			...
//			return castest.Harness{Store: s, Overwrite: ...}
//		})
//	}
//
// The suite decides with errors.Is on cas's errors only.
package castest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/cas"
)

// Harness is one fresh, empty store under test.
type Harness struct {
	Store cas.BlobStore
	// Overwrite replaces the stored bytes of blob sha behind the store's
	// back: the hostile disk, or someone with write access to the bucket.
	Overwrite func(t *testing.T, sha string, data []byte)
	// ModTimeGrain is the resolution of the modification times Walk
	// reports (a second for S3's LastModified); 0 means a millisecond.
	ModTimeGrain time.Duration
}

// OpenFunc returns a fresh, empty store; it fails t itself rather than
// returning an error, and registers the store's Close with t.Cleanup.
type OpenFunc func(t *testing.T) Harness

// Run runs the whole suite as subtests of t, each on a fresh store.
func Run(t *testing.T, open OpenFunc) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, open(t)) })
	}
}

type testCase struct {
	name string
	run  func(t *testing.T, h Harness)
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// put stores data and fails the test on error.
func put(t *testing.T, s cas.BlobStore, data []byte) string {
	t.Helper()
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	sha, size, err := w.Commit(t.Context(), digest(data), int64(len(data)))
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if sha != digest(data) || size != int64(len(data)) {
		t.Fatalf("Commit = %s, %d; want %s, %d", sha, size, digest(data), len(data))
	}
	return sha
}

// readAll reads blob sha through Open and returns the bytes and the
// reader's final error (nil for io.EOF).
func readAll(t *testing.T, s cas.BlobStore, sha string) ([]byte, int64, error) {
	t.Helper()
	r, size, err := s.Open(t.Context(), sha)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	return b, size, err
}

// walk returns the digests Walk reports, sorted, with their times.
func walk(t *testing.T, s cas.BlobStore) ([]string, map[string]time.Time) {
	t.Helper()
	var shas []string
	times := map[string]time.Time{}
	if err := s.Walk(t.Context(), func(sha string, mod time.Time) error {
		shas = append(shas, sha)
		times[sha] = mod
		return nil
	}); err != nil {
		t.Fatalf("Walk: %v", err)
	}
	slices.Sort(shas)
	return shas, times
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func wantWalk(t *testing.T, s cas.BlobStore, want ...string) {
	t.Helper()
	got, _ := walk(t, s)
	slices.Sort(want)
	if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Fatalf("Walk: got %v, want %v", got, want)
	}
}

// big is content larger than any single buffer on the way.
func big() []byte {
	b := bytes.Repeat([]byte("kiln blob store suite "), 300_000) // 6.6 MB
	b[len(b)/2] = '!'
	return b
}

var cases = []testCase{
	{"a committed blob reads back whole and verified", func(t *testing.T, h Harness) {
		for _, data := range [][]byte{{}, []byte("hello"), big()} {
			sha := put(t, h.Store, data)
			size, err := h.Store.Stat(t.Context(), sha)
			if err != nil || size != int64(len(data)) {
				t.Fatalf("Stat = %d, %v; want %d", size, err, len(data))
			}
			got, size, err := readAll(t, h.Store, sha)
			if err != nil {
				t.Fatalf("reading %d bytes: %v", len(data), err)
			}
			if size != int64(len(data)) || !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes (size %d), want the %d stored", len(got), size, len(data))
			}
		}
	}},
	{"a missing blob is ErrNotFound for Stat, Open and Delete", func(t *testing.T, h Harness) {
		sha := digest([]byte("never stored"))
		_, err := h.Store.Stat(t.Context(), sha)
		wantErr(t, "Stat", err, cas.ErrNotFound)
		_, _, err = h.Store.Open(t.Context(), sha)
		wantErr(t, "Open", err, cas.ErrNotFound)
		wantErr(t, "Delete", h.Store.Delete(t.Context(), sha), cas.ErrNotFound)
	}},
	{"a malformed digest is ErrInvalidDigest and touches nothing", func(t *testing.T, h Harness) {
		for _, bad := range []string{"", "../../etc/passwd", strings.Repeat("A", 64), strings.Repeat("a", 63), strings.Repeat("a", 64) + "/x"} {
			_, err := h.Store.Stat(t.Context(), bad)
			wantErr(t, "Stat("+bad+")", err, cas.ErrInvalidDigest)
			_, _, err = h.Store.Open(t.Context(), bad)
			wantErr(t, "Open("+bad+")", err, cas.ErrInvalidDigest)
			wantErr(t, "Delete("+bad+")", h.Store.Delete(t.Context(), bad), cas.ErrInvalidDigest)
		}
		w, err := h.Store.Create(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte("x"))
		_, _, err = w.Commit(t.Context(), "../x", -1)
		wantErr(t, "Commit to a malformed digest", err, cas.ErrInvalidDigest)
		wantWalk(t, h.Store)
	}},
	{"a commit with the wrong digest or size stores nothing", func(t *testing.T, h Harness) {
		data := []byte("the real content")
		for _, c := range []struct {
			sha  string
			size int64
		}{{digest([]byte("other content")), -1}, {"", int64(len(data)) + 1}, {digest(data), int64(len(data)) - 1}} {
			w, err := h.Store.Create(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(data); err != nil {
				t.Fatal(err)
			}
			_, _, err = w.Commit(t.Context(), c.sha, c.size)
			wantErr(t, "Commit", err, cas.ErrMismatch)
		}
		_, err := h.Store.Stat(t.Context(), digest(data))
		wantErr(t, "Stat after refused commits", err, cas.ErrNotFound)
		wantWalk(t, h.Store)
	}},
	{"a blob being written or aborted is never visible", func(t *testing.T, h Harness) {
		data := big()
		w, err := h.Store.Create(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data[:len(data)/2]); err != nil {
			t.Fatal(err)
		}
		_, err = h.Store.Stat(t.Context(), digest(data))
		wantErr(t, "Stat while written", err, cas.ErrNotFound)
		wantWalk(t, h.Store)
		w.Abort()
		w.Abort() // harmless
		if _, err := w.Write([]byte("more")); !errors.Is(err, cas.ErrClosed) {
			t.Fatalf("Write after Abort: %v, want ErrClosed", err)
		}
		if _, _, err := w.Commit(t.Context(), "", -1); !errors.Is(err, cas.ErrClosed) {
			t.Fatalf("Commit after Abort: %v, want ErrClosed", err)
		}
		wantWalk(t, h.Store)
	}},
	{"a stored blob changed behind the store's back fails the read with ErrCorrupt", func(t *testing.T, h Harness) {
		data := big()
		sha := put(t, h.Store, data)
		if _, _, err := readAll(t, h.Store, sha); err != nil { // a clean read first
			t.Fatal(err)
		}
		flipped := bytes.Clone(data)
		flipped[len(flipped)-1] ^= 1
		for what, bad := range map[string][]byte{"one flipped bit": flipped, "truncated": data[:len(data)-1], "grown": append(bytes.Clone(data), 'x'), "emptied": {}} {
			h.Overwrite(t, sha, bad)
			_, _, err := readAll(t, h.Store, sha)
			if !errors.Is(err, cas.ErrCorrupt) {
				t.Fatalf("reading a %s blob: %v, want ErrCorrupt", what, err)
			}
		}
	}},
	{"committing stored content again succeeds and refreshes its time", func(t *testing.T, h Harness) {
		data := []byte("twice")
		sha := put(t, h.Store, data)
		_, times := walk(t, h.Store)
		first := times[sha]
		grain := h.ModTimeGrain
		if grain == 0 {
			grain = time.Millisecond
		}
		// Poll until the store's clock can tell a later write apart.
		deadline := time.Now().Add(10 * grain)
		for time.Since(first) <= 2*grain && time.Now().Before(deadline) {
			time.Sleep(grain / 10) // a poll interval on the clock, not synchronization
		}
		put(t, h.Store, data)
		got, times := walk(t, h.Store)
		if len(got) != 1 {
			t.Fatalf("Walk after the second commit: %v, want one blob", got)
		}
		if !times[sha].After(first) {
			t.Fatalf("second commit left the time at %s (first %s)", times[sha], first)
		}
		if b, _, err := readAll(t, h.Store, sha); err != nil || !bytes.Equal(b, data) {
			t.Fatalf("read after the second commit: %q, %v", b, err)
		}
	}},
	{"concurrent commits of the same content all succeed and leave one blob", func(t *testing.T, h Harness) {
		data := big()
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w, err := h.Store.Create(t.Context())
				if err != nil {
					errs[i] = err
					return
				}
				defer w.Abort()
				if _, err := w.Write(data); err != nil {
					errs[i] = err
					return
				}
				_, _, errs[i] = w.Commit(t.Context(), digest(data), int64(len(data)))
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("writer %d: %v", i, err)
			}
		}
		wantWalk(t, h.Store, digest(data))
		if b, _, err := readAll(t, h.Store, digest(data)); err != nil || !bytes.Equal(b, data) {
			t.Fatalf("read: %d bytes, %v", len(b), err)
		}
	}},
	{"Delete removes one blob and Walk lists the others", func(t *testing.T, h Harness) {
		a, b, c := put(t, h.Store, []byte("a")), put(t, h.Store, []byte("b")), put(t, h.Store, []byte("c"))
		if err := h.Store.Delete(t.Context(), b); err != nil {
			t.Fatal(err)
		}
		_, err := h.Store.Stat(t.Context(), b)
		wantErr(t, "Stat after Delete", err, cas.ErrNotFound)
		wantWalk(t, h.Store, a, c)
		errStop := errors.New("stop")
		n := 0
		err = h.Store.Walk(t.Context(), func(string, time.Time) error { n++; return errStop })
		if !errors.Is(err, errStop) || n != 1 {
			t.Fatalf("Walk whose fn fails: %v after %d calls, want errStop after 1", err, n)
		}
	}},
	{"every method with a done context fails with its error and changes nothing", func(t *testing.T, h Harness) {
		sha := put(t, h.Store, []byte("kept"))
		w, err := h.Store.Create(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		if _, err := w.Write([]byte("pending")); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		calls := map[string]func() error{
			"Stat":   func() error { _, err := h.Store.Stat(ctx, sha); return err },
			"Open":   func() error { _, _, err := h.Store.Open(ctx, sha); return err },
			"Create": func() error { _, err := h.Store.Create(ctx); return err },
			"Delete": func() error { return h.Store.Delete(ctx, sha) },
			"Walk":   func() error { return h.Store.Walk(ctx, func(string, time.Time) error { return nil }) },
			"Commit": func() error { _, _, err := w.Commit(ctx, "", -1); return err },
		}
		for name, call := range calls {
			if err := call(); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a done context: %v, want context.Canceled", name, err)
			}
		}
		wantWalk(t, h.Store, sha)
	}},
}
