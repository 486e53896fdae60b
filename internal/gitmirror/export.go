package gitmirror

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"
)

// maxSymlinkHops bounds symbolic-link chains followed while checking that a
// link stays inside the exported tree (the kernel's own limit is 40).
const maxSymlinkHops = 40

// entryKind is what Export created at a path.
type entryKind uint8

const (
	kindDir entryKind = iota + 1
	kindFile
	kindSymlink
)

// Export writes the tree of commit (a full commit id present in the mirror)
// into dst, an existing empty directory: regular files with their mode
// (0644 or 0755), directories, and symbolic links, each with the commit's
// time as modification time. It runs one "git archive" process and unpacks
// its tar stream itself. Entries that would leave dst fail with
// [ErrUnsafePath]: absolute or ".." names, anything below a symbolic link
// (nothing is ever written through a link), and links whose target is
// absolute or resolves, through any chain of links, outside dst. On error
// dst holds an unspecified part of the tree and should be removed; nothing
// outside dst is ever touched. A commit not in the mirror fails with
// [ErrUnknownRevision]. Export does not fetch; see [Mirror.EnsureCommit].
func (m *Mirror) Export(ctx context.Context, commit, dst string) error {
	_, err := m.export(ctx, commit, dst, 0)
	return err
}

// ExportTree is [Mirror.Export] that also returns the exported tree held in
// memory, when git archive's stream of it is at most keep bytes (else the
// tree is nil and only dst was written). [Tree.Extract] then writes the same
// tree again with no git process: a commit's tree never changes. The errors
// are Export's; on error the tree is nil.
func (m *Mirror) ExportTree(ctx context.Context, commit, dst string, keep int) (*Tree, error) {
	return m.export(ctx, commit, dst, keep)
}

// export is Export, keeping the archive when it is at most keep bytes.
func (m *Mirror) export(ctx context.Context, commit, dst string, keep int) (*Tree, error) {
	if err := checkCommitID("commit", commit); err != nil {
		return nil, err
	}
	root, err := openEmptyRoot(dst)
	if err != nil {
		return nil, err
	}
	defer root.Close()

	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	args := []string{"-c", "tar.umask=022", "archive", "--format=tar", "--end-of-options", commit}
	cmd, stderr := command(gctx, m.dir, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("gitmirror: export: %w", err)
	}
	var in io.Reader = stdout
	var kept *keepBuffer
	if keep > 0 {
		kept = &keepBuffer{max: keep}
		in = io.TeeReader(stdout, kept)
	}
	x := newExtractor(root)
	xerr := x.extract(tar.NewReader(bufio.NewReaderSize(in, 64<<10)))
	if xerr == nil && kept != nil && !kept.over {
		// The tar reader stops at the end marker; the record padding git
		// writes after it belongs to the stream kept. Bounded by keep.
		_, xerr = io.Copy(io.Discard, in)
	}
	if xerr != nil {
		cancel() // stop git; its exit status no longer matters
		_ = cmd.Wait()
		switch {
		case errors.Is(xerr, ErrUnsafePath):
		case ctx.Err() != nil:
			return nil, fmt.Errorf("gitmirror: export %s: %w", commit, ctx.Err())
		case stderr.buf.Len() > 0:
			return nil, fmt.Errorf("gitmirror: export %s: %w (git: %s)", commit, xerr, strings.TrimSpace(stderr.buf.String()))
		}
		return nil, fmt.Errorf("gitmirror: export %s: %w", commit, xerr)
	}
	if werr := cmd.Wait(); werr != nil {
		if ctx.Err() == nil && !m.HasCommit(ctx, commit) {
			return nil, fmt.Errorf("%w: commit %s is not in the mirror", ErrUnknownRevision, commit)
		}
		return nil, fmt.Errorf("gitmirror: export %s: %w", commit, gitErr(gctx, args, werr, stderr))
	}
	if kept == nil || kept.over {
		return nil, nil
	}
	// A copy of exactly its size: the tree may be kept for long.
	return &Tree{commit: commit, archive: bytes.Clone(kept.buf)}, nil
}

// Tree is the tree of one commit held in memory (git archive's tar stream,
// as [Mirror.ExportTree] read it), so that it can be written into more
// directories without git. A Tree is immutable and safe for concurrent use.
type Tree struct {
	commit  string
	archive []byte
}

// Commit returns the full id of the commit whose tree t is.
func (t *Tree) Commit() string { return t.commit }

// Size returns the bytes t holds.
func (t *Tree) Size() int { return len(t.archive) }

// Extract writes t into dst, an existing empty directory, exactly as
// [Mirror.Export] would, with the same checks ([ErrUnsafePath]) and the same
// contract on error. It runs no process and reads nothing but t.
func (t *Tree) Extract(ctx context.Context, dst string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("gitmirror: export %s: %w", t.commit, err)
	}
	root, err := openEmptyRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := newExtractor(root).extract(tar.NewReader(bytes.NewReader(t.archive))); err != nil {
		return fmt.Errorf("gitmirror: export %s: %w", t.commit, err)
	}
	return nil
}

// keepBuffer keeps what is written to it up to max bytes; past that it
// drops everything and sets over. Writes never fail.
type keepBuffer struct {
	max  int
	buf  []byte
	over bool
}

func (k *keepBuffer) Write(p []byte) (int, error) {
	switch {
	case k.over:
	case len(k.buf)+len(p) > k.max:
		k.over, k.buf = true, nil
	default:
		k.buf = append(k.buf, p...)
	}
	return len(p), nil
}

// openEmptyRoot opens dst, which must be an empty directory.
func openEmptyRoot(dst string) (*os.Root, error) {
	root, err := os.OpenRoot(dst)
	if err != nil {
		return nil, fmt.Errorf("gitmirror: export: %w", err)
	}
	if err := checkEmpty(root); err != nil {
		root.Close()
		return nil, fmt.Errorf("gitmirror: export into %s: %w", dst, err)
	}
	return root, nil
}

// checkEmpty fails unless the root directory has no entries.
func checkEmpty(root *os.Root) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if err != nil && err != io.EOF {
		return err
	}
	if len(names) > 0 {
		return errors.New("destination directory is not empty")
	}
	return nil
}

// extractor unpacks one tar stream under root. kinds records every entry it
// created, so it knows without a system call that a parent is a real
// directory; links records symbolic-link targets for the final check.
//
// Files are created relative to an open handle of their directory (one
// system call each instead of a walk from the root): stack holds the open
// directories from the root down to the current one. git archive lists a
// directory's entries together, so the stack moves like a depth-first walk
// and holds at most one handle per level.
type extractor struct {
	root     *os.Root
	kinds    map[string]entryKind
	links    map[string]string
	dirTimes map[string]time.Time
	stack    []openDir
	buf      []byte
}

func newExtractor(root *os.Root) *extractor {
	return &extractor{root: root, kinds: make(map[string]entryKind), links: make(map[string]string)}
}

// openDir is one open directory of the extractor's stack; name is its path
// from the root ("" for the root itself).
type openDir struct {
	name string
	root *os.Root
}

func (x *extractor) extract(tr *tar.Reader) (err error) {
	x.buf = make([]byte, 32<<10)
	x.dirTimes = make(map[string]time.Time)
	x.stack = []openDir{{"", x.root}}
	defer func() {
		if perr := x.popTo(0); err == nil {
			err = perr
		}
	}()
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading archive: %w", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // git's commit-id comment
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
	for name := range x.links {
		if err := x.checkLink(name); err != nil {
			return err
		}
	}
	return nil
}

// entry creates one archive entry.
func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	name := strings.TrimSuffix(hdr.Name, "/")
	if !fs.ValidPath(name) || name == "." {
		return fmt.Errorf("%w: entry %q", ErrUnsafePath, hdr.Name)
	}
	if _, dup := x.kinds[name]; dup {
		return fmt.Errorf("%w: entry %q appears twice", ErrUnsafePath, name)
	}
	dir, base := "", name
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		dir, base = name[:i], name[i+1:]
	}
	d, err := x.cd(dir)
	if err != nil {
		return err
	}
	perm := fs.FileMode(hdr.Mode) & fs.ModePerm
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := x.mkdir(d, name, base, perm); err != nil {
			return err
		}
		x.dirTimes[name] = hdr.ModTime
		return d.Chtimes(base, hdr.ModTime, hdr.ModTime)
	case tar.TypeReg:
		x.kinds[name] = kindFile
		f, err := d.OpenFile(base, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err != nil {
			return err
		}
		_, err = io.CopyBuffer(f, r, x.buf)
		if err == nil {
			err = f.Chmod(perm) // exactly perm, whatever the process umask
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		return d.Chtimes(base, hdr.ModTime, hdr.ModTime)
	case tar.TypeSymlink:
		if hdr.Linkname == "" || path.IsAbs(hdr.Linkname) {
			return fmt.Errorf("%w: symbolic link %q points to %q", ErrUnsafePath, name, hdr.Linkname)
		}
		x.kinds[name] = kindSymlink
		x.links[name] = hdr.Linkname
		return d.Symlink(hdr.Linkname, base)
	default:
		return fmt.Errorf("%w: entry %q has unsupported type %q", ErrUnsafePath, name, hdr.Typeflag)
	}
}

// mkdir creates directory base (at path name) in d with exactly perm.
func (x *extractor) mkdir(d *os.Root, name, base string, perm fs.FileMode) error {
	x.kinds[name] = kindDir
	if err := d.Mkdir(base, perm); err != nil {
		return err
	}
	return d.Chmod(base, perm) // exactly perm, whatever the process umask
}

// cd returns the open directory dir ("" for the root), creating missing
// directories on the way. Every component must be a directory this
// extractor created; a link or a file is refused, so nothing is ever
// written through a symbolic link.
func (x *extractor) cd(dir string) (*os.Root, error) {
	// Pop to the deepest open directory that contains dir.
	keep := len(x.stack) - 1
	for keep > 0 {
		n := x.stack[keep].name
		if dir == n || strings.HasPrefix(dir, n+"/") {
			break
		}
		keep--
	}
	if err := x.popTo(keep + 1); err != nil {
		return nil, err
	}
	for cur := x.stack[len(x.stack)-1]; cur.name != dir; cur = x.stack[len(x.stack)-1] {
		rest := dir
		if cur.name != "" {
			rest = dir[len(cur.name)+1:]
		}
		base, _, _ := strings.Cut(rest, "/")
		name := base
		if cur.name != "" {
			name = cur.name + "/" + base
		}
		switch x.kinds[name] {
		case kindDir:
		case 0:
			if err := x.mkdir(cur.root, name, base, 0o755); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: %q lies below %q, which is not a directory", ErrUnsafePath, dir, name)
		}
		sub, err := cur.root.OpenRoot(base)
		if err != nil {
			return nil, err
		}
		x.stack = append(x.stack, openDir{name, sub})
	}
	return x.stack[len(x.stack)-1].root, nil
}

// popTo closes open directories until n remain, setting the modification
// time of each one the archive gave a time to: its entries are complete.
func (x *extractor) popTo(n int) error {
	var first error
	for len(x.stack) > max(n, 1) {
		top := x.stack[len(x.stack)-1]
		x.stack = x.stack[:len(x.stack)-1]
		first = errors.Join(first, top.root.Close())
		if t, ok := x.dirTimes[top.name]; ok {
			parent := x.stack[len(x.stack)-1].root
			first = errors.Join(first, parent.Chtimes(path.Base(top.name), t, t))
		}
	}
	return first
}

// checkLink follows the symbolic link at name through the extracted tree,
// as the kernel would, and fails if the path ever climbs above the root.
// Components that do not exist are taken literally (they cannot be links).
func (x *extractor) checkLink(name string) error {
	cur := strings.Split(path.Dir(name), "/")
	if cur[0] == "." {
		cur = cur[:0]
	}
	rest := strings.Split(x.links[name], "/")
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return fmt.Errorf("%w: symbolic link %q points to %q, outside the tree", ErrUnsafePath, name, x.links[name])
			}
			cur = cur[:len(cur)-1]
			continue
		}
		p := strings.Join(append(cur, c), "/")
		if x.kinds[p] != kindSymlink {
			cur = append(cur, c)
			continue
		}
		if hops++; hops > maxSymlinkHops {
			return fmt.Errorf("%w: symbolic link %q: too many levels of links", ErrUnsafePath, name)
		}
		rest = append(strings.Split(x.links[p], "/"), rest...)
	}
	return nil
}
