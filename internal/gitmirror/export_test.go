package gitmirror

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExportWritesFilesModesLinksAndTimes(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("tree", map[string]string{
		"Makefile":          "all:\n\ttrue\n",
		"configure*":        "#!/bin/sh\n",
		"src/deep/main.c":   "int main(void){return 0;}\n",
		"src/link":          "->deep/main.c",
		"top-link":          "->src",
		"name with space":   "ok",
		"dangling-but-safe": "->not/there",
	})
	m := newMirror(t, u, Options{})
	dst := t.TempDir()
	if err := m.Export(testCtx(t), c1, dst); err != nil {
		t.Fatal(err)
	}

	files := []struct {
		name, content string
		mode          fs.FileMode
	}{
		{"Makefile", "all:\n\ttrue\n", 0o644},
		{"configure", "#!/bin/sh\n", 0o755},
		{"src/deep/main.c", "int main(void){return 0;}\n", 0o644},
		{"name with space", "ok", 0o644},
	}
	for _, f := range files {
		p := filepath.Join(dst, f.name)
		data, err := os.ReadFile(p)
		if err != nil || string(data) != f.content {
			t.Errorf("%s = %q, %v; want %q", f.name, data, err, f.content)
			continue
		}
		fi, _ := os.Lstat(p)
		if fi.Mode() != f.mode {
			t.Errorf("%s mode = %v, want %v", f.name, fi.Mode(), f.mode)
		}
		if !fi.ModTime().Equal(commitEpoch) {
			t.Errorf("%s mtime = %v, want the commit time %v", f.name, fi.ModTime(), commitEpoch)
		}
	}
	for _, d := range []string{"src", "src/deep"} {
		fi, err := os.Lstat(filepath.Join(dst, d))
		if err != nil || fi.Mode() != fs.ModeDir|0o755 {
			t.Errorf("%s: %v, %v; want a 0755 directory", d, fi, err)
		} else if !fi.ModTime().Equal(commitEpoch) {
			t.Errorf("%s mtime = %v, want %v", d, fi.ModTime(), commitEpoch)
		}
	}
	for name, want := range map[string]string{"src/link": "deep/main.c", "top-link": "src", "dangling-but-safe": "not/there"} {
		if got, err := os.Readlink(filepath.Join(dst, name)); err != nil || got != want {
			t.Errorf("link %s -> %q, %v; want %q", name, got, err, want)
		}
	}
}

func TestExportRefusesEscapingSymlinks(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
	}{
		{"a link climbing out of the tree", map[string]string{"evil": "->../../etc"}},
		{"a nested link climbing out", map[string]string{"a/b/evil": "->../../../x"}},
		{"an absolute link", map[string]string{"evil": "->/etc/passwd"}},
		{"a chain that climbs above a link to the root", map[string]string{"self": "->.", "evil": "->self/.."}},
		{"a chain through a deeper link", map[string]string{"d/up": "->..", "evil": "->d/up/.."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream(t)
			c := u.commit("evil", tt.files)
			m := newMirror(t, u, Options{})
			dst := filepath.Join(t.TempDir(), "dst")
			if err := os.Mkdir(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := m.Export(testCtx(t), c, dst); !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("Export = %v, want ErrUnsafePath", err)
			}
		})
	}
}

func TestExportRefusesANonEmptyDestinationAndAnUnknownCommit(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", map[string]string{"a": "1"})
	m := newMirror(t, u, Options{})
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Export(testCtx(t), c1, full); err == nil {
		t.Error("Export into a non-empty directory succeeded")
	}
	if err := m.Export(testCtx(t), strings.Repeat("4", 40), t.TempDir()); !errors.Is(err, ErrUnknownRevision) {
		t.Errorf("Export(absent commit) = %v, want ErrUnknownRevision", err)
	}
	if err := m.Export(testCtx(t), "main", t.TempDir()); !errors.Is(err, ErrBadRevision) {
		t.Errorf("Export(branch name) = %v, want ErrBadRevision", err)
	}
}

// tarOf builds a tar stream of headers; regular files get their name as
// content.
func tarOf(t *testing.T, hdrs ...tar.Header) *tar.Reader {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, h := range hdrs {
		h.ModTime = commitEpoch
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		body := ""
		if h.Typeflag == tar.TypeReg {
			body = h.Name
			h.Size = int64(len(body))
		}
		if err := w.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return tar.NewReader(&buf)
}

func TestExtractRefusesEntriesThatWouldLeaveTheDestination(t *testing.T) {
	reg := func(name string) tar.Header { return tar.Header{Name: name, Typeflag: tar.TypeReg} }
	link := func(name, target string) tar.Header {
		return tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}
	}
	tests := []struct {
		name string
		hdrs []tar.Header
	}{
		{"a dot-dot name", []tar.Header{reg("../outside")}},
		{"a dot-dot inside a name", []tar.Header{reg("a/../../outside")}},
		{"an absolute name", []tar.Header{reg("/tmp/outside")}},
		{"a file written through a link", []tar.Header{link("l", "sub"), reg("l/x")}},
		{"a file written through a link to outside", []tar.Header{link("l", "../.."), reg("l/outside")}},
		{"a file replacing a link", []tar.Header{link("l", "x"), reg("l")}},
		{"a duplicate entry", []tar.Header{reg("a"), reg("a")}},
		{"a hard link", []tar.Header{reg("a"), {Name: "b", Typeflag: tar.TypeLink, Linkname: "a"}}},
		{"a device node", []tar.Header{{Name: "dev", Typeflag: tar.TypeChar}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dst := filepath.Join(parent, "dst")
			if err := os.Mkdir(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			root, err := os.OpenRoot(dst)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			x := &extractor{root: root, kinds: map[string]entryKind{}, links: map[string]string{}}
			if err := x.extract(tarOf(t, tt.hdrs...)); !errors.Is(err, ErrUnsafePath) {
				t.Errorf("extract = %v, want ErrUnsafePath", err)
			}
			entries, _ := os.ReadDir(parent)
			if len(entries) != 1 {
				t.Errorf("something was written beside dst: %v", entries)
			}
		})
	}
}

func TestExportOfASmallTreeIsFast(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	u := newUpstream(t)
	files := map[string]string{}
	for i := range 10 {
		files[filepath.Join("src", string(rune('a'+i))+".c")] = "int x;\n"
	}
	c := u.commit("small", files)
	m := newMirror(t, u, Options{})
	best := time.Hour
	for range 5 {
		dst := t.TempDir()
		start := time.Now()
		if err := m.Export(testCtx(t), c, dst); err != nil {
			t.Fatal(err)
		}
		best = min(best, time.Since(start))
	}
	// A few milliseconds on a quiet machine; generous for a loaded CI box.
	if best > 250*time.Millisecond {
		t.Errorf("best Export of 10 files took %v", best)
	}
	t.Logf("best Export of 10 files: %v", best)
}
