package cas

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// readHashed reads blob sha to the end and returns how many bytes the store
// hashed for it and the reader's final error (nil for a clean EOF).
func readHashed(t *testing.T, s *Store, sha string) (int64, error) {
	t.Helper()
	before := s.hashed.Load()
	r, _, err := s.Open(t.Context(), sha)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = io.Copy(io.Discard, r)
	return s.hashed.Load() - before, err
}

// storeWithClock opens a store whose clock reads skew ahead of real time, as
// if the verification happened that much after the blob was written.
func storeWithClock(t *testing.T, skew *time.Duration) *Store {
	t.Helper()
	s := openStore(t)
	s.memo.now = func() time.Time { return time.Now().Add(*skew) }
	return s
}

func putBlob(t *testing.T, s *Store, data []byte) string {
	t.Helper()
	sha, _, err := s.Put(t.Context(), bytes.NewReader(data), "", -1)
	if err != nil {
		t.Fatal(err)
	}
	return sha
}

func skipUnlessIdentified(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("file identities are read on Linux only; elsewhere every read hashes")
	}
}

// reopen opens s's directory again, as a restarted metaserver does: nothing
// is remembered. Its clock reads skew ahead of real time.
func reopen(t *testing.T, s *Store, skew *time.Duration) *Store {
	t.Helper()
	s2, err := Open(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	s2.memo.now = func() time.Time { return time.Now().Add(*skew) }
	return s2
}

func TestABlobVerifiedByAReadIsCheckedByItsCRCOnLaterReads(t *testing.T) {
	skipUnlessIdentified(t)
	skew := time.Minute
	data := bytes.Repeat([]byte("artifact "), 10000)
	written := openStore(t)
	sha := putBlob(t, written, data)
	s := reopen(t, written, &skew) // the Writer's verification is not known here
	if n, err := readHashed(t, s, sha); err != nil || n != int64(len(data)) {
		t.Fatalf("first read after a restart hashed %d bytes, %v; want all %d", n, err, len(data))
	}
	if n, err := readHashed(t, s, sha); err != nil || n != 0 {
		t.Fatalf("second read hashed %d bytes with sha256, %v; want none", n, err)
	}
	// Verify always hashes.
	before := s.hashed.Load()
	if err := s.Verify(t.Context(), sha); err != nil || s.hashed.Load()-before != int64(len(data)) {
		t.Fatalf("Verify = %v after hashing %d bytes", err, s.hashed.Load()-before)
	}
}

func TestABlobIsHashedAgainWhenChangedOrAfterTheInterval(t *testing.T) {
	skipUnlessIdentified(t)
	data := bytes.Repeat([]byte("artifact "), 10000)
	tests := []struct {
		name    string
		act     func(t *testing.T, s *Store, sha string, skew *time.Duration)
		corrupt bool
	}{
		{"a byte flipped in place", func(t *testing.T, s *Store, sha string, _ *time.Duration) {
			flipUntilChanged(t, s, sha)
		}, true},
		{"the reverify interval passed", func(t *testing.T, s *Store, sha string, skew *time.Duration) {
			*skew += DefaultReverifyAfter
		}, false},
		{"the file was replaced by a copy", func(t *testing.T, s *Store, sha string, _ *time.Duration) {
			path := filepath.Join(s.Dir(), sha[:2], sha)
			if err := os.WriteFile(path+".copy", data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path+".copy", path); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			skew := time.Minute
			s := storeWithClock(t, &skew)
			sha := putBlob(t, s, data)
			for range 2 { // hashed, then remembered
				if _, err := readHashed(t, s, sha); err != nil {
					t.Fatal(err)
				}
			}
			tt.act(t, s, sha, &skew)
			n, err := readHashed(t, s, sha)
			if n != int64(len(data)) {
				t.Errorf("read after the change hashed %d bytes, want %d", n, len(data))
			}
			if tt.corrupt != errors.Is(err, ErrCorrupt) {
				t.Errorf("read after the change: %v, want corrupt %v", err, tt.corrupt)
			}
		})
	}
}

// flipUntilChanged flips a byte of the blob's file in place, and again until
// its change time differs from before: a coarse file-system clock can stamp
// two writes within one tick alike, which the memo's racy margin covers in
// production but this test's skewed clock does not.
func flipUntilChanged(t *testing.T, s *Store, sha string) {
	t.Helper()
	path := filepath.Join(s.Dir(), sha[:2], sha)
	id0 := fileIDOf(t, path)
	for flips := 1; flips <= 10000; flips++ {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, 100); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x01
		if _, err := f.WriteAt(b, 100); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if flips%2 == 1 && fileIDOf(t, path) != id0 { // an odd number of flips: the content differs
			return
		}
	}
	t.Fatal("the file's change time never moved")
}

func fileIDOf(t *testing.T, path string) fileID {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	id, ok := statID(fi)
	if !ok {
		t.Fatal("no file identity")
	}
	return id
}

// rememberedID returns the identity the memo holds for sha.
func rememberedID(t *testing.T, s *Store, sha string) string {
	t.Helper()
	s.memo.mu.Lock()
	defer s.memo.mu.Unlock()
	v, ok := s.memo.m[sha]
	if !ok {
		t.Fatalf("%s is not remembered as verified", sha)
	}
	return v.id
}

// changeUntilNoticed applies change to path until the file's identity
// differs from id: a coarse file-system clock can stamp a change made within
// the tick of the stat that recorded id alike. change must leave the file in
// the same state however often it is applied.
func changeUntilNoticed(t *testing.T, path string, id string, change func(t *testing.T, path string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		change(t, path)
		if fileIDOf(t, path).key() != id {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the file's identity never changed")
		}
	}
}

func TestABlobJustWrittenIsReadWithItsCRCInsteadOfSHA256(t *testing.T) {
	skipUnlessIdentified(t)
	s := openStore(t) // real clock: the read follows the write at once
	data := bytes.Repeat([]byte("fresh artifact "), 20000)
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; { // uneven pieces
		n := min(len(rest), 7777)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	sha, _, err := w.Commit(t.Context(), digest(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if got := rememberedID(t, s, sha); got != fileIDOf(t, filepath.Join(s.Dir(), sha[:2], sha)).key() {
		t.Fatalf("remembered identity %+v is not the placed file's", got)
	}
	for i := range 2 {
		if n, err := readHashed(t, s, sha); err != nil || n != 0 {
			t.Fatalf("read %d hashed %d bytes with sha256, %v; want none (CRC-32C only)", i, n, err)
		}
	}
	if got, err := readAll(t, s, sha); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v; want the %d written", len(got), err, len(data))
	}
}

func TestABlobChangedAfterItsWriteIsHashedWithSHA256Again(t *testing.T) {
	skipUnlessIdentified(t)
	data := bytes.Repeat([]byte("artifact "), 10000)
	rewrite := func(content []byte) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	changed := bytes.Clone(data)
	changed[100] ^= 0x01
	tests := []struct {
		name    string
		change  func(t *testing.T, path string)
		corrupt bool
	}{
		{"rewritten with other bytes of the same size", rewrite(changed), true},
		{"rewritten with the same bytes", rewrite(data), false},
		{"touched", func(t *testing.T, path string) {
			now := time.Now()
			if err := os.Chtimes(path, now, now); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"chmodded and back", func(t *testing.T, path string) {
			for _, mode := range []os.FileMode{0o400, 0o600} {
				if err := os.Chmod(path, mode); err != nil {
					t.Fatal(err)
				}
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t) // real clock
			sha := putBlob(t, s, data)
			path := filepath.Join(s.Dir(), sha[:2], sha)
			changeUntilNoticed(t, path, rememberedID(t, s, sha), tt.change)
			n, err := readHashed(t, s, sha)
			if n != int64(len(data)) {
				t.Errorf("read after the change hashed %d bytes with sha256, want %d", n, len(data))
			}
			if tt.corrupt != errors.Is(err, ErrCorrupt) {
				t.Errorf("read after the change: %v, want corrupt %v", err, tt.corrupt)
			}
			// Changed just now, the file is not remembered by that read
			// (racy margin): the next read hashes again.
			n, err = readHashed(t, s, sha)
			if n != int64(len(data)) || tt.corrupt != errors.Is(err, ErrCorrupt) {
				t.Errorf("second read after the change hashed %d bytes with sha256, %v; want %d, corrupt %v", n, err, len(data), tt.corrupt)
			}
		})
	}
}

func TestCommittingAnExistingBlobDoesNotMarkItVerified(t *testing.T) {
	skipUnlessIdentified(t)
	s := openStore(t)
	data := bytes.Repeat([]byte("twice "), 10000)
	sha := putBlob(t, s, data)
	if _, err := readHashed(t, s, sha); err != nil {
		t.Fatal(err)
	}
	// The second commit verifies its own copy, then keeps the existing file
	// (which it never read) and refreshes its mtime.
	putBlob(t, s, data)
	if n, err := readHashed(t, s, sha); err != nil || n != int64(len(data)) {
		t.Fatalf("read after committing existing content hashed %d bytes with sha256, %v; want all %d", n, err, len(data))
	}
}

func TestZeroReverifyIntervalHashesEveryRead(t *testing.T) {
	skipUnlessIdentified(t)
	skew := time.Minute
	s := storeWithClock(t, &skew)
	s.SetReverifyAfter(0)
	data := bytes.Repeat([]byte("x"), 5000)
	sha := putBlob(t, s, data) // the Writer's verification is not remembered either
	for i := range 3 {
		if n, err := readHashed(t, s, sha); err != nil || n != int64(len(data)) {
			t.Fatalf("read %d hashed %d bytes, %v", i, n, err)
		}
	}
}

func TestATruncatedTrustedBlobIsStillCorrupt(t *testing.T) {
	skipUnlessIdentified(t)
	skew := time.Minute
	s := storeWithClock(t, &skew)
	data := bytes.Repeat([]byte("artifact "), 10000)
	sha := putBlob(t, s, data)
	for range 2 {
		if _, err := readHashed(t, s, sha); err != nil {
			t.Fatal(err)
		}
	}
	// Opened while trusted, then truncated under the open reader: the size
	// check still catches it.
	r, size, err := s.Open(t.Context(), sha)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := os.Truncate(filepath.Join(s.Dir(), sha[:2], sha), size/2); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, r); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading a blob truncated under a trusted reader: %v, want ErrCorrupt", err)
	}
	if _, err := readHashed(t, s, sha); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("next read: %v, want ErrCorrupt", err)
	}
}

// The disk can change a file without touching its metadata; the CRC-32C
// checked on a trusted read catches it. The test cannot flip a bit behind the
// file system's back, so it changes the remembered CRC instead, which is the
// same mismatch seen from the reader.
func TestATrustedBlobWhoseContentNoLongerMatchesItsCRCIsCorrupt(t *testing.T) {
	skipUnlessIdentified(t)
	skew := time.Minute
	s := storeWithClock(t, &skew)
	data := bytes.Repeat([]byte("artifact "), 10000)
	sha := putBlob(t, s, data)
	if _, err := readHashed(t, s, sha); err != nil {
		t.Fatal(err)
	}
	s.memo.mu.Lock()
	v, ok := s.memo.m[sha]
	if !ok {
		s.memo.mu.Unlock()
		t.Fatal("the verified blob was not remembered")
	}
	v.crc ^= 1
	s.memo.m[sha] = v
	s.memo.mu.Unlock()

	n, err := readHashed(t, s, sha)
	if !errors.Is(err, ErrCorrupt) || n != 0 {
		t.Fatalf("trusted read of mismatching content: %v after %d sha256 bytes, want ErrCorrupt without sha256", err, n)
	}
	// Found corrupt, it is forgotten: the next read hashes with sha256 (and,
	// the file being intact after all, succeeds).
	if n, err := readHashed(t, s, sha); err != nil || n != int64(len(data)) {
		t.Fatalf("read after the mismatch: %v after %d sha256 bytes, want a full sha256 pass", err, n)
	}
}
