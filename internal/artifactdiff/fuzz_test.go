package artifactdiff

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"testing"
)

// FuzzDiff feeds Diff arbitrary bytes as archive b: it must return a
// report or one of its errors, never panic or run past its limits, and
// an archive it accepts compared with itself must be Same.
func FuzzDiff(f *testing.F) {
	f.Add(archive(f, true, file("bin/hello", "binary"), member{name: "lib/", typ: tar.TypeDir, mode: 0o755}))
	f.Add(archive(f, false, file("a", "1"), member{name: "l", typ: tar.TypeSymlink, link: "../x"}))
	f.Add(archive(f, true, file("../escape", "x")))
	f.Add([]byte{0x1f, 0x8b, 0x08, 0x00})
	lim := Limits{MaxEntries: 64, MaxNameBytes: 256, MaxIndexBytes: 4096, MaxBytes: 1 << 20, MaxDifferences: 16}
	ref := archive(f, true, file("bin/hello", "binary"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		r, err := Diff(ctx, bytes.NewReader(ref), bytes.NewReader(data), lim)
		if err != nil {
			if !errors.Is(err, ErrUnsafe) && !errors.Is(err, ErrLimit) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if len(r.Differences) > lim.MaxDifferences {
			t.Fatalf("%d differences, limit %d", len(r.Differences), lim.MaxDifferences)
		}
		self, err := Diff(ctx, bytes.NewReader(data), bytes.NewReader(data), lim)
		if err != nil {
			t.Fatalf("accepted as b, refused against itself: %v", err)
		}
		if !self.Same() {
			t.Fatalf("an archive differs from itself: %v", self.Differences)
		}
	})
}
