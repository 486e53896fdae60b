package gitmirror

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
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

// BenchmarkResolveBranchWithinFreshness measures startcompile's default
// request on the metaserver: a branch name (here "main"; "" takes the same
// path through HEAD) within the fetch freshness window, answered from the
// ref table with no git process (procs/op must be 0).
func BenchmarkResolveBranchWithinFreshness(b *testing.B) {
	u := newUpstream(b)
	c := u.commit("one", map[string]string{"a": "1"})
	u.git("tag", "-a", "-m", "release", "v1")
	m := newMirror(b, u, Options{FetchFreshness: time.Hour})
	ctx := testCtx(b)
	if got, err := m.Resolve(ctx, "main"); err != nil || got != c {
		b.Fatalf("Resolve(main) = %s, %v; want %s", got, err, c)
	}
	procs := m.localProcs.Load()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Resolve(ctx, "main"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(m.localProcs.Load()-procs)/float64(b.N), "procs/op")
}

// BenchmarkResolveBranchRevParse is the same request answered by one git
// rev-parse, as every branch name was before ref tables (and as names the
// table cannot answer still are): the figure the table saves.
func BenchmarkResolveBranchRevParse(b *testing.B) {
	u := newUpstream(b)
	u.commit("one", map[string]string{"a": "1"})
	m := newMirror(b, u, Options{FetchFreshness: time.Hour})
	ctx := testCtx(b)
	for b.Loop() {
		if _, ok, err := m.revParse(ctx, "main"); err != nil || !ok {
			b.Fatalf("revParse(main) = %v, %v", ok, err)
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
