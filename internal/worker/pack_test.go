package worker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
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

// TestPack_SameTreeSameBytes: one tree made twice, as two volunteers
// would, with files created in opposite orders (the file system lists
// them differently), other modification times, another umask's modes and,
// as root, other owners, packs to the same bytes; every header holds the
// commit's time, owner 0/0 without names and a normalized mode.
func TestPack_SameTreeSameBytes(t *testing.T) {
	names := []string{"bin/hello", "bin/hi", "lib/libx.a", "share/doc/README", "share/doc/NEWS", "z", "a"}
	content := func(n string) string { return "content of " + n }
	epoch := time.Unix(1686355200, 0) // the commit's time
	make1 := func(order []string, uid int, mtime time.Time, perm os.FileMode) string {
		root := t.TempDir()
		for _, n := range order {
			p := filepath.Join(root, n)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if n == "bin/hi" {
				if err := os.Symlink("hello", p); err != nil {
					t.Fatal(err)
				}
				continue
			}
			mode := perm
			if n == "bin/hello" {
				mode |= 0o111
			}
			if err := os.WriteFile(p, []byte(content(n)), 0o600); err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, mode)
			os.Chtimes(p, mtime, mtime)
			if os.Geteuid() == 0 {
				if err := os.Lchown(p, uid, uid); err != nil {
					t.Fatal(err)
				}
			}
		}
		return root
	}
	reversed := slices.Clone(names)
	slices.Reverse(reversed)
	a := make1(names, 1234, time.Now(), 0o644)
	b := make1(reversed, 4321, time.Unix(100, 0), 0o664)

	out := t.TempDir()
	var arts [2]*kilnv1.Artifact
	for i, root := range []string{a, b} {
		entries, err := collectTree(root)
		if err != nil {
			t.Fatal(err)
		}
		if arts[i], err = pack(entries, filepath.Join(out, fmt.Sprintf("%d.tar.gz", i)), 1<<20, epoch); err != nil {
			t.Fatal(err)
		}
	}
	if arts[0].GetSha256() != arts[1].GetSha256() {
		t.Errorf("same tree packed twice gives %s and %s", arts[0].GetSha256(), arts[1].GetSha256())
	}
	if want := []string{"a", "bin/hello", "bin/hi", "lib/libx.a", "share/doc/NEWS", "share/doc/README", "z"}; !slices.Equal(arts[0].GetFiles(), want) {
		t.Errorf("files %q, want %q", arts[0].GetFiles(), want)
	}
	data, _ := os.ReadFile(filepath.Join(out, "0.tar.gz"))
	if uint64(len(data)) != arts[0].GetSize() {
		t.Errorf("size %d, file has %d bytes", arts[0].GetSize(), len(data))
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header holds name %q, time %v", zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	var order []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, h.Name)
		want := int64(0o644)
		switch {
		case h.Typeflag == tar.TypeDir, h.Name == "bin/hello":
			want = 0o755
		case h.Typeflag == tar.TypeSymlink:
			want = 0o777
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(epoch) || h.Mode != want ||
			!h.AccessTime.IsZero() || !h.ChangeTime.IsZero() || len(h.PAXRecords) != 0 {
			t.Errorf("header of %s: uid %d gid %d %q %q mtime %v mode %o (want %o) atime %v pax %v",
				h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime, h.Mode, want, h.AccessTime, h.PAXRecords)
		}
	}
	if !slices.IsSorted(order) {
		t.Errorf("entries in the order %q, want sorted", order)
	}
	got := untar(t, data)
	if got["bin/hi"] != "-> hello" || got["bin/hello"] != content("bin/hello") {
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
	_, err := pack(entries, filepath.Join(t.TempDir(), "a.tar.gz"), 4<<10, time.Time{})
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
