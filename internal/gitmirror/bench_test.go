package gitmirror

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// BenchmarkResolveKnownCommit measures the hot path of the metaserver: a
// full commit id seen before resolves with no git process.
func BenchmarkResolveKnownCommit(b *testing.B) {
	u := newUpstream(b)
	c := u.commit("one", map[string]string{"a": "1"})
	m := newMirror(b, u, Options{})
	ctx := testCtx(b)
	if _, err := m.Resolve(ctx, c); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Resolve(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResolvePresentCommit measures a full commit id present in the
// mirror but not yet seen by this Mirror: one git process.
func BenchmarkResolvePresentCommit(b *testing.B) {
	u := newUpstream(b)
	c := u.commit("one", map[string]string{"a": "1"})
	m := newMirror(b, u, Options{})
	ctx := testCtx(b)
	for b.Loop() {
		clear(m.known)
		if _, err := m.Resolve(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExportSmallTree measures exporting a ten-file project.
func BenchmarkExportSmallTree(b *testing.B) {
	u := newUpstream(b)
	files := map[string]string{"Makefile*": "all:\n", "README": "hi\n", "lib": "->src"}
	for i := range 7 {
		files[filepath.Join("src", "f"+strconv.Itoa(i)+".c")] = "int x;\n"
	}
	c := u.commit("small", files)
	m := newMirror(b, u, Options{})
	ctx := testCtx(b)
	base := b.TempDir()
	i := 0
	for b.Loop() {
		dst := filepath.Join(base, strconv.Itoa(i))
		i++
		if err := os.Mkdir(dst, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := m.Export(ctx, c, dst); err != nil {
			b.Fatal(err)
		}
	}
}
