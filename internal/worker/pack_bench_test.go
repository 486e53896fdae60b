package worker

import (
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkPackSmallArtifact packs one small file, the no-op build's case.
func BenchmarkPackSmallArtifact(b *testing.B) {
	root := b.TempDir()
	writeFile(b, filepath.Join(root, "hello"), "hello\n")
	out := filepath.Join(b.TempDir(), "a.tar.gz")
	for b.Loop() {
		entries, err := collectGlobs(root, []string{"hello"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := pack(entries, out, 1<<20, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
}
