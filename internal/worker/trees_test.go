package worker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestASecondExportOfACommitComesFromMemoryWithoutGit(t *testing.T) {
	url, commit := makeRepo(t, map[string]string{"kiln.yaml": "steps: [true]\n", "src/main.c": "int main;\n"})
	ms := newMirrors(filepath.Join(t.TempDir(), "mirrors"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ms.export(ctx, url, commit, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	// Without the mirror (and the upstream), git could export nothing.
	if err := os.RemoveAll(ms.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(strings.TrimPrefix(url, "file://")); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := ms.export(ctx, url, commit, dst); err != nil {
		t.Fatalf("second export: %v", err)
	}
	for name, want := range map[string]string{"kiln.yaml": "steps: [true]\n", "src/main.c": "int main;\n"} {
		if got, err := os.ReadFile(filepath.Join(dst, name)); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
}

func TestALargeTreeIsExportedButNotKept(t *testing.T) {
	url, commit := makeRepo(t, map[string]string{"big": strings.Repeat("x", maxCachedTree+1)})
	ms := newMirrors(filepath.Join(t.TempDir(), "mirrors"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dst := t.TempDir()
	if err := ms.export(ctx, url, commit, dst); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "big")); err != nil || fi.Size() != maxCachedTree+1 {
		t.Errorf("exported file: %v, %v", fi, err)
	}
	if ms.trees.get(url, commit) != nil {
		t.Error("a tree over maxCachedTree was kept")
	}
}

func TestTheTreeCacheDropsTheLeastRecentlyUsedBeyondItsBound(t *testing.T) {
	url, c1 := makeRepo(t, map[string]string{"a": strings.Repeat("1", 10<<10)})
	_, c2 := makeRepo(t, map[string]string{"b": strings.Repeat("2", 10<<10)})
	ms := newMirrors(filepath.Join(t.TempDir(), "mirrors"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ms.export(ctx, url, c1, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	t1 := ms.trees.get(url, c1)
	if t1 == nil {
		t.Fatal("a small tree was not kept")
	}
	// Room for one tree of this size only.
	c := newTreeCache(maxCachedTree, t1.Size()+t1.Size()/2)
	c.put(url, t1)
	other := *t1 // a second tree of the same size under another key
	c.put("file:///other", &other)
	if c.get(url, c1) != nil {
		t.Error("the least recently used tree survived beyond the bound")
	}
	if c.get("file:///other", c1) == nil {
		t.Error("the newest tree was dropped")
	}
	if c.bytes > c.maxBytes {
		t.Errorf("cache holds %d bytes over its bound of %d", c.bytes, c.maxBytes)
	}
	if c.get(url, c2) != nil {
		t.Error("a tree never put was found")
	}
}
