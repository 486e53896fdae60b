package worker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/kilnbuild/kiln/internal/gitmirror"
)

// Modes a build directory's entries have when made by makeBuildDir (umask
// permitting); a recycled one must have exactly these.
//
// The build directory is searchable but not listable, so that bubblewrap,
// run as the build's user, reaches src, dest and home; those are the
// build's alone (0700, handed to its user), and the log, artifact and
// result files are the build server's (0600): no other local user reads a
// build in progress, nor the earlier artifact a recycled directory holds.
const (
	buildTopMode  fs.FileMode = 0o711
	buildDirMode  fs.FileMode = 0o700
	buildFileMode fs.FileMode = 0o600
)

// errNotRecyclable: a finished build directory is not exactly in the shape
// makeBuildDir leaves (an unexpected entry, a changed mode, extended
// attributes, a hard link...), so it is deleted instead of recycled.
var errNotRecyclable = errors.New("build directory not recyclable")

// recycle makes dir, a finished build directory in the trash, a spare: it
// empties its src, dest and home directories, checks its log, artifact
// and result files (the result file is back from the results directory
// once acknowledged, see resultStore.remove; else it is made anew), which
// keep the earlier build's content until written over, and renames it in
// as ready. It
// reports whether it did; when not (2×want spares are ready, or dir is not
// exactly as makeBuildDir made it), dir is left for deletion, possibly
// partly emptied.
//
// Why: creating an inode (mkdir, O_CREAT) and deleting one are the build
// server's main CPU cost per build on the project's ext4, whose allocator
// also scans past recently deleted inodes. Recycling keeps six of a build
// directory's seven inodes. It is safe because steps ran in src, dest and
// home only, every process of theirs is gone once the build finished (the
// sandbox's PID namespace or cgroup), and anything a step could leave
// behind that would outlive emptying (a mode, an ACL or other extended
// attribute, a hard link) makes recycle refuse.
//
// When src holds the source tree held (zero: none) and that tree is still
// kept in memory, src is kept instead of emptied if it is exactly as
// exported (gitmirror.Tree.Matches, every entry with one link, no extended
// attributes, owned by src's owner), and the spare is named
// "tree-<n>": take gives it to the next build of the same commit, which
// then neither deletes nor creates a file of its source tree.
func (b *buildDirs) recycle(dir string, held treeKey) bool {
	// Up to twice the spares fill keeps: a finished build directory
	// reaches the trash only after the next build took its spare and fill
	// replaced it, so with room for want only, nearly none would be
	// recycled. With the extra room, each finished directory becomes the
	// spare a later build takes, and fill has nothing left to make.
	b.mu.Lock()
	room := 2*b.want - len(b.ready)
	b.mu.Unlock()
	if room <= 0 {
		return false
	}
	var tree *gitmirror.Tree
	if held != (treeKey{}) && b.trees != nil {
		tree = b.trees.get(held.url, held.commit)
	}
	kept, err := cleanBuildDir(dir, tree)
	if err != nil {
		return false
	}
	name := "ready-"
	if kept {
		name = "tree-"
	}
	ready := filepath.Join(b.dir, name+strconv.FormatUint(b.seq.Add(1), 10))
	if err := os.Rename(dir, ready); err != nil {
		return false
	}
	b.mu.Lock()
	b.ready = append(b.ready, ready)
	if kept {
		b.holds[ready] = held
	}
	b.mu.Unlock()
	return true
}

// cleanBuildDir brings dir back to what makeBuildDir makes, or fails with
// errNotRecyclable (or the file system's error) if it cannot be trusted to.
// When tree is not nil and src holds exactly that tree, src is left as it
// is and kept reports so.
func cleanBuildDir(dir string, tree *gitmirror.Tree) (kept bool, err error) {
	if err := checkEntry(dir, true, buildTopMode); err != nil {
		return false, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	seen := 0
	hasResult := false
	for _, e := range entries {
		switch e.Name() {
		case srcName, destName, homeName, logName, artifactName:
			seen++
		case resultTmpName:
			hasResult = true
		default:
			return false, fmt.Errorf("%w: unexpected %s", errNotRecyclable, e.Name())
		}
	}
	if seen != 5 {
		return false, fmt.Errorf("%w: entries missing", errNotRecyclable)
	}
	// dest and home first: a hard link from there into src is gone then.
	for _, d := range []string{destName, homeName} {
		if err := emptyDir(filepath.Join(dir, d)); err != nil {
			return false, err
		}
	}
	src := filepath.Join(dir, srcName)
	if tree != nil {
		kept, err = pristine(src, tree)
		if err != nil {
			return false, err
		}
	}
	if !kept {
		if err := emptyDir(src); err != nil {
			return false, err
		}
	}
	// The log, artifact and result files keep their content: each is
	// written over from the start and cut to its length when used (see
	// createLog), which costs far less than cutting it to zero here.
	files := []string{logName, artifactName}
	if hasResult {
		files = append(files, resultTmpName)
	}
	for _, f := range files {
		if err := checkEntry(filepath.Join(dir, f), false, buildFileMode); err != nil {
			return false, err
		}
	}
	if !hasResult {
		fh, err := os.OpenFile(filepath.Join(dir, resultTmpName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, buildFileMode)
		if err != nil {
			return false, err
		}
		if err := fh.Close(); err != nil {
			return false, err
		}
	}
	return kept, nil
}

// pristine reports whether src (a build's source directory, checked like
// any directory of a build directory) holds exactly tree as exported: see
// gitmirror.Tree.Matches, and every entry has one link, no extended
// attributes and src's owner (this process's user, or the build user it
// was handed to, see handOver; the next build is handed it anew), so
// nothing a step did can reach the next build through it.
func pristine(src string, tree *gitmirror.Tree) (bool, error) {
	if err := checkEntry(src, true, buildDirMode); err != nil {
		return false, err
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return false, err
	}
	// What export creates in src is owned like src, which the build
	// server made and may have handed to the build's user.
	want, ok := ownerOf(fi)
	if !ok {
		return false, nil
	}
	return tree.Matches(src, func(p string, fi fs.FileInfo) bool {
		if !fi.IsDir() && hardLinked(fi) {
			return false
		}
		if o, ok := ownerOf(fi); !ok || o != want {
			return false
		}
		x, err := hasXattrs(p)
		return err == nil && !x
	})
}

// emptyDir deletes everything in d, after checking d is a directory as
// makeBuildDir made it.
func emptyDir(d string) error {
	if err := checkEntry(d, true, buildDirMode); err != nil {
		return err
	}
	f, err := os.Open(d)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := os.RemoveAll(filepath.Join(d, n)); err != nil {
			return err
		}
	}
	return nil
}

// checkEntry fails unless p (not followed) is a directory (dir) or a
// regular file with exactly mode perm, no special bits, one link and no
// extended attributes.
func checkEntry(p string, dir bool, perm fs.FileMode) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	want := perm
	if dir {
		want |= fs.ModeDir
	}
	if fi.Mode() != want {
		return fmt.Errorf("%w: %s has mode %v", errNotRecyclable, p, fi.Mode())
	}
	if !dir && hardLinked(fi) {
		return fmt.Errorf("%w: %s has other hard links", errNotRecyclable, p)
	}
	x, err := hasXattrs(p)
	if err != nil {
		return err
	}
	if x {
		return fmt.Errorf("%w: %s has extended attributes", errNotRecyclable, p)
	}
	return nil
}
