package worker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// treeBuildDir returns a buildDirs whose trees hold one commit's tree, and
// a finished build directory in trash whose src holds that tree as
// exported.
func treeBuildDir(t *testing.T) (b *buildDirs, key treeKey, dir string) {
	t.Helper()
	url, commit := makeRepo(t, map[string]string{"README": "original\n", "sub/main.c": "int main;\n", "other": "x\n"})
	root := t.TempDir()
	ms := newMirrors(filepath.Join(root, "mirrors"))
	spare := filepath.Join(root, "spare")
	if err := os.Mkdir(spare, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _, err := newBuildDirs(spare, 1)
	if err != nil {
		t.Fatal(err)
	}
	b.trees = ms.trees
	dir = filepath.Join(root, "trash-42")
	if err := makeBuildDir(dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ms.export(ctx, url, commit, filepath.Join(dir, srcName)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, destName, "out"), "binary")
	writeFile(t, filepath.Join(dir, logName), "step output")
	return b, treeKey{url, commit}, dir
}

func TestAnUntouchedSourceTreeIsKeptForTheNextBuildOfItsCommit(t *testing.T) {
	b, key, dir := treeBuildDir(t)
	readme := inode(t, filepath.Join(dir, srcName, "README"))
	if !b.recycle(dir, key) {
		t.Fatal("not recycled")
	}
	if len(b.ready) != 1 || !strings.HasPrefix(filepath.Base(b.ready[0]), "tree-") {
		t.Fatalf("ready spares %v, want one tree-<n>", b.ready)
	}
	// Another commit's build gets an empty src; the old one goes to trash.
	var trashed []string
	other := filepath.Join(t.TempDir(), "b")
	spare, holds, err := b.take(other, treeKey{key.url, strings.Repeat("0", 40)}, func(d string) {
		trashed = append(trashed, d)
		if err := os.Rename(d, filepath.Join(t.TempDir(), "trashed")); err != nil {
			t.Error(err)
		}
	})
	if err != nil || !spare || holds {
		t.Fatalf("take for another commit = %v, %v, %v; want a spare without the tree", spare, holds, err)
	}
	checkRecycledBuildDir(t, other)
	if len(trashed) != 1 {
		t.Errorf("trashed %v, want the old src", trashed)
	}

	// Recycled again, the same commit's next build gets the very files.
	b2, key2, dir2 := treeBuildDir(t)
	readme = inode(t, filepath.Join(dir2, srcName, "README"))
	if !b2.recycle(dir2, key2) {
		t.Fatal("not recycled")
	}
	plain := filepath.Join(t.TempDir(), "plain")
	if err := makeBuildDir(plain); err != nil {
		t.Fatal(err)
	}
	b2.ready = append([]string{plain}, b2.ready...) // an empty spare too
	dst := filepath.Join(t.TempDir(), "a")
	spare, holds, err = b2.take(dst, key2, nil)
	if err != nil || !spare || !holds {
		t.Fatalf("take for the same commit = %v, %v, %v; want the spare holding its tree", spare, holds, err)
	}
	if got := inode(t, filepath.Join(dst, srcName, "README")); got != readme {
		t.Error("the kept source tree's files were replaced")
	}
	if data, err := os.ReadFile(filepath.Join(dst, srcName, "README")); err != nil || string(data) != "original\n" {
		t.Errorf("README = %q, %v", data, err)
	}
	if data, err := os.ReadFile(filepath.Join(dst, destName, "out")); err == nil {
		t.Errorf("dest kept %q from the previous build", data)
	}
}

func TestASourceTreeABuildChangedIsEmptiedNotKept(t *testing.T) {
	touchLike := func(t *testing.T, p, ref string) {
		if out, err := exec.Command("touch", "-h", "-r", ref, p).CombinedOutput(); err != nil {
			t.Fatalf("touch: %v: %s", err, out)
		}
	}
	tests := []struct {
		name   string
		tamper func(t *testing.T, src string)
	}{
		{"content changed, size and time kept", func(t *testing.T, src string) {
			writeFile(t, filepath.Join(src, "README"), "ORIGINAL\n")
			touchLike(t, filepath.Join(src, "README"), filepath.Join(src, "other"))
		}},
		{"a file added", func(t *testing.T, src string) {
			writeFile(t, filepath.Join(src, "sub", "main.o"), "obj")
		}},
		{"a mode changed", func(t *testing.T, src string) {
			os.Chmod(filepath.Join(src, "README"), 0o755)
		}},
		{"a file hard-linked within the tree", func(t *testing.T, src string) {
			p := filepath.Join(src, "README")
			os.Remove(p)
			os.Link(filepath.Join(src, "other"), p)
			touchLike(t, src, filepath.Join(src, "other"))
		}},
		{"an extended attribute", func(t *testing.T, src string) {
			if err := unix.Setxattr(filepath.Join(src, "README"), "user.kiln", []byte("x"), 0); err != nil {
				t.Skipf("no extended attributes here: %v", err)
			}
		}},
		{"a directory replaced by a link", func(t *testing.T, src string) {
			sub := filepath.Join(src, "sub")
			os.Rename(sub, filepath.Join(filepath.Dir(src), homeName, "sub"))
			os.Symlink("../"+homeName+"/sub", sub)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, key, dir := treeBuildDir(t)
			tt.tamper(t, filepath.Join(dir, srcName))
			if !b.recycle(dir, key) {
				t.Fatal("not recycled")
			}
			if len(b.ready) != 1 || !strings.HasPrefix(filepath.Base(b.ready[0]), "ready-") {
				t.Fatalf("ready spares %v, want one empty ready-<n>", b.ready)
			}
			checkRecycledBuildDir(t, b.ready[0])
			dst := filepath.Join(t.TempDir(), "a")
			if _, holds, err := b.take(dst, key, nil); err != nil || holds {
				t.Errorf("take = holds %v, %v; want an empty src", holds, err)
			}
		})
	}
}

func TestSparesHoldingASourceTreeAreNotTakenUpAfterARestart(t *testing.T) {
	b, key, dir := treeBuildDir(t)
	if !b.recycle(dir, key) {
		t.Fatal("not recycled")
	}
	again, stale, err := newBuildDirs(b.dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.ready) != 0 || len(stale) != 1 {
		t.Errorf("after a restart: ready %v, stale %v; want the tree-<n> spare stale", again.ready, stale)
	}
}

func TestBuildsOfOneCommitShareAnUntouchedSourceTreeButNeverAChangedOne(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"README": "original\n"})
	cfg := testConfig(t, f)
	r := startClient(t, cfg)
	spare, trash := filepath.Join(cfg.DataDir, "spare"), filepath.Join(cfg.DataDir, "trash")
	count := func(pattern string) int {
		m, _ := filepath.Glob(pattern)
		return len(m)
	}
	build := func(id uint64, step string) {
		t.Helper()
		f.push(t, assign(assignment(id, url, commit, recipe([]string{step}, "README"))))
		if res := f.waitResult(t, id); res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
			t.Fatalf("attempt %d: outcome %v: %s\n%s", id, res.GetOutcome(), res.GetReason(), f.log(id))
		}
		waitIdle(t, r.c)
		pollUntil(t, "the trash emptied", func() bool { return count(filepath.Join(trash, "*")) == 0 })
	}
	build(1, "true")
	if n := count(filepath.Join(spare, "tree-*")); n != 1 {
		t.Fatalf("%d spares hold the source tree, want 1", n)
	}
	// The next build of the commit takes that spare, and changes its source.
	build(2, `test "$(cat README)" = original && echo changed > README`)
	if n := count(filepath.Join(spare, "tree-*")); n != 0 {
		t.Fatalf("%d spares hold a source tree after a build changed it, want 0", n)
	}
	build(3, `test "$(cat README)" = original`)
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}
