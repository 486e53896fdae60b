package worker

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// packEntry is one file, directory or symlink going into an artifact.
type packEntry struct {
	name string // slash-separated path inside the archive; directories end in '/'
	path string // path on disk
	info fs.FileInfo
}

// collectGlobs resolves recipe artifact patterns relative to root. Every
// pattern must match something; a match is taken as it is (a symlink stays a
// symlink, a directory brings its whole tree), and nothing outside root is
// ever read, also not through a symlinked parent directory. Failures that are
// the build's fault are *buildError.
func collectGlobs(root string, patterns []string) ([]packEntry, error) {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("resolving build directory: %w", err)
	}
	seen := map[string]bool{}
	var out []packEntry
	for _, pat := range patterns {
		clean := filepath.Clean(pat)
		if pat == "" || filepath.IsAbs(pat) || clean == ".." || strings.HasPrefix(clean, "../") {
			return nil, &buildError{fmt.Sprintf("artifact %s is not a path inside the build directory", pat)}
		}
		matches, err := filepath.Glob(filepath.Join(root, clean))
		if err != nil {
			return nil, &buildError{fmt.Sprintf("artifact pattern %s is malformed: %v", pat, err)}
		}
		if len(matches) == 0 {
			return nil, &buildError{fmt.Sprintf("artifact %s not produced", pat)}
		}
		for _, m := range matches {
			rel, err := filepath.Rel(root, m)
			if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
				return nil, &buildError{fmt.Sprintf("artifact %s resolves outside the build directory", pat)}
			}
			parent, err := filepath.EvalSymlinks(filepath.Dir(m))
			if err != nil {
				return nil, fmt.Errorf("resolving artifact %s: %w", rel, err)
			}
			if parent != realRoot && !strings.HasPrefix(parent, realRoot+string(filepath.Separator)) {
				return nil, &buildError{fmt.Sprintf("artifact %s is outside the build directory (through a symlink)", rel)}
			}
			if err := addTree(m, filepath.ToSlash(rel), seen, &out); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// collectTree takes everything under root (the install tree), root excluded.
func collectTree(root string) ([]packEntry, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("reading install tree: %w", err)
	}
	seen := map[string]bool{}
	var out []packEntry
	for _, e := range entries {
		if err := addTree(filepath.Join(root, e.Name()), e.Name(), seen, &out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// addTree adds path (named name in the archive) and, if it is a directory,
// everything below it, without following symlinks.
func addTree(path, name string, seen map[string]bool, out *[]packEntry) error {
	return filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("reading artifact %s: %w", name, err)
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("reading artifact %s: %w", name, err)
		}
		rel, _ := filepath.Rel(path, p)
		n := name
		if rel != "." {
			n = name + "/" + filepath.ToSlash(rel)
		}
		switch mode := info.Mode(); {
		case mode.IsDir():
			n += "/"
		case mode.IsRegular(), mode&fs.ModeSymlink != 0:
		default:
			return &buildError{fmt.Sprintf("artifact %s is a %v, not a file, directory or symlink", n, mode.Type())}
		}
		if !seen[n] {
			seen[n] = true
			*out = append(*out, packEntry{name: n, path: p, info: info})
		}
		return nil
	})
}

// errTooLarge is returned by the counting writer once the cap is passed.
var errTooLarge = errors.New("artifact too large")

// capWriter counts bytes and refuses to go past max.
type capWriter struct {
	w   io.Writer
	n   int64
	max int64
}

func (c *capWriter) Write(p []byte) (int, error) {
	if c.n+int64(len(p)) > c.max {
		return 0, errTooLarge
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// gzipPool reuses compressors: a new one allocates about 1 MiB, more than
// the whole no-op build otherwise does. BestSpeed: the volunteer's CPU time
// matters more than a few percent of size.
var gzipPool = sync.Pool{New: func() any {
	gz, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return gz
}}

// pack writes entries as a deterministic tar.gz to out, so that identical
// trees give identical bytes whoever built them and whenever:
//
//   - entries sorted by name (not in the file system's order);
//   - every entry's time is mtime, the commit's time (SOURCE_DATE_EPOCH),
//     or 1970 when there is none: a clamp to SOURCE_DATE_EPOCH that
//     also raises older times, so that no time of the volunteer's files
//     (a file copied with cp -p) gets in;
//   - owner 0/0 without user or group names, no access or change
//     times (a USTAR header; PAX records only for a name too long for
//     one, the same for everyone);
//   - modes normalized: 0755 for directories, symlinks 0777, 0755 for
//     files with any execute bit, 0644 otherwise (no setuid, setgid,
//     sticky or group/other differences of the volunteer's umask);
//   - gzip at one fixed level with no name or time in its header.
//
// It streams through the file while hashing; memory does not grow with
// the artifact. An artifact over max bytes is a *buildError.
func pack(entries []packEntry, out string, max int64, mtime time.Time) (*kilnv1.Artifact, error) {
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	// Not O_TRUNC: out may hold an earlier artifact (a recycled build
	// directory); it is written over and cut to size at the end, which
	// costs far less on ext4 than cutting to zero first (see writeExisting).
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating artifact file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	cw := &capWriter{w: io.MultiWriter(f, h), max: max}
	gz := gzipPool.Get().(*gzip.Writer)
	defer gzipPool.Put(gz)
	gz.Reset(cw)
	tw := tar.NewWriter(gz)
	var files []string
	for _, e := range entries {
		if err := writeEntry(tw, e, mtime); err != nil {
			if errors.Is(err, errTooLarge) {
				return nil, &buildError{fmt.Sprintf("artifact exceeds the build server's limit of %d bytes", max)}
			}
			return nil, err
		}
		if !strings.HasSuffix(e.name, "/") {
			files = append(files, e.name)
		}
	}
	err = tw.Close()
	if err == nil {
		err = gz.Close()
	}
	if errors.Is(err, errTooLarge) {
		return nil, &buildError{fmt.Sprintf("artifact exceeds the build server's limit of %d bytes", max)}
	}
	if err == nil {
		err = f.Truncate(cw.n)
	}
	if err != nil {
		return nil, fmt.Errorf("writing artifact: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("writing artifact: %w", err)
	}
	return &kilnv1.Artifact{Sha256: hex.EncodeToString(h.Sum(nil)), Size: uint64(cw.n), Files: files}, nil
}

// writeEntry writes one entry's header, with time mtime, and, for a
// file, its content.
func writeEntry(tw *tar.Writer, e packEntry, mtime time.Time) error {
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	hdr := &tar.Header{Name: e.name, ModTime: mtime, Mode: 0o644}
	mode := e.info.Mode()
	switch {
	case mode.IsDir():
		hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(e.path)
		if err != nil {
			return fmt.Errorf("reading symlink %s: %w", e.name, err)
		}
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, target, 0o777
	default:
		hdr.Typeflag, hdr.Size = tar.TypeReg, e.info.Size()
		if mode&0o111 != 0 {
			hdr.Mode = 0o755
		}
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing artifact %s: %w", e.name, err)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	// O_NOFOLLOW: a file swapped for a symlink since the walk is not followed.
	src, err := os.OpenFile(e.path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("reading artifact %s: %w", e.name, err)
	}
	defer src.Close()
	if _, err := io.CopyN(tw, tamper(src), hdr.Size); err != nil {
		return fmt.Errorf("reading artifact %s (did it change while packing?): %w", e.name, err)
	}
	return nil
}

// unpackedCap bounds the bytes an artifact's files hold before
// compression: the disk cap when there is one, else 16 times the artifact
// cap. Allocated blocks (what the disk cap counts while steps run) do not
// bound it: a sparse file of a terabyte holds none, and packing it would
// keep the build server's CPU busy for hours after the build's time limit.
func unpackedCap(maxDisk, maxArtifact int64) int64 {
	if maxDisk > 0 {
		return maxDisk
	}
	return 16 * maxArtifact
}

// checkUnpackedSize fails the build when the regular files of entries hold
// more than limit bytes (their apparent size).
func checkUnpackedSize(entries []packEntry, limit int64) error {
	var total int64
	for _, e := range entries {
		if e.info.Mode().IsRegular() {
			total += e.info.Size()
			if total > limit {
				return &buildError{fmt.Sprintf("artifact's files hold more than %d bytes before compression (sparse files count at their size); not packed", limit)}
			}
		}
	}
	return nil
}
