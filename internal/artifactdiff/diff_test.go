package artifactdiff

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

// member is one entry a test archive holds.
type member struct {
	name, body, link string
	typ              byte // 0: a regular file
	mode             int64
	uid              int
	mtime            int64
}

func file(name, body string) member { return member{name: name, body: body} }

// archive writes members as a tar, gzip-compressed when gz.
func archive(t testing.TB, gz bool, ms ...member) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, m := range ms {
		h := &tar.Header{Name: m.name, Typeflag: m.typ, Mode: m.mode, Uid: m.uid, Linkname: m.link,
			ModTime: time.Unix(m.mtime, 0), Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(m.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(m.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func diff(t *testing.T, a, b []byte, lim Limits) (Report, error) {
	t.Helper()
	return Diff(context.Background(), bytes.NewReader(a), bytes.NewReader(b), lim)
}

func lines(r Report) []string {
	var out []string
	for _, d := range r.Differences {
		out = append(out, d.String())
	}
	return out
}

func TestDiff_FindsWhatDiffers(t *testing.T) {
	base := []member{
		{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/hello", body: "binary", mode: 0o755},
		{name: "bin/hi", typ: tar.TypeSymlink, link: "hello", mode: 0o777},
		file("share/doc", "doc"),
	}
	with := func(change func(ms []member) []member) []member {
		return change(slices.Clone(base))
	}
	for _, tc := range []struct {
		name string
		b    []member
		want []string
	}{
		{name: "the same members make no difference", b: base},
		{name: "other content is named with both sizes and hashes", b: with(func(ms []member) []member { ms[1].body = "binarY!"; return ms }),
			want: []string{`"bin/hello": content (6 bytes`}},
		{name: "a file only one archive has", b: with(func(ms []member) []member { return append(ms, file("share/extra", "x")) }),
			want: []string{`"share/extra": only in b`}},
		{name: "a file the other archive lacks", b: with(func(ms []member) []member { return ms[:3] }),
			want: []string{`"share/doc": only in a`}},
		{name: "a mode, an owner and a time", b: with(func(ms []member) []member {
			ms[1].mode, ms[3].uid, ms[3].mtime = 0o700, 1000, 1700000000
			return ms
		}), want: []string{`"bin/hello": mode (0755, 0700) differ`, `"share/doc": owner (0:0 :, 1000:0 :), mtime (0, 1700000000) differ`}},
		{name: "a link target", b: with(func(ms []member) []member { ms[2].link = "other"; return ms }),
			want: []string{`"bin/hi": link ("hello", "other") differ`}},
		{name: "a file that became a directory", b: with(func(ms []member) []member {
			ms[3] = member{name: "share/doc/", typ: tar.TypeDir, mode: 0o644}
			return ms
		}), want: []string{`"share/doc": type ('0', '5'), content`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := diff(t, archive(t, true, base...), archive(t, true, tc.b...), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			got := lines(r)
			if len(got) != len(tc.want) {
				t.Fatalf("differences %q, want %d like %q", got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("difference %d = %q, want it to start %q", i, got[i], tc.want[i])
				}
			}
			if r.Same() != (len(tc.want) == 0) {
				t.Errorf("Same() = %v with differences %q", r.Same(), got)
			}
			if r.EntriesA != 4 {
				t.Errorf("EntriesA = %d, want 4", r.EntriesA)
			}
		})
	}
}

func TestDiff_ComparesCompressedWithPlainAndCleansNames(t *testing.T) {
	a := archive(t, true, file("./bin/x", "1"), member{name: "lib/", typ: tar.TypeDir, mode: 0o755})
	b := archive(t, false, file("bin/x", "1"), member{name: "lib", typ: tar.TypeDir, mode: 0o755})
	r, err := diff(t, a, b, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Same() {
		t.Errorf("gzip and plain tar of one tree: %q", lines(r))
	}
}

func TestDiff_SameFilesInAnotherOrderIsAnOrderDifference(t *testing.T) {
	a := archive(t, true, file("a", "1"), file("b", "2"))
	b := archive(t, true, file("b", "2"), file("a", "1"))
	r, err := diff(t, a, b, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Differences) != 0 || !r.OrderDiffers || r.Same() {
		t.Errorf("report %+v, want no file difference but OrderDiffers", r)
	}
}

func TestDiff_ReportsAtMostMaxDifferences(t *testing.T) {
	var as, bs []member
	for i := range 10 {
		as = append(as, file(fmt.Sprintf("f%02d", i), "a"))
		bs = append(bs, file(fmt.Sprintf("f%02d", i), "b"))
	}
	r, err := diff(t, archive(t, true, as...), archive(t, true, bs...), Limits{MaxDifferences: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Differences) != 3 || !r.Truncated || r.Differences[0].Path != "f00" {
		t.Errorf("got %q truncated=%v, want f00..f02 and Truncated", lines(r), r.Truncated)
	}
}

// TestDiff_RefusesHostileArchives: what a hostile volunteer's artifact may
// hold is refused with the sentinel that says why, naming the archive.
func TestDiff_RefusesHostileArchives(t *testing.T) {
	good := archive(t, true, file("ok", "1"))
	// 64 MiB of zeros compress to about 64 KiB.
	bomb := archive(t, true, file("zeros", string(make([]byte, 64<<20))))
	var many []member
	for i := range 50 {
		many = append(many, file(fmt.Sprint(i), ""))
	}
	for _, tc := range []struct {
		name string
		b    []byte
		lim  Limits
		want error
	}{
		{name: "a name leaving the archive", b: archive(t, true, file("../../etc/passwd", "x")), want: ErrUnsafe},
		{name: "a name leaving it after a detour", b: archive(t, true, file("a/../../x", "x")), want: ErrUnsafe},
		{name: "an absolute name", b: archive(t, true, file("/etc/passwd", "x")), want: ErrUnsafe},
		{name: "a name given twice (the second would hide the first)", b: archive(t, true, file("x", "1"), file("./x", "2")), want: ErrUnsafe},
		{name: "a decompression bomb", b: bomb, lim: Limits{MaxBytes: 1 << 20}, want: ErrLimit},
		{name: "too many entries", b: archive(t, true, many...), lim: Limits{MaxEntries: 10}, want: ErrLimit},
		{name: "a name over the length limit", b: archive(t, true, file(strings.Repeat("n", 300), "")), lim: Limits{MaxNameBytes: 255}, want: ErrLimit},
		{name: "names over the index limit", b: archive(t, true, many...), lim: Limits{MaxIndexBytes: 40}, want: ErrLimit},
		{name: "not an archive", b: []byte("hello, this is not a tar archive at all, just text padding it out to more than one block? no."), want: ErrMalformed},
		{name: "a gzip stream cut short", b: bomb[:len(bomb)/2], want: ErrMalformed},
		{name: "a tar cut inside a file", b: archive(t, false, file("x", strings.Repeat("y", 4096)))[:1024], want: ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := diff(t, good, tc.b, tc.lim)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "archive b: ") {
				t.Errorf("err = %q does not name archive b", err)
			}
		})
	}
}

// TestDiff_ASparseEntryCountsAtItsExpandedSize: a GNU sparse entry of
// 1 TiB takes three blocks of archive; reading it stops at MaxBytes.
func TestDiff_ASparseEntryCountsAtItsExpandedSize(t *testing.T) {
	start := time.Now()
	_, err := diff(t, archive(t, false), gnuSparse(1<<40), Limits{MaxBytes: 8 << 20})
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("err = %v, want ErrLimit (took %v)", err, time.Since(start))
	}
	// The same entry of 4 KiB is read at its expanded size.
	r, err := diff(t, archive(t, false), gnuSparse(4096), Limits{})
	if err != nil || len(r.Differences) != 1 || r.Differences[0].B.Size != 4096 {
		t.Fatalf("4 KiB sparse entry: %v, %q", err, lines(r))
	}
}

// gnuSparse is a GNU tar archive of one old-style sparse file ('S') of
// size bytes whose one data fragment is a single byte at offset 0.
func gnuSparse(size int64) []byte {
	blk := make([]byte, 512)
	copy(blk[0:], "sparse")
	octal := func(b []byte, v int64) { copy(b, fmt.Sprintf("%0*o", len(b)-1, v)) }
	octal(blk[100:108], 0o644)
	octal(blk[108:116], 0)
	octal(blk[116:124], 0)
	octal(blk[124:136], 1) // bytes stored: the one fragment
	octal(blk[136:148], 0)
	blk[156] = 'S'
	copy(blk[257:265], "ustar  \x00")
	octal(blk[386:398], 0) // fragment offset
	octal(blk[398:410], 1) // fragment length
	octal(blk[483:495], size)
	copy(blk[148:156], "        ")
	var sum int64
	for _, c := range blk {
		sum += int64(c)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
	data := make([]byte, 512)
	data[0] = 'x'
	return append(append(blk, data...), make([]byte, 1024)...)
}

func TestDiff_StopsWhenTheContextIsDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a := archive(t, true, file("x", "1"))
	_, err := Diff(ctx, bytes.NewReader(a), bytes.NewReader(a), Limits{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func ExampleDiff() {
	pack := func(body string) *bytes.Buffer {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: "bin/hello", Mode: 0o755, Size: int64(len(body))})
		tw.Write([]byte(body))
		tw.WriteHeader(&tar.Header{Name: "BUILD_DATE", Mode: 0o644, Size: 10})
		tw.Write([]byte(body[:1] + "023-06-10"))
		tw.Close()
		return &buf
	}
	r, err := Diff(context.Background(), pack("2 hello"), pack("3 hello"), Limits{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, d := range r.Differences {
		fmt.Println(d.Path, d.Fields)
	}
	// Output:
	// BUILD_DATE [content]
	// bin/hello [content]
}
