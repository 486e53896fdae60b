package worker

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tree writes files (content) and symlinks ("-> target") under a new directory.
func tree(t *testing.T, entries map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range entries {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "-> "); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestCollectGlobs(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		files    map[string]string
		patterns []string
		want     []string // archive names, in collection order
		wantErr  string   // a *buildError containing this
	}{
		{name: "a plain path takes that file", files: map[string]string{"hello": "x", "other": "y"},
			patterns: []string{"hello"}, want: []string{"hello"}},
		{name: "a glob takes every match", files: map[string]string{"bin/a": "1", "bin/b": "2", "lib/c": "3"},
			patterns: []string{"bin/*"}, want: []string{"bin/a", "bin/b"}},
		{name: "a directory brings its whole tree", files: map[string]string{"out/x": "1", "out/sub/y": "2"},
			patterns: []string{"out"}, want: []string{"out/", "out/sub/", "out/sub/y", "out/x"}},
		{name: "a symlink is taken as a symlink, even one pointing outside", files: map[string]string{"link": "-> /etc/passwd"},
			patterns: []string{"link"}, want: []string{"link"}},
		{name: "a pattern that matches nothing fails the build", files: map[string]string{"other": "y"},
			patterns: []string{"hello"}, wantErr: "artifact hello not produced"},
		{name: "a pattern leaving the build directory is refused", files: map[string]string{"x": "1"},
			patterns: []string{"../x"}, wantErr: "not a path inside"},
		{name: "an absolute pattern is refused", files: map[string]string{"x": "1"},
			patterns: []string{"/etc/passwd"}, wantErr: "not a path inside"},
		{name: "a file reached through a symlinked directory is refused", files: map[string]string{"escape": "-> " + outside},
			patterns: []string{"escape/secret"}, wantErr: "outside the build directory"},
		{name: "the same file named twice is taken once", files: map[string]string{"a": "1"},
			patterns: []string{"a", "*"}, want: []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := tree(t, tc.files)
			entries, err := collectGlobs(root, tc.patterns)
			if tc.wantErr != "" {
				var be *buildError
				if !errors.As(err, &be) || !strings.Contains(be.reason, tc.wantErr) {
					t.Fatalf("err = %v, want a build error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.name)
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("entries %q, want %q", names, tc.want)
			}
		})
	}
}

func TestPackIsDeterministicAndKeepsSymlinks(t *testing.T) {
	files := map[string]string{"bin/hello": "binary", "share/doc": "doc", "bin/hi": "-> hello"}
	a, b := tree(t, files), tree(t, files)
	// Different modification times and an exec bit must not change the
	// bytes beyond the exec bit itself.
	os.Chmod(filepath.Join(a, "bin/hello"), 0o755)
	os.Chmod(filepath.Join(b, "bin/hello"), 0o700)
	os.Chtimes(filepath.Join(b, "share/doc"), nowMinus(3600), nowMinus(3600))

	out := t.TempDir()
	pack1, err := collectTree(a)
	if err != nil {
		t.Fatal(err)
	}
	art1, err := pack(pack1, filepath.Join(out, "a.tar.gz"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	pack2, _ := collectTree(b)
	art2, err := pack(pack2, filepath.Join(out, "b.tar.gz"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if art1.GetSha256() != art2.GetSha256() {
		t.Errorf("same tree packed twice gives %s and %s", art1.GetSha256(), art2.GetSha256())
	}
	if !slices.Equal(art1.GetFiles(), []string{"bin/hello", "bin/hi", "share/doc"}) {
		t.Errorf("files %q", art1.GetFiles())
	}
	data, _ := os.ReadFile(filepath.Join(out, "a.tar.gz"))
	if uint64(len(data)) != art1.GetSize() {
		t.Errorf("size %d, file has %d bytes", art1.GetSize(), len(data))
	}
	got := untar(t, data)
	if got["bin/hi"] != "-> hello" || got["bin/hello"] != "binary" {
		t.Errorf("archive holds %q", got)
	}
}

func TestPackRefusesAnArtifactOverTheCap(t *testing.T) {
	root := t.TempDir()
	// Random bytes do not compress: 64 KiB of them cannot fit in 4 KiB.
	if err := os.WriteFile(filepath.Join(root, "big"), randomBytes(64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	entries, _ := collectGlobs(root, []string{"big"})
	_, err := pack(entries, filepath.Join(t.TempDir(), "a.tar.gz"), 4<<10)
	var be *buildError
	if !errors.As(err, &be) || !strings.Contains(be.reason, "exceeds") {
		t.Fatalf("err = %v, want a build error about the size limit", err)
	}
}

// TestCheckUnpackedSize_SparseFilesCountAtTheirSize: a sparse file of
// 64 GiB holds no block, but counts at its size, so it is refused before
// packing would spend hours compressing zeros.
func TestCheckUnpackedSize_SparseFilesCountAtTheirSize(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	entries, err := collectTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = checkUnpackedSize(entries, unpackedCap(4<<30, 1<<30))
	var be *buildError
	if !errors.As(err, &be) || !strings.Contains(be.reason, "before compression") {
		t.Errorf("64 GiB sparse file: %v, want a build error", err)
	}
	if err := checkUnpackedSize(entries, unpackedCap(0, 8<<30)); err != nil {
		t.Errorf("within 16 times the artifact cap: %v", err)
	}
}
