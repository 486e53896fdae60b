package worker

import (
	"io/fs"
	"syscall"

	"golang.org/x/sys/unix"
)

// hardLinked reports whether the file fi describes has more than one link.
func hardLinked(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return !ok || st.Nlink != 1
}

// owner is the user and group owning a file.
type owner struct{ uid, gid uint32 }

// ownerOf returns the owner of the file fi describes.
func ownerOf(fi fs.FileInfo) (owner, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return owner{}, false
	}
	return owner{st.Uid, st.Gid}, true
}

// hasXattrs reports whether path (not followed if a symbolic link) carries
// extended attributes, such as a default ACL a build step set on one of its
// directories.
func hasXattrs(path string) (bool, error) {
	n, err := unix.Llistxattr(path, nil)
	if err == unix.ENOTSUP {
		return false, nil
	}
	return n > 0, err
}
