package gitmirror

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Matches reports whether dir holds exactly what [Tree.Extract] writes into
// an empty directory: the tree's entries and no others, each of the same
// type, regular files and directories with exactly the same mode bits and
// modification time, files with the same content, links with the same
// target. It never follows a link. For every entry that matches so far,
// ok (if not nil) is asked too, with the entry's path and Lstat result;
// false from it is a mismatch (the caller's own conditions, such as no
// extended attributes). Matches only reads; it returns an error only when
// dir itself cannot be read, and false on any difference. The caller must
// ensure nothing changes dir meanwhile.
//
// Why: a build directory whose source tree the build left untouched can be
// reused for another build of the same commit, which costs reading the tree
// instead of deleting and creating every file of it (creating an inode is
// the dear part on the project's disk).
func (t *Tree) Matches(dir string, ok func(path string, fi fs.FileInfo) bool) (bool, error) {
	if _, err := os.Lstat(dir); err != nil {
		return false, err
	}
	tr := tar.NewReader(bytes.NewReader(t.archive))
	dirs := map[string]bool{"": true}
	var buf []byte
	n := 0
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return false, nil
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if !fs.ValidPath(name) || name == "." {
			return false, nil
		}
		// Every parent must be a directory of the archive itself: one that
		// Extract made implicitly has no time to compare.
		parent := ""
		if i := strings.LastIndexByte(name, '/'); i >= 0 {
			parent = name[:i]
		}
		if !dirs[parent] {
			return false, nil
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		fi, err := os.Lstat(p)
		if err != nil {
			return false, nil
		}
		perm := fs.FileMode(hdr.Mode) & fs.ModePerm
		switch hdr.Typeflag {
		case tar.TypeDir:
			if fi.Mode() != fs.ModeDir|perm || !fi.ModTime().Equal(hdr.ModTime) {
				return false, nil
			}
			dirs[name] = true
		case tar.TypeReg:
			if fi.Mode() != perm || !fi.ModTime().Equal(hdr.ModTime) || fi.Size() != hdr.Size {
				return false, nil
			}
			same, err := sameContent(p, tr, hdr.Size, &buf)
			if err != nil || !same {
				return false, nil
			}
		case tar.TypeSymlink:
			if fi.Mode().Type() != fs.ModeSymlink {
				return false, nil
			}
			if target, err := os.Readlink(p); err != nil || target != hdr.Linkname {
				return false, nil
			}
		default:
			return false, nil
		}
		if ok != nil && !ok(p, fi) {
			return false, nil
		}
		n++
	}
	// Every entry of the tree is there as it should be; now nothing else
	// may be.
	found := 0
	errStop := errors.New("more entries than the tree has")
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		if found++; found > n {
			return errStop
		}
		return nil
	})
	if err != nil || found != n {
		return false, nil
	}
	return true, nil
}

// sameContent reports whether the file at p holds exactly the next size
// bytes of r. buf is reused between calls.
func sameContent(p string, r io.Reader, size int64, buf *[]byte) (bool, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	// Sized to need, and at least 2 bytes for the check past the end:
	// most source files are small.
	if need := 2 * max(1, min(size, 32<<10)); int64(len(*buf)) < need {
		*buf = make([]byte, need)
	}
	half := len(*buf) / 2
	a, b := (*buf)[:half], (*buf)[half:]
	for size > 0 {
		k := int(min(int64(half), size))
		if _, err := io.ReadFull(r, a[:k]); err != nil {
			return false, fmt.Errorf("reading archive: %w", err)
		}
		if _, err := io.ReadFull(f, b[:k]); err != nil {
			return false, nil
		}
		if !bytes.Equal(a[:k], b[:k]) {
			return false, nil
		}
		size -= int64(k)
	}
	// Nothing past the end: the size was checked, but the file may have
	// grown since.
	if m, _ := f.Read(b[:1]); m != 0 {
		return false, nil
	}
	return true, nil
}
