// Package artifactdiff compares two artifacts file by file: given two tar
// archives (gzip-compressed or not), it says which files differ, and in
// what (content, mode, type, link target, owner, time), and which are in
// only one of them. It is what tells why two volunteers' builds of one
// source did not make the same bytes (a "not reproducible" report, the
// acceptance suite's reproducibility mode).
//
// Either archive may come from a hostile volunteer. Diff never writes to
// disk and never follows a name anywhere; it streams each archive once,
// hashing file contents (memory does not grow with a file's size), and
// bounds what it keeps and reads ([Limits]): entry count, name lengths,
// the bytes of the index it keeps, and the bytes it decompresses (a gzip
// bomb or a sparse entry claiming a terabyte stops at the limit). A name
// that leaves the archive ("../x", "/etc/passwd") or repeats is refused
// with [ErrUnsafe]: Kiln's own packing never writes one.
package artifactdiff

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"
)

// ErrUnsafe is wrapped by Diff's error when an archive holds an entry
// name that is absolute, leaves the archive through "..", is empty, or
// names the same path twice.
var ErrUnsafe = errors.New("artifactdiff: unsafe archive")

// ErrLimit is wrapped by Diff's error when an archive exceeds one of the
// Limits; the error says which.
var ErrLimit = errors.New("artifactdiff: archive exceeds a limit")

// ErrMalformed is wrapped by Diff's error when an archive is not a tar
// (optionally gzip-compressed) archive, or is cut short.
var ErrMalformed = errors.New("artifactdiff: malformed archive")

// Limits bound what Diff reads and keeps for each archive. A zero field
// takes DefaultLimits' value.
type Limits struct {
	// MaxEntries bounds the number of entries of one archive.
	MaxEntries int
	// MaxNameBytes bounds one entry's name and link target.
	MaxNameBytes int
	// MaxIndexBytes bounds the names and link targets Diff keeps for one
	// archive, in bytes: with MaxEntries, what bounds its memory.
	MaxIndexBytes int64
	// MaxBytes bounds the bytes Diff reads from one archive after
	// decompression: tar headers plus the entries' contents (a sparse
	// entry counts at its full size).
	MaxBytes int64
	// MaxDifferences bounds the differences reported; Report.Truncated
	// says when there were more.
	MaxDifferences int
}

// DefaultLimits fit any artifact a build server packs (see the
// buildserver's --max-artifact-bytes) and keep Diff's memory under about
// 100 MiB in the worst case.
var DefaultLimits = Limits{
	MaxEntries:     200_000,
	MaxNameBytes:   4096,
	MaxIndexBytes:  32 << 20,
	MaxBytes:       16 << 30,
	MaxDifferences: 1000,
}

func (l Limits) orDefault() Limits {
	d := DefaultLimits
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	if l.MaxNameBytes <= 0 {
		l.MaxNameBytes = d.MaxNameBytes
	}
	if l.MaxIndexBytes <= 0 {
		l.MaxIndexBytes = d.MaxIndexBytes
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxDifferences <= 0 {
		l.MaxDifferences = d.MaxDifferences
	}
	return l
}

// Entry is what Diff knows of one archive member.
type Entry struct {
	// Type is the tar type flag: '0' file, '5' directory, '2' symlink,
	// '1' hard link, others as tar defines them.
	Type byte
	// Mode is the header's permission bits (and setuid, setgid, sticky).
	Mode int64
	// Size is the content's size; 0 for all but regular files.
	Size int64
	// SHA256 is the content's hash, hex; "" for all but regular files.
	SHA256 string
	// Link is a symlink's or hard link's target.
	Link string
	// UID, GID, Uname, Gname are the header's owner.
	UID, GID     int
	Uname, Gname string
	// ModTime is the header's modification time.
	ModTime time.Time
}

// Field names one property of an entry that differs.
type Field string

// The fields a Difference lists, in the order it lists them.
const (
	FieldType    Field = "type"
	FieldContent Field = "content"
	FieldLink    Field = "link"
	FieldMode    Field = "mode"
	FieldOwner   Field = "owner"
	FieldModTime Field = "mtime"
)

// Difference is one path whose entries differ, or that only one archive
// has (then A or B is nil).
type Difference struct {
	Path string
	// Fields says what differs when both archives have Path.
	Fields []Field
	A, B   *Entry
}

// String is a one-line description, the path quoted (it may hold any
// byte but NUL).
func (d Difference) String() string {
	switch {
	case d.A == nil:
		return fmt.Sprintf("%q: only in b", d.Path)
	case d.B == nil:
		return fmt.Sprintf("%q: only in a", d.Path)
	}
	parts := make([]string, len(d.Fields))
	for i, f := range d.Fields {
		switch f {
		case FieldContent:
			parts[i] = fmt.Sprintf("content (%d bytes %.12s…, %d bytes %.12s…)", d.A.Size, d.A.SHA256, d.B.Size, d.B.SHA256)
		case FieldMode:
			parts[i] = fmt.Sprintf("mode (%04o, %04o)", d.A.Mode, d.B.Mode)
		case FieldLink:
			parts[i] = fmt.Sprintf("link (%q, %q)", d.A.Link, d.B.Link)
		case FieldType:
			parts[i] = fmt.Sprintf("type (%q, %q)", d.A.Type, d.B.Type)
		case FieldOwner:
			parts[i] = fmt.Sprintf("owner (%d:%d %s:%s, %d:%d %s:%s)", d.A.UID, d.A.GID, d.A.Uname, d.A.Gname, d.B.UID, d.B.GID, d.B.Uname, d.B.Gname)
		case FieldModTime:
			parts[i] = fmt.Sprintf("mtime (%d, %d)", d.A.ModTime.Unix(), d.B.ModTime.Unix())
		default:
			parts[i] = string(f)
		}
	}
	return fmt.Sprintf("%q: %s differ", d.Path, strings.Join(parts, ", "))
}

// Report is what Diff found.
type Report struct {
	// Differences are sorted by path; at most Limits.MaxDifferences.
	Differences []Difference
	// Truncated: there were more differences than Differences holds.
	Truncated bool
	// OrderDiffers: the archives hold their entries in different orders
	// (a packer that does not sort its entries).
	OrderDiffers bool
	// EntriesA and EntriesB count each archive's entries.
	EntriesA, EntriesB int
}

// Same reports whether the archives hold the same entries with the same
// contents and metadata in the same order. Two archives can be Same and
// still differ in their bytes: in compression, tar header format or
// padding.
func (r Report) Same() bool {
	return len(r.Differences) == 0 && !r.Truncated && !r.OrderDiffers
}

// Diff reads the archives a and b to their end (each a tar archive,
// gzip-compressed or not, told apart by its first bytes) and reports
// every path whose entries differ. Entries are matched by name, cleaned
// ("./bin/x" is "bin/x", a directory's trailing slash dropped). Diff
// returns an error wrapping ErrUnsafe, ErrLimit or ErrMalformed for a
// bad archive (saying which, a or b), or ctx's error once ctx is done; it
// then returns no report. Safe for concurrent use; it reads a, then b.
func Diff(ctx context.Context, a, b io.Reader, lim Limits) (Report, error) {
	lim = lim.orDefault()
	ia, err := index(ctx, a, lim)
	if err != nil {
		return Report{}, fmt.Errorf("archive a: %w", err)
	}
	ib, err := index(ctx, b, lim)
	if err != nil {
		return Report{}, fmt.Errorf("archive b: %w", err)
	}
	return compare(ia, ib, lim.MaxDifferences), nil
}

// archiveIndex is one archive's entries by cleaned name, and their order.
type archiveIndex struct {
	entries map[string]*Entry
	order   []string
}

// index reads one archive into its index.
func index(ctx context.Context, r io.Reader, lim Limits) (*archiveIndex, error) {
	br := bufio.NewReader(r)
	var src io.Reader = br
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrMalformed, err)
		}
		defer zr.Close()
		src = zr
	}
	counted := &limitReader{ctx: ctx, r: src, left: lim.MaxBytes}
	tr := tar.NewReader(counted)
	ix := &archiveIndex{entries: map[string]*Entry{}}
	var indexBytes, read int64
	buf := make([]byte, 32<<10)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return ix, nil
		}
		if err != nil {
			return nil, readErr(ctx, err)
		}
		if len(ix.order) >= lim.MaxEntries {
			return nil, fmt.Errorf("%w: more than %d entries", ErrLimit, lim.MaxEntries)
		}
		if len(hdr.Name) > lim.MaxNameBytes || len(hdr.Linkname) > lim.MaxNameBytes {
			return nil, fmt.Errorf("%w: entry %.64q…: name or link target longer than %d bytes", ErrLimit, hdr.Name, lim.MaxNameBytes)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return nil, err
		}
		if _, dup := ix.entries[name]; dup {
			return nil, fmt.Errorf("%w: entry %q appears twice", ErrUnsafe, name)
		}
		indexBytes += int64(len(name) + len(hdr.Linkname) + len(hdr.Uname) + len(hdr.Gname))
		if indexBytes > lim.MaxIndexBytes {
			return nil, fmt.Errorf("%w: names longer than %d bytes in all", ErrLimit, lim.MaxIndexBytes)
		}
		e := &Entry{Type: hdr.Typeflag, Mode: hdr.Mode, Link: hdr.Linkname, UID: hdr.Uid, GID: hdr.Gid,
			Uname: hdr.Uname, Gname: hdr.Gname, ModTime: hdr.ModTime}
		if e.Type == tar.TypeRegA { //nolint:staticcheck // old archives' regular files
			e.Type = tar.TypeReg
		}
		if e.Type == tar.TypeReg || hdr.Size > 0 {
			// Whatever content the reader yields, also a sparse entry's
			// expanded zeros, counts against MaxBytes as it is read.
			h := sha256.New()
			n, err := io.CopyBuffer(h, io.LimitReader(tr, lim.MaxBytes-read+1), buf)
			if err != nil {
				return nil, readErr(ctx, err)
			}
			if read += n; read > lim.MaxBytes {
				return nil, fmt.Errorf("%w: files hold more than %d bytes", ErrLimit, lim.MaxBytes)
			}
			e.Size, e.SHA256 = n, hex.EncodeToString(h.Sum(nil))
		}
		ix.entries[name] = e
		ix.order = append(ix.order, name)
	}
}

// readErr classifies an error of the tar or gzip reader.
func readErr(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, ErrLimit):
		return err
	default:
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
}

// cleanName is an entry's name as compared: relative, cleaned, without a
// directory's trailing slash. A name that is empty, absolute or leaves
// the archive is ErrUnsafe.
func cleanName(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: entry %q is not a relative path", ErrUnsafe, name)
	}
	c := path.Clean(name)
	if c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("%w: entry %q leaves the archive", ErrUnsafe, name)
	}
	return c, nil
}

// limitReader fails with ErrLimit once more than left bytes were read,
// and with ctx's error once ctx is done.
type limitReader struct {
	ctx  context.Context
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if err := l.ctx.Err(); err != nil {
		return 0, err
	}
	if l.left <= 0 {
		// One byte more tells a stream that ends exactly at the limit.
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n == 0 {
			return 0, io.EOF
		}
		return 0, fmt.Errorf("%w: more than the limit of bytes after decompression", ErrLimit)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// compare lists the differences between two indexes.
func compare(a, b *archiveIndex, maxDiffs int) Report {
	r := Report{EntriesA: len(a.order), EntriesB: len(b.order)}
	names := make([]string, 0, len(a.order)+len(b.order))
	names = append(names, a.order...)
	for _, n := range b.order {
		if _, ok := a.entries[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		ea, eb := a.entries[n], b.entries[n]
		var d Difference
		switch {
		case ea == nil || eb == nil:
			d = Difference{Path: n, A: ea, B: eb}
		default:
			fields := differing(ea, eb)
			if len(fields) == 0 {
				continue
			}
			d = Difference{Path: n, Fields: fields, A: ea, B: eb}
		}
		if len(r.Differences) == maxDiffs {
			r.Truncated = true
			break
		}
		r.Differences = append(r.Differences, d)
	}
	if len(r.Differences) == 0 && !r.Truncated && len(a.order) == len(b.order) {
		for i := range a.order {
			if a.order[i] != b.order[i] {
				r.OrderDiffers = true
				break
			}
		}
	}
	return r
}

// differing lists the fields in which a and b differ.
func differing(a, b *Entry) []Field {
	var out []Field
	if a.Type != b.Type {
		out = append(out, FieldType)
	}
	if a.Size != b.Size || a.SHA256 != b.SHA256 {
		out = append(out, FieldContent)
	}
	if a.Link != b.Link {
		out = append(out, FieldLink)
	}
	if a.Mode != b.Mode {
		out = append(out, FieldMode)
	}
	if a.UID != b.UID || a.GID != b.GID || a.Uname != b.Uname || a.Gname != b.Gname {
		out = append(out, FieldOwner)
	}
	if !a.ModTime.Equal(b.ModTime) {
		out = append(out, FieldModTime)
	}
	return out
}
