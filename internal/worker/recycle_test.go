package worker

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// finishedBuildDir makes a build directory in trash as a finished build
// leaves it: steps' files in src, dest and home, a written log and artifact,
// the result file renamed away.
func finishedBuildDir(t *testing.T, trash string) string {
	t.Helper()
	dir := filepath.Join(trash, "42-1")
	if err := makeBuildDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, srcName, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, srcName, "a", "b", "main.c"), "int main(){}")
	writeFile(t, filepath.Join(dir, destName, "out"), "binary")
	writeFile(t, filepath.Join(dir, homeName, ".cache"), "x")
	writeFile(t, filepath.Join(dir, logName), "step output")
	writeFile(t, filepath.Join(dir, artifactName), "tar.gz bytes")
	if err := os.Remove(filepath.Join(dir, resultTmpName)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestAFinishedBuildDirectoryIsRecycledIntoAnEmptySpare(t *testing.T) {
	root := t.TempDir()
	spare, trash := filepath.Join(root, "spare"), filepath.Join(root, "trash")
	for _, d := range []string{spare, trash} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	b, _, err := newBuildDirs(spare, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := finishedBuildDir(t, trash)
	dest := inode(t, filepath.Join(dir, destName))
	if !b.recycle(dir, treeKey{}) {
		t.Fatal("recycle refused a finished build directory")
	}
	if b.missing() != 0 || len(b.ready) != 1 {
		t.Fatalf("ready spares %v, want one", b.ready)
	}
	if !b.recycle(finishedBuildDir(t, trash), treeKey{}) {
		t.Fatal("recycle refused a second spare, within twice the spares wanted")
	}
	checkBuildDir(t, b.ready[0])
	if got := inode(t, filepath.Join(b.ready[0], destName)); got != dest {
		t.Errorf("dest is a new inode %d, want the recycled %d", got, dest)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("recycled directory still in the trash: %v", err)
	}
	if b.recycle(finishedBuildDir(t, trash), treeKey{}) {
		t.Error("recycle took a directory beyond twice the spares wanted")
	}
}

func TestABuildDirectoryAStepTamperedWithIsNotRecycled(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, dir string)
	}{
		{"an unexpected entry", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "extra"), "")
		}},
		{"a missing subdirectory", func(t *testing.T, dir string) {
			os.RemoveAll(filepath.Join(dir, homeName))
		}},
		{"a changed directory mode", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, destName), 0o1777)
		}},
		{"a subdirectory replaced by a symbolic link", func(t *testing.T, dir string) {
			os.RemoveAll(filepath.Join(dir, srcName))
			os.Symlink(t.TempDir(), filepath.Join(dir, srcName))
		}},
		{"a hard link to the log outside the directory", func(t *testing.T, dir string) {
			os.Link(filepath.Join(dir, logName), filepath.Join(filepath.Dir(dir), "log"))
		}},
		{"a default ACL on dest", func(t *testing.T, dir string) {
			// A minimal POSIX ACL xattr (version 2, user:: rwx entry); a
			// user.* attribute where the kernel has no ACL support.
			acl := []byte{2, 0, 0, 0, 1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff}
			p := filepath.Join(dir, destName)
			if err := unix.Setxattr(p, "system.posix_acl_default", acl, 0); err != nil {
				if err := unix.Setxattr(p, "user.kiln", []byte("x"), 0); err != nil {
					t.Skipf("no extended attributes here: %v", err)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			spare := filepath.Join(root, "spare")
			if err := os.Mkdir(spare, 0o700); err != nil {
				t.Fatal(err)
			}
			b, _, err := newBuildDirs(spare, 1)
			if err != nil {
				t.Fatal(err)
			}
			dir := finishedBuildDir(t, root)
			tt.tamper(t, dir)
			if b.recycle(dir, treeKey{}) {
				t.Fatalf("recycled a directory with %s", tt.name)
			}
			if len(b.ready) != 0 {
				t.Errorf("ready spares %v, want none", b.ready)
			}
			if _, err := os.Lstat(dir); err != nil {
				t.Errorf("refused directory not left for deletion: %v", err)
			}
		})
	}
}
