//go:build !linux

package worker

import "io/fs"

// hardLinked is not implemented off Linux: every file counts as linked.
func hardLinked(fs.FileInfo) bool { return true }

// hasXattrs is not implemented off Linux: every path counts as carrying
// extended attributes, so build directories are never recycled there.
func hasXattrs(string) (bool, error) { return true, nil }

// owner is the user and group owning a file.
type owner struct{ uid, gid uint32 }

// ownerOf is not implemented off Linux: no file has a known owner.
func ownerOf(fs.FileInfo) (owner, bool) { return owner{}, false }
