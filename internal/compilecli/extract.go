package compilecli

import (
	"archive/tar"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// entry is one archive member accepted by the safety pass.
type entry struct {
	name     string // cleaned, relative, slash-separated
	typ      byte   // tar.TypeReg, tar.TypeDir or tar.TypeSymlink
	size     int64
	mode     fs.FileMode
	linkname string
}

// Extract unpacks the gzip-compressed tar archive r into dir, creating dir
// if needed, and returns the non-directory entries extracted (relative,
// slash-separated, archive order).
//
// The archive is checked completely before anything is written: entries must
// be regular files, directories or symbolic links with relative names free of
// "..", no entry may lie below a symbolic link of the archive or repeat a
// name, symbolic links must be relative and stay inside dir, and the totals
// must respect lim. Any violation wraps ErrUnsafeArchive and leaves dir as it
// was.
//
// Extraction never follows a symbolic link: a parent that is not a real
// directory is an error. Existing directories are reused; an existing file or
// symlink of the same name is replaced by a rename, so downloading into the
// same directory twice works. When extraction fails half-way, the paths it
// created are removed again (files it replaced stay replaced). Permission
// bits are exactly 0755 or 0644, by the executable bit.
func Extract(r io.ReadSeeker, dir string, lim Limits) ([]string, error) {
	plan, err := planExtract(r, lim)
	if err != nil {
		return nil, err
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewinding artifact: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("download directory: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("download directory: %w", err)
	}
	defer root.Close()

	var created []string
	undo := func() {
		for i := len(created) - 1; i >= 0; i-- {
			root.Remove(created[i])
		}
	}
	files, err := writeEntries(r, root, plan, &created)
	if err != nil {
		undo()
		return nil, err
	}
	return files, nil
}

// planExtract is the safety pass: it reads the whole archive and returns its
// entries or an error wrapping ErrUnsafeArchive.
func planExtract(r io.Reader, lim Limits) ([]entry, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: not gzip: %v", ErrUnsafeArchive, err)
	}
	tr := tar.NewReader(zr)
	var (
		plan  []entry
		kinds = map[string]byte{} // name -> type, including implied parent dirs
		total int64
	)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: reading tar: %v", ErrUnsafeArchive, err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name, err := cleanName(h.Name)
		if err != nil {
			return nil, err
		}
		if name == "." {
			if h.Typeflag != tar.TypeDir {
				return nil, fmt.Errorf("%w: entry %q names the directory itself", ErrUnsafeArchive, h.Name)
			}
			continue
		}
		if len(plan) >= lim.MaxEntries {
			return nil, fmt.Errorf("%w: more than %d entries", ErrUnsafeArchive, lim.MaxEntries)
		}
		e := entry{name: name, size: h.Size, linkname: h.Linkname}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			e.typ = tar.TypeReg
			e.mode = 0o644
			if h.Mode&0o111 != 0 {
				e.mode = 0o755
			}
			if h.Size < 0 || h.Size > lim.MaxExtractBytes-total {
				return nil, fmt.Errorf("%w: contents exceed %d bytes", ErrUnsafeArchive, lim.MaxExtractBytes)
			}
			total += h.Size
		case tar.TypeDir:
			e.typ = tar.TypeDir
			e.mode = 0o755
		case tar.TypeSymlink:
			e.typ = tar.TypeSymlink
			if err := checkLink(name, h.Linkname); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: entry %q has type %q; only regular files, directories and symlinks are allowed", ErrUnsafeArchive, h.Name, h.Typeflag)
		}
		// Every parent must be a directory (given or implied), never a
		// symlink or a file of the archive.
		for p := path.Dir(name); p != "."; p = path.Dir(p) {
			switch k, seen := kinds[p]; {
			case !seen:
				kinds[p] = tar.TypeDir
			case k == tar.TypeSymlink:
				return nil, fmt.Errorf("%w: entry %q lies below the symlink %q", ErrUnsafeArchive, h.Name, p)
			case k != tar.TypeDir:
				return nil, fmt.Errorf("%w: entry %q lies below the file %q", ErrUnsafeArchive, h.Name, p)
			}
		}
		if k, seen := kinds[name]; seen && !(k == tar.TypeDir && e.typ == tar.TypeDir) {
			return nil, fmt.Errorf("%w: entry %q appears twice", ErrUnsafeArchive, h.Name)
		}
		kinds[name] = e.typ
		plan = append(plan, e)
	}
	if err := zr.Close(); err != nil {
		return nil, fmt.Errorf("%w: gzip: %v", ErrUnsafeArchive, err)
	}
	if err := checkLinkChains(plan); err != nil {
		return nil, err
	}
	return plan, nil
}

// checkLinkChains refuses a symbolic link that, followed through the other
// links of the archive as the kernel would, leads outside the directory
// (checkLink judges each link alone, on its text: a/h/esc -> p/../../etc
// looks inside, but with a/h/p -> ../.. it reaches /etc), and chains of
// more than maxLinkHops links.
func checkLinkChains(plan []entry) error {
	links := map[string]string{}
	for _, e := range plan {
		if e.typ == tar.TypeSymlink {
			links[e.name] = e.linkname
		}
	}
	for name, target := range links {
		if _, err := resolveInside(path.Dir(name), target, links, 0); err != nil {
			return fmt.Errorf("%w: symlink %q: %v", ErrUnsafeArchive, name, err)
		}
	}
	return nil
}

// maxLinkHops bounds the links one resolution follows, as the kernel's
// limit of 40 does.
const maxLinkHops = 40

// resolveInside resolves target relative to the directory dir ("." for
// the top), expanding the archive's links on the way, and returns the
// resulting path inside the directory, or an error when a step climbs
// above it.
func resolveInside(dir, target string, links map[string]string, hops int) (string, error) {
	var cur []string
	if dir != "." {
		cur = strings.Split(dir, "/")
	}
	for _, part := range strings.Split(target, "/") {
		switch part {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return "", errors.New("leads outside the directory")
			}
			cur = cur[:len(cur)-1]
			continue
		}
		cur = append(cur, part)
		here := strings.Join(cur, "/")
		if t, ok := links[here]; ok {
			if hops++; hops > maxLinkHops {
				return "", errors.New("too many levels of links")
			}
			if strings.HasPrefix(t, "/") {
				return "", errors.New("leads through an absolute link")
			}
			resolved, err := resolveInside(path.Dir(here), t, links, hops)
			if err != nil {
				return "", err
			}
			cur = nil
			if resolved != "." {
				cur = strings.Split(resolved, "/")
			}
		}
	}
	if len(cur) == 0 {
		return ".", nil
	}
	return strings.Join(cur, "/"), nil
}

// cleanName returns the slash-separated relative form of a tar entry name,
// or an error wrapping ErrUnsafeArchive for absolute names, ".." components
// and control characters.
func cleanName(raw string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: entry %q %s", ErrUnsafeArchive, raw, why)
	}
	if raw == "" {
		return bad("has no name")
	}
	if strings.HasPrefix(raw, "/") {
		return bad("is absolute")
	}
	for _, c := range raw {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return bad("contains a control character or backslash")
		}
	}
	for _, part := range strings.Split(raw, "/") {
		if part == ".." {
			return bad("contains ..")
		}
	}
	return path.Clean(raw), nil
}

// checkLink refuses symbolic links that are absolute or point outside the
// extraction directory.
func checkLink(name, target string) error {
	if target == "" || strings.HasPrefix(target, "/") {
		return fmt.Errorf("%w: symlink %q points to %q; only relative targets are allowed", ErrUnsafeArchive, name, target)
	}
	resolved := path.Join(path.Dir(name), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("%w: symlink %q points outside the directory (%q)", ErrUnsafeArchive, name, target)
	}
	return nil
}

// writeEntries is the extraction pass over an archive planExtract accepted.
// Each path it creates is appended to created, in creation order.
func writeEntries(r io.Reader, root *os.Root, plan []entry, created *[]string) ([]string, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: not gzip: %v", ErrUnsafeArchive, err)
	}
	tr := tar.NewReader(zr)
	var files []string
	i := 0
	for i < len(plan) {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("%w: archive changed between passes: %v", ErrUnsafeArchive, err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		if name, _ := cleanName(h.Name); name == "." {
			continue
		}
		e := plan[i]
		i++
		if err := ensureParents(root, e.name, created); err != nil {
			return nil, err
		}
		switch e.typ {
		case tar.TypeDir:
			if err := ensureDir(root, e.name, created); err != nil {
				return nil, err
			}
			continue
		case tar.TypeSymlink, tar.TypeReg:
			if err := place(root, e, tr, created); err != nil {
				return nil, err
			}
		}
		files = append(files, e.name)
	}
	return files, nil
}

// place writes a file or symlink entry under a temporary name beside its
// destination and renames it into place, so an existing file or symlink of
// the same name is replaced (never followed) and a failure leaves no half
// file. A directory in the way is an error. A path that did not exist before
// is appended to created.
func place(root *os.Root, e entry, r io.Reader, created *[]string) error {
	fi, err := root.Lstat(e.name)
	existed := err == nil
	switch {
	case existed && fi.IsDir():
		return fmt.Errorf("extracting %s: a directory is in the way", e.name)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("extracting %s: %w", e.name, err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := path.Join(path.Dir(e.name), ".startcompile-"+hex.EncodeToString(rnd[:])+"-"+path.Base(e.name))
	if e.typ == tar.TypeSymlink {
		if err := root.Symlink(e.linkname, tmp); err != nil {
			return fmt.Errorf("extracting %s: %w", e.name, err)
		}
	} else {
		f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, e.mode)
		if err != nil {
			return fmt.Errorf("extracting %s: %w", e.name, err)
		}
		n, err := io.Copy(f, r)
		if err == nil && n != e.size {
			err = fmt.Errorf("%w: %d bytes, header says %d", ErrUnsafeArchive, n, e.size)
		}
		if err == nil {
			// OpenFile's mode is reduced by the umask; fchmod on the open
			// file sets exactly 0644 or 0755.
			err = f.Chmod(e.mode)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			root.Remove(tmp)
			return fmt.Errorf("extracting %s: %w", e.name, err)
		}
	}
	if err := root.Rename(tmp, e.name); err != nil {
		root.Remove(tmp)
		return fmt.Errorf("extracting %s: %w", e.name, err)
	}
	if !existed {
		*created = append(*created, e.name)
	}
	return nil
}

// ensureParents makes sure every parent of name is a real directory inside
// root, creating missing ones; a symlink or file in the way is an error.
func ensureParents(root *os.Root, name string, created *[]string) error {
	var parents []string
	for p := path.Dir(name); p != "."; p = path.Dir(p) {
		parents = append(parents, p)
	}
	for i := len(parents) - 1; i >= 0; i-- {
		if err := ensureDir(root, parents[i], created); err != nil {
			return err
		}
	}
	return nil
}

// ensureDir creates directory name in root unless a real directory is
// already there.
func ensureDir(root *os.Root, name string, created *[]string) error {
	fi, err := root.Lstat(name)
	switch {
	case err == nil && fi.Mode().IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("extracting %s: %w: a non-directory is in the way", name, fs.ErrExist)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("extracting %s: %w", name, err)
	}
	if err := root.Mkdir(name, 0o755); err != nil {
		return fmt.Errorf("extracting %s: %w", name, err)
	}
	*created = append(*created, name)
	return nil
}
