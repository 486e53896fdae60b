package gitmirror

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// treeListing describes every entry under dir: type, mode, modification
// time (not of links, which Export leaves) and content or link target, so two exports can be compared.
func treeListing(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		desc := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0: // Export leaves a link's own time
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
			out[rel] = desc
			return nil
		}
		desc += " " + fi.ModTime().UTC().String()
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(data)
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestExportTreeWritesTheSameTreeAgainWithoutGit(t *testing.T) {
	u := newUpstream(t)
	c := u.commit("tree", map[string]string{
		"Makefile":        "all:\n\ttrue\n",
		"configure*":      "#!/bin/sh\n",
		"src/deep/main.c": "int main(void){return 0;}\n",
		"src/link":        "->deep/main.c",
		"empty":           "",
	})
	m := newMirror(t, u, Options{})
	first := t.TempDir()
	tree, err := m.ExportTree(testCtx(t), c, first, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if tree == nil || tree.Commit() != c || tree.Size() == 0 {
		t.Fatalf("ExportTree kept %+v, want the tree of %s", tree, c)
	}
	// Without the mirror, only the tree in memory can write it.
	if err := os.RemoveAll(m.Dir()); err != nil {
		t.Fatal(err)
	}
	want := treeListing(t, first)
	for range 2 {
		again := t.TempDir()
		if err := tree.Extract(testCtx(t), again); err != nil {
			t.Fatal(err)
		}
		got := treeListing(t, again)
		delete(got, ".")
		delete(want, ".")
		if len(got) != len(want) {
			t.Fatalf("extracted %v, exported %v", got, want)
		}
		for name, w := range want {
			if got[name] != w {
				t.Errorf("%s: extracted %q, exported %q", name, got[name], w)
			}
		}
	}
}

func TestExportTreeKeepsNothingAboveTheLimit(t *testing.T) {
	u := newUpstream(t)
	c := u.commit("big", map[string]string{"big": strings.Repeat("x", 64<<10)})
	m := newMirror(t, u, Options{})
	dst := t.TempDir()
	tree, err := m.ExportTree(testCtx(t), c, dst, 32<<10)
	if err != nil {
		t.Fatal(err)
	}
	if tree != nil {
		t.Errorf("kept a tree of %d bytes over a limit of %d", tree.Size(), 32<<10)
	}
	if data, err := os.ReadFile(filepath.Join(dst, "big")); err != nil || len(data) != 64<<10 {
		t.Errorf("exported file: %d bytes, %v; want the whole file", len(data), err)
	}
}

func TestExportTreeRefusesUnsafeTreesAndKeepsNone(t *testing.T) {
	u := newUpstream(t)
	c := u.commit("evil", map[string]string{"evil": "->../../etc"})
	m := newMirror(t, u, Options{})
	tree, err := m.ExportTree(testCtx(t), c, t.TempDir(), 1<<20)
	if !errors.Is(err, ErrUnsafePath) || tree != nil {
		t.Errorf("ExportTree = %v, %v; want no tree and ErrUnsafePath", tree, err)
	}
}

func TestTreeExtractRefusesANonEmptyDestinationAndAStoppedContext(t *testing.T) {
	u := newUpstream(t)
	c := u.commit("one", map[string]string{"a": "1"})
	m := newMirror(t, u, Options{})
	tree, err := m.ExportTree(testCtx(t), c, t.TempDir(), 1<<20)
	if err != nil || tree == nil {
		t.Fatalf("ExportTree = %v, %v", tree, err)
	}
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tree.Extract(testCtx(t), full); err == nil {
		t.Error("Extract into a non-empty directory succeeded")
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	dst := t.TempDir()
	if err := tree.Extract(ctx, dst); !errors.Is(err, context.Canceled) {
		t.Errorf("Extract with a cancelled context = %v, want context.Canceled", err)
	}
	if entries, _ := os.ReadDir(dst); len(entries) != 0 {
		t.Errorf("a cancelled Extract wrote %v", entries)
	}
}

func TestTreeMatchesOnlyAnUntouchedExtraction(t *testing.T) {
	u := newUpstream(t)
	c := u.commit("tree", map[string]string{
		"Makefile":        "all:\n\ttrue\n",
		"configure*":      "#!/bin/sh\n",
		"src/deep/main.c": "int main(void){return 0;}\n",
		"src/link":        "->deep/main.c",
		"src/empty":       "",
		"big":             strings.Repeat("0123456789abcdef", 5000),
	})
	m := newMirror(t, u, Options{})
	tree, err := m.ExportTree(testCtx(t), c, t.TempDir(), 1<<20)
	if err != nil || tree == nil {
		t.Fatalf("ExportTree = %v, %v", tree, err)
	}
	mtime := commitEpoch
	tests := []struct {
		name   string
		change func(t *testing.T, dir string) error
		ok     func(string, fs.FileInfo) bool
		want   bool
	}{
		{"untouched", func(*testing.T, string) error { return nil }, nil, true},
		{"content changed, size and time kept", func(_ *testing.T, d string) error {
			p := filepath.Join(d, "Makefile")
			if err := os.WriteFile(p, []byte("all:\n\tfals\n"), 0o644); err != nil {
				return err
			}
			return os.Chtimes(p, mtime, mtime)
		}, nil, false},
		{"a file added", func(_ *testing.T, d string) error {
			return os.WriteFile(filepath.Join(d, "src", "deep", "main.o"), nil, 0o644)
		}, nil, false},
		{"a large file changed at its end, size and time kept", func(_ *testing.T, d string) error {
			p := filepath.Join(d, "big")
			data := []byte(strings.Repeat("0123456789abcdef", 5000))
			data[len(data)-1] = 'X'
			if err := os.WriteFile(p, data, 0o644); err != nil {
				return err
			}
			return os.Chtimes(p, mtime, mtime)
		}, nil, false},
		{"an empty file filled, time kept", func(_ *testing.T, d string) error {
			p := filepath.Join(d, "src", "empty")
			if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
				return err
			}
			return os.Chtimes(p, mtime, mtime)
		}, nil, false},
		{"an empty directory added, time kept", func(_ *testing.T, d string) error {
			if err := os.Mkdir(filepath.Join(d, "build"), 0o755); err != nil {
				return err
			}
			return os.Chtimes(d, mtime, mtime)
		}, nil, false},
		{"a file removed", func(_ *testing.T, d string) error {
			return os.Remove(filepath.Join(d, "configure"))
		}, nil, false},
		{"a mode changed", func(_ *testing.T, d string) error {
			return os.Chmod(filepath.Join(d, "configure"), 0o777)
		}, nil, false},
		{"a directory's time changed", func(_ *testing.T, d string) error {
			p := filepath.Join(d, "src", "tmp")
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				return err
			}
			return os.Remove(p)
		}, nil, false},
		{"a file replaced by a link to it", func(_ *testing.T, d string) error {
			p := filepath.Join(d, "Makefile")
			if err := os.Rename(p, filepath.Join(d, "src", "M")); err != nil {
				return err
			}
			return os.Symlink("src/M", p)
		}, nil, false},
		{"a link retargeted", func(_ *testing.T, d string) error {
			p := filepath.Join(d, "src", "link")
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.Symlink("../Makefile", p)
		}, nil, false},
		{"the caller's own check fails", func(*testing.T, string) error { return nil },
			func(p string, _ fs.FileInfo) bool { return !strings.HasSuffix(p, "main.c") }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tree.Extract(testCtx(t), dir); err != nil {
				t.Fatal(err)
			}
			if err := tt.change(t, dir); err != nil {
				t.Fatal(err)
			}
			got, err := tree.Matches(dir, tt.ok)
			if err != nil || got != tt.want {
				t.Errorf("Matches = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	if _, err := tree.Matches(filepath.Join(t.TempDir(), "missing"), nil); err == nil {
		t.Error("Matches of a missing directory gave no error")
	}
}
