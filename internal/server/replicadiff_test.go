package server

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// diffBytes runs differingFiles on two artifacts held in memory.
func diffBytes(a, b []byte) []string {
	return differingFiles(context.Background(), clockwork.NewRealClock(), bytes.NewReader(a), int64(len(a)), bytes.NewReader(b), int64(len(b)))
}

func TestDifferingFiles_ListsAtMost64NamesAndCountsTheRest(t *testing.T) {
	var fa, fb []file
	for i := range 70 {
		name := fmt.Sprintf("share/f%03d", i)
		fa = append(fa, file{name, []byte("a")})
		fb = append(fb, file{name, []byte("b")})
	}
	got := diffBytes(tarGz(t, fa...), tarGz(t, fb...))
	if len(got) != maxDifferingFiles+1 || got[0] != "share/f000" || got[maxDifferingFiles] != "… and 6 more" {
		t.Fatalf("differing files: %d entries, first %q, last %q; want 64 names and \"… and 6 more\"", len(got), got[0], got[len(got)-1])
	}
}

func TestDifferingFiles_SaysWhatDiffersWhenTheFilesAreAlike(t *testing.T) {
	plain := tarOf(t, file{"bin/x", []byte("same")})
	if got := diffBytes(tarGz(t, file{"bin/x", []byte("same")}), plain); !slices.Equal(got, []string{"(the same files; the archives differ in compression or tar headers)"}) {
		t.Fatalf("a tar.gz and the same files as a tar: %q", got)
	}
	swapped := diffBytes(tarGz(t, file{"a", nil}, file{"b", nil}), tarGz(t, file{"b", nil}, file{"a", nil}))
	if !slices.Equal(swapped, []string{"(the same files, in a different order)"}) {
		t.Fatalf("the same files in another order: %q", swapped)
	}
}

// A cheater's artifact is the archive a result is compared with: a name
// that leaves the archive, more entries than the bound, or a gzip bomb is
// refused with one entry saying why, not read without end.
func TestDifferingFiles_RefusesAHostileArtifactWithOneClearEntry(t *testing.T) {
	honest := tarGz(t, file{"bin/hello", []byte("hello\n")})
	traversal := tarGz(t, file{"bin/hello", []byte("hello\n")}, file{"../../etc/passwd", []byte("root::0:0::/:/bin/sh\n")})
	entries := manyEntries(t, maxDiffEntries+1)
	bomb := gzipBomb(t, 300<<20)
	for _, c := range []struct {
		name, artifact, want string
		maxAlloc             uint64
	}{
		{"path traversal", string(traversal), `unsafe archive: entry "../../etc/passwd" leaves the archive`, 8 << 20},
		// The index of maxDiffEntries names is what bounds its memory
		// (64 MiB allocated in all, 200 MiB under the race detector).
		{"too many entries", string(entries), fmt.Sprintf("more than %d entries", maxDiffEntries), 0},
		{"gzip bomb", string(bomb), "exceeds a limit", 8 << 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			got := diffBytes(honest, []byte(c.artifact))
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if len(got) != 1 || !strings.HasPrefix(got[0], "(archive refused: archive b: ") || !strings.Contains(got[0], c.want) {
				t.Fatalf("differing files %q; want one refusal of archive b naming %q", got, c.want)
			}
			// It streams: what it allocates does not grow with what the
			// artifact expands to (300 MiB for the bomb).
			if alloc := after.TotalAlloc - before.TotalAlloc; c.maxAlloc > 0 && alloc > c.maxAlloc {
				t.Fatalf("comparing a %d-byte artifact allocated %d bytes", len(c.artifact), alloc)
			}
			t.Logf("%s: %d bytes refused in %v, allocated %d KiB: %s", c.name, len(c.artifact), elapsed,
				(after.TotalAlloc-before.TotalAlloc)>>10, got[0])
		})
	}
}

// manyEntries is a tar.gz of n empty files.
func manyEntries(t *testing.T, n int) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for i := range n {
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Typeflag: tar.TypeReg, Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gzipBomb is a tar.gz of one file of size zero bytes (a multiple of
// 1 MiB): a gzip member of its header and first MiB, then the member of
// one MiB of zeros repeated (gzip readers read every member).
func gzipBomb(t *testing.T, size int64) []byte {
	zero := make([]byte, 1<<20)
	member := func(parts ...[]byte) []byte {
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			if _, err := zw.Write(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	out := member(hdr.Bytes(), zero)
	rest := member(zero)
	for n := int64(len(zero)); n < size; n += int64(len(zero)) {
		out = append(out, rest...)
	}
	return out
}

// A cheater whose artifact names a path outside the archive loses the
// dispute like any other, and the build names the refusal, not nothing.
func TestDispute_ACheatersUnsafeArtifactIsNamedAsRefused(t *testing.T) {
	ts := startTestServer(t, Config{Quorum: 2}, queuedBuild(1, "hello", 60))
	honest := tarGz(t, file{"bin/hello", []byte("hello, world\n")})
	hostile := tarGz(t, file{"bin/hello", []byte("hello, world\n")}, file{"../../../etc/cron.d/x", []byte("* * * * * root sh\n")})
	a1 := ts.connectOf("alice", "a1")
	runOn(a1, honest)
	ts.waitBuild(1, "unverified", func(b *kilnv1.Build) bool { return b.GetState() == kilnv1.BuildState_BUILD_STATE_QUEUED })
	a1.stream.CloseSend()
	cheat := ts.connectOf("mallory", "cheat")
	runOn(cheat, hostile)
	b := ts.waitBuild(1, "disputed", func(b *kilnv1.Build) bool {
		return b.GetVerification() == kilnv1.Verification_VERIFICATION_DISPUTED
	})
	want := `(archive refused: archive b: artifactdiff: unsafe archive: entry "../../../etc/cron.d/x" leaves the archive)`
	if !slices.Equal(b.GetDifferingFiles(), []string{want}) {
		t.Fatalf("differing files %q, want [%s]", b.GetDifferingFiles(), want)
	}
}
