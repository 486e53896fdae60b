package compilecli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fuzzArchive(entries ...*tar.Header) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range entries {
		_ = tw.WriteHeader(h)
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// FuzzExtract feeds arbitrary bytes (seeded with real and hostile archives)
// to Extract: it must never panic, never write outside DIR, and never
// leave a symlink pointing outside DIR.
func FuzzExtract(f *testing.F) {
	f.Add(fuzzArchive(&tar.Header{Name: "hello", Typeflag: tar.TypeReg, Mode: 0o755, Size: 5}))
	f.Add(fuzzArchive(&tar.Header{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o755}, &tar.Header{Name: "usr/bin/hello", Typeflag: tar.TypeReg, Mode: 0o755, Size: 3}))
	f.Add(fuzzArchive(&tar.Header{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}))
	f.Add(fuzzArchive(&tar.Header{Name: "/abs", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}))
	f.Add(fuzzArchive(&tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, &tar.Header{Name: "link/passwd", Typeflag: tar.TypeReg, Size: 1}))
	f.Add(fuzzArchive(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../.."}))
	f.Add([]byte("not a gzip stream"))
	f.Fuzz(func(t *testing.T, data []byte) {
		root := t.TempDir()
		dir := filepath.Join(root, "out")
		lim := DefaultLimits
		lim.MaxEntries, lim.MaxExtractBytes = 64, 1<<20
		_, _ = Extract(bytes.NewReader(data), dir, lim)
		// Nothing may appear next to DIR.
		entries, err := os.ReadDir(root)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != "out" {
				t.Fatalf("Extract wrote %q outside its directory", e.Name())
			}
		}
		_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
			if err != nil || info.Mode()&os.ModeSymlink == 0 {
				return nil
			}
			target, _ := os.Readlink(p)
			resolved := filepath.Clean(filepath.Join(filepath.Dir(p), target))
			if filepath.IsAbs(target) || !strings.HasPrefix(resolved, dir) {
				t.Fatalf("symlink %s -> %s escapes %s", p, target, dir)
			}
			return nil
		})
	})
}
