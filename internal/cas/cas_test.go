package cas

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func openStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "cas"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tmpEntries lists the store's temporary files.
func tmpEntries(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Dir(), tmpDirName))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func readAll(t *testing.T, s *Store, sha string) ([]byte, error) {
	t.Helper()
	r, _, err := s.Open(t.Context(), sha)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func TestPutThenOpenReturnsTheSameBytes(t *testing.T) {
	s := openStore(t)
	tests := []struct {
		name string
		data []byte
	}{
		{"an empty blob", nil},
		{"a short blob", []byte("hello, kiln")},
		{"a blob larger than the write buffer", bytes.Repeat([]byte("0123456789abcdef"), 100000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sha, size, err := s.Put(t.Context(), bytes.NewReader(tt.data), digest(tt.data), int64(len(tt.data)))
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if sha != digest(tt.data) || size != int64(len(tt.data)) {
				t.Errorf("Put = %s, %d; want %s, %d", sha, size, digest(tt.data), len(tt.data))
			}
			if got, err := s.Stat(t.Context(), sha); err != nil || got != size {
				t.Errorf("Stat = %d, %v; want %d", got, err, size)
			}
			got, err := readAll(t, s, sha)
			if err != nil || !bytes.Equal(got, tt.data) {
				t.Errorf("read back %d bytes, %v; want the %d bytes put", len(got), err, len(tt.data))
			}
			if err := s.Verify(t.Context(), sha); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if _, err := os.Stat(filepath.Join(s.Dir(), sha[:2], sha)); err != nil {
				t.Errorf("blob not in its shard: %v", err)
			}
		})
	}
	if left := tmpEntries(t, s); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestWriterStreamsInPiecesAndSkipsChecksOnRequest(t *testing.T) {
	s := openStore(t)
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for i := range 100 {
		piece := []byte(strings.Repeat(fmt.Sprint(i), 1000+i))
		all = append(all, piece...)
		if _, err := w.Write(piece); err != nil {
			t.Fatal(err)
		}
	}
	sha, size, err := w.Commit(t.Context(), "", -1)
	if err != nil || sha != digest(all) || size != int64(len(all)) {
		t.Fatalf("Commit = %s, %d, %v; want %s, %d", sha, size, err, digest(all), len(all))
	}
	if _, err := w.Write([]byte("more")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Commit = %v, want ErrClosed", err)
	}
	if _, _, err := w.Commit(t.Context(), "", -1); !errors.Is(err, ErrClosed) {
		t.Errorf("second Commit = %v, want ErrClosed", err)
	}
	w.Abort() // no-op after Commit
	if _, err := s.Stat(t.Context(), sha); err != nil {
		t.Errorf("Abort after Commit removed the blob: %v", err)
	}
}

func TestMismatchedContentIsRejectedAndNothingStored(t *testing.T) {
	data := []byte("the real content")
	other := digest([]byte("something else"))
	tests := []struct {
		name     string
		wantSHA  string
		wantSize int64
		wantErr  error
	}{
		{"a wrong digest", other, int64(len(data)), ErrMismatch},
		{"a wrong size", digest(data), int64(len(data)) + 1, ErrMismatch},
		{"a wrong size with the digest check skipped", "", 3, ErrMismatch},
		{"a malformed expected digest", "ABC", -1, ErrInvalidDigest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			_, _, err := s.Put(t.Context(), bytes.NewReader(data), tt.wantSHA, tt.wantSize)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Put error = %v, want %v", err, tt.wantErr)
			}
			for _, sha := range []string{digest(data), other} {
				if _, err := s.Stat(t.Context(), sha); !errors.Is(err, ErrNotFound) {
					t.Errorf("Stat(%s) = %v, want ErrNotFound", sha[:8], err)
				}
			}
			if left := tmpEntries(t, s); len(left) != 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
}

func TestCommittingAnExistingBlobSucceedsAndKeepsTheFile(t *testing.T) {
	s := openStore(t)
	data := []byte("same content twice")
	sha, _, err := s.Put(t.Context(), bytes.NewReader(data), "", -1)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.Dir(), sha[:2], sha)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	sha2, size2, err := s.Put(t.Context(), bytes.NewReader(data), sha, int64(len(data)))
	if err != nil || sha2 != sha || size2 != int64(len(data)) {
		t.Fatalf("second Put = %s, %d, %v", sha2, size2, err)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if before.Sys().(*syscall.Stat_t).Ino != after.Sys().(*syscall.Stat_t).Ino {
		t.Error("the existing blob file was replaced")
	}
	if left := tmpEntries(t, s); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestConcurrentWritersOfTheSameContentAllSucceed(t *testing.T) {
	s := openStore(t)
	data := bytes.Repeat([]byte("concurrent"), 50000)
	want := digest(data)
	const writers = 16
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			sha, _, err := s.Put(t.Context(), bytes.NewReader(data), want, int64(len(data)))
			if err == nil && sha != want {
				err = fmt.Errorf("digest %s", sha)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Put: %v", err)
		}
	}
	if err := s.Verify(t.Context(), want); err != nil {
		t.Errorf("Verify: %v", err)
	}
	shard, err := os.ReadDir(filepath.Join(s.Dir(), want[:2]))
	if err != nil || len(shard) != 1 {
		t.Errorf("shard holds %d files (%v), want 1", len(shard), err)
	}
	if left := tmpEntries(t, s); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// damage rewrites blob sha's file on disk.
func damage(t *testing.T, s *Store, sha string, change func([]byte) []byte) {
	t.Helper()
	path := filepath.Join(s.Dir(), sha[:2], sha)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, change(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptionIsDetectedAtEndOfFile(t *testing.T) {
	tests := []struct {
		name   string
		change func([]byte) []byte
	}{
		{"a flipped byte", func(b []byte) []byte { b[len(b)/2] ^= 0x01; return b }},
		{"a truncated file", func(b []byte) []byte { return b[:len(b)-1] }},
		{"an extended file", func(b []byte) []byte { return append(b, 'x') }},
	}
	data := bytes.Repeat([]byte("precious build output "), 30000)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			sha, _, err := s.Put(t.Context(), bytes.NewReader(data), "", -1)
			if err != nil {
				t.Fatal(err)
			}
			damage(t, s, sha, tt.change)

			r, _, err := s.Open(t.Context(), sha)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			n, err := io.Copy(io.Discard, r)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("reading to the end: %d bytes, error %v; want ErrCorrupt", n, err)
			}
			if _, err := r.Read(make([]byte, 10)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Read after the corruption was reported = %v, want ErrCorrupt again", err)
			}
			if err := s.Verify(t.Context(), sha); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Verify = %v, want ErrCorrupt", err)
			}
			// Delete and upload again repairs it.
			if err := s.Delete(t.Context(), sha); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Put(t.Context(), bytes.NewReader(data), sha, int64(len(data))); err != nil {
				t.Fatal(err)
			}
			if err := s.Verify(t.Context(), sha); err != nil {
				t.Errorf("Verify after repair = %v", err)
			}
		})
	}
}

func TestInvalidDigestsNeverTouchTheFileSystem(t *testing.T) {
	s := openStore(t)
	// A file a path-traversing digest would reach if it were used.
	victim := filepath.Join(s.Dir(), "victim")
	if err := os.WriteFile(victim, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	valid := digest([]byte("x"))
	tests := []struct {
		name   string
		digest string
	}{
		{"an empty digest", ""},
		{"uppercase hex", strings.ToUpper(valid)},
		{"one character short", valid[:63]},
		{"one character long", valid + "0"},
		{"a non-hex character", valid[:63] + "g"},
		{"a path traversal", "../victim"},
		{"a path traversal of digest length", "../" + strings.Repeat("a", 61)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ValidDigest(tt.digest) {
				t.Fatalf("ValidDigest(%q) = true", tt.digest)
			}
			if _, _, err := s.Open(t.Context(), tt.digest); !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("Open = %v", err)
			}
			if _, err := s.Stat(t.Context(), tt.digest); !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("Stat = %v", err)
			}
			if err := s.Verify(t.Context(), tt.digest); !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("Verify = %v", err)
			}
			if err := s.Delete(t.Context(), tt.digest); !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("Delete = %v", err)
			}
		})
	}
	if _, err := os.Stat(victim); err != nil {
		t.Errorf("victim file touched: %v", err)
	}
	if !ValidDigest(valid) {
		t.Errorf("ValidDigest(%q) = false", valid)
	}
}

func TestMissingBlobsAreNotFound(t *testing.T) {
	s := openStore(t)
	sha := digest([]byte("never stored"))
	if _, _, err := s.Open(t.Context(), sha); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open = %v", err)
	}
	if _, err := s.Stat(t.Context(), sha); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat = %v", err)
	}
	if err := s.Verify(t.Context(), sha); !errors.Is(err, ErrNotFound) {
		t.Errorf("Verify = %v", err)
	}
	if err := s.Delete(t.Context(), sha); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete = %v", err)
	}
}

func TestAbortRemovesTheTemporaryFile(t *testing.T) {
	s := openStore(t)
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("half a blob")); err != nil {
		t.Fatal(err)
	}
	if len(tmpEntries(t, s)) != 1 {
		t.Fatal("no temporary file while writing")
	}
	w.Abort()
	w.Abort()
	if left := tmpEntries(t, s); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if _, _, err := w.Commit(t.Context(), "", -1); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Abort = %v, want ErrClosed", err)
	}
}

func TestOpenRemovesCrashLeftovers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cas")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	kept, _, err := s.Put(t.Context(), strings.NewReader("committed"), "", -1)
	if err != nil {
		t.Fatal(err)
	}
	// A writer that never finished, as after a crash.
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, tmpDirName, "odd-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if left := tmpEntries(t, s2); len(left) != 0 {
		t.Errorf("leftovers after Open: %v", left)
	}
	if err := s2.Verify(t.Context(), kept); err != nil {
		t.Errorf("committed blob after reopen: %v", err)
	}
}

func TestReaderFailsOnBrokenSource(t *testing.T) {
	s := openStore(t)
	boom := errors.New("upload stream broke")
	_, _, err := s.Put(t.Context(), io.MultiReader(strings.NewReader("part"), errReader{boom}), "", -1)
	if !errors.Is(err, boom) {
		t.Errorf("Put = %v, want the source's error", err)
	}
	if left := tmpEntries(t, s); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// zeroReader yields n zero bytes in the caller's buffer, allocating nothing.
type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > z.n {
		p = p[:z.n]
	}
	clear(p)
	z.n -= int64(len(p))
	return len(p), nil
}

func TestMemoryDoesNotGrowWithBlobSize(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 128 MiB")
	}
	s := openStore(t)
	const size = 128 << 20
	allocated := func(f func()) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	var sha string
	putAlloc := allocated(func() {
		var err error
		if sha, _, err = s.Put(t.Context(), &zeroReader{n: size}, "", size); err != nil {
			t.Fatal(err)
		}
	})
	readAlloc := allocated(func() {
		if err := s.Verify(t.Context(), sha); err != nil {
			t.Fatal(err)
		}
	})
	const bound = 4 << 20
	if putAlloc > bound || readAlloc > bound {
		t.Errorf("a %d MiB blob allocated %d bytes to write and %d to read; want under %d",
			size>>20, putAlloc, readAlloc, bound)
	}
}

func TestWalkListsEveryBlobOnce(t *testing.T) {
	s := openStore(t)
	want := map[string]bool{}
	for i := range 20 {
		sha, _, err := s.Put(t.Context(), strings.NewReader(fmt.Sprintf("blob %d", i)), "", -1)
		if err != nil {
			t.Fatal(err)
		}
		want[sha] = true
	}
	// A temporary file and a stray file are not blobs.
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := os.WriteFile(filepath.Join(s.Dir(), "README"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	err = s.Walk(t.Context(), func(sha string, mod time.Time) error {
		if got[sha] {
			t.Errorf("%s listed twice", sha)
		}
		if mod.IsZero() || time.Since(mod) > time.Hour {
			t.Errorf("%s has modification time %v", sha, mod)
		}
		got[sha] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Walk listed %d blobs, want %d", len(got), len(want))
	}
	for sha := range want {
		if !got[sha] {
			t.Errorf("Walk missed %s", sha)
		}
	}
}

func TestCommittingAnExistingBlobMarksItWrittenNow(t *testing.T) {
	s := openStore(t)
	sha, _, err := s.Put(t.Context(), strings.NewReader("same bytes"), "", -1)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.Dir(), sha[:2], sha)
	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Put(t.Context(), strings.NewReader("same bytes"), sha, -1); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(fi.ModTime()) > time.Hour {
		t.Fatalf("the existing blob still looks written at %v", fi.ModTime())
	}
}
