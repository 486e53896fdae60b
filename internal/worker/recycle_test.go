package worker

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
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
	checkRecycledBuildDir(t, b.ready[0])
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

func TestWritersOfARecycledBuildDirectoryLeaveNothingOfTheEarlierBuild(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "build")
	if err := makeBuildDir(dir); err != nil {
		t.Fatal(err)
	}
	stale := strings.Repeat("earlier build ", 1000)
	for _, f := range []string{logName, artifactName, resultTmpName} {
		writeFile(t, filepath.Join(dir, f), stale)
	}

	l, err := createLog(filepath.Join(dir, logName), 1, &chunkSink{gen: 1}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	l.Write([]byte("new log\n"))
	if n := l.close(); n != int64(len("new log\n")) {
		t.Errorf("log size %d", n)
	}
	l.release()
	if data, err := os.ReadFile(filepath.Join(dir, logName)); err != nil || string(data) != "new log\n" {
		t.Errorf("log file = %q, %v", data, err)
	}

	writeFile(t, filepath.Join(dir, srcName, "out"), "artifact")
	out := filepath.Join(dir, srcName, "out")
	fi, err := os.Lstat(out)
	if err != nil {
		t.Fatal(err)
	}
	art, err := pack([]packEntry{{name: "out", path: out, info: fi}}, filepath.Join(dir, artifactName), 1<<20, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, artifactName))
	if err != nil || uint64(len(data)) != art.GetSize() {
		t.Fatalf("artifact file: %d bytes, %v; want %d", len(data), err, art.GetSize())
	}
	if files := untar(t, data); len(files) != 1 || files["out"] != "artifact" {
		t.Errorf("artifact holds %v", files)
	}

	s := resultStore{dir: t.TempDir()}
	r := &kilnv1.AttemptResult{AttemptId: 9, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED}
	if err := s.save(r, filepath.Join(dir, resultTmpName)); err != nil {
		t.Fatal(err)
	}
	if loaded, err := s.load(); err != nil || len(loaded) != 1 || !proto.Equal(loaded[0], r) {
		t.Errorf("load = %v, %v; want %v", loaded, err, r)
	}
}
