package server

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// elfHeader is the first 64 bytes of an ELF file for machine, class and
// byte order, then padding.
func elfHeader(m elf.Machine, c elf.Class, d elf.Data) []byte {
	h := make([]byte, 64)
	copy(h, elf.ELFMAG)
	h[elf.EI_CLASS], h[elf.EI_DATA], h[elf.EI_VERSION] = byte(c), byte(d), 1
	var order binary.ByteOrder = binary.LittleEndian
	if d == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	order.PutUint16(h[16:], uint16(elf.ET_EXEC))
	order.PutUint16(h[18:], uint16(m))
	return h
}

var (
	x86ELF   = elfHeader(elf.EM_X86_64, elf.ELFCLASS64, elf.ELFDATA2LSB)
	s390xELF = elfHeader(elf.EM_S390, elf.ELFCLASS64, elf.ELFDATA2MSB)
	s390ELF  = elfHeader(elf.EM_S390, elf.ELFCLASS32, elf.ELFDATA2MSB)
)

// peFile is the start of a PE file as GNU ld writes it: the DOS header
// with e_lfanew 0x80, then the PE signature, the COFF machine and the
// optional header's magic (0x10b PE32, 0x20b PE32+).
func peFile(machine, magic uint16) []byte {
	h := make([]byte, 0x200)
	copy(h, "MZ")
	binary.LittleEndian.PutUint32(h[0x3c:], 0x80)
	copy(h[0x80:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(h[0x84:], machine)
	binary.LittleEndian.PutUint16(h[0x98:], magic)
	return h
}

var (
	pe64 = peFile(0x8664, 0x20b) // x86-64 PE32+
	pe32 = peFile(0x14c, 0x10b)  // i386 PE32
	// windows32System is what cross:i686-w64-mingw32 measures.
	windows32System = &kilnv1.SystemInfo{Os: "windows", Arch: "i686", Endian: "little", DataModel: "ILP32", Libc: "msvcrt"}
)

var s390xSystem = &kilnv1.SystemInfo{Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", CharBit: 8,
	Libc: "glibc", LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0", Tools: map[string]string{"make": "4.3"}}

type file struct {
	name string
	data []byte
}

func tarOf(t testing.TB, files ...file) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(f.data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tarGz(t testing.TB, files ...file) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(tarOf(t, files...)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// arOf is a GNU ar archive of members (names longer than 15 bytes go to
// the "//" table).
func arOf(members ...file) []byte {
	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	var table bytes.Buffer
	offsets := map[string]int{}
	for _, m := range members {
		if len(m.name) > 15 {
			offsets[m.name] = table.Len()
			table.WriteString(m.name + "/\n")
		}
	}
	member := func(name string, data []byte) {
		fmt.Fprintf(&b, "%-16s%-12s%-6s%-6s%-8s%-10d`\n", name, "0", "0", "0", "644", len(data))
		b.Write(data)
		if len(data)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	if table.Len() > 0 {
		member("//", table.Bytes())
	}
	for _, m := range members {
		name := m.name + "/"
		if off, ok := offsets[m.name]; ok {
			name = fmt.Sprintf("/%d", off)
		}
		member(name, m.data)
	}
	return b.Bytes()
}

func TestArtifactMismatch(t *testing.T) {
	x86AsS390 := "bin/hello is x86_64 (64-bit little-endian), target is s390x (64-bit big-endian)"
	cases := []struct {
		name string
		data []byte
		sys  *kilnv1.SystemInfo
		want string // "" fits; else a substring of the reason
	}{
		{"the target's own code", tarGz(t, file{"bin/hello", s390xELF}, file{"share/doc", []byte("text")}), s390xSystem, ""},
		{"x86-64 code for s390x", tarGz(t, file{"share/doc", []byte("text")}, file{"bin/hello", x86ELF}), s390xSystem, x86AsS390},
		{"32-bit s390 code for s390x", tarGz(t, file{"bin/hello", s390ELF}), s390xSystem, "bin/hello is s390 (32-bit big-endian)"},
		{"x86-64 code for x86-64", tarGz(t, file{"bin/hello", x86ELF}), testSystem, ""},
		{"no ELF at all", tarGz(t, file{"share/data.txt", []byte("hello")}), s390xSystem, ""},
		{"a plain tar", tarOf(t, file{"bin/hello", x86ELF}), s390xSystem, x86AsS390},
		{"a bare ELF file", x86ELF, s390xSystem, "the artifact is x86_64"},
		{"an ELF header cut short", tarGz(t, file{"bin/hello", x86ELF[:12]}), s390xSystem, "too short"},
		{"a static library's member", tarGz(t, file{"lib/libfoo.a", arOf(file{"odd.o", []byte("odd")}, file{"a_rather_long_member_name.o", x86ELF})}), s390xSystem,
			"lib/libfoo.a(a_rather_long_member_name.o) is x86_64"},
		{"a static library of the target's code", tarGz(t, file{"lib/libfoo.a", arOf(file{"odd.o", []byte("odd")}, file{"foo.o", s390xELF})}), s390xSystem, ""},
		{"gzip that is no tar", func() []byte {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			_, _ = zw.Write(bytes.Repeat([]byte("not a tar "), 100))
			_ = zw.Close()
			return b.Bytes()
		}(), s390xSystem, "not a readable tar"},
		{"a truncated tar.gz", func() []byte { d := tarGz(t, file{"bin/hello", s390xELF}); return d[:len(d)/2] }(), s390xSystem, "not a readable tar"},
		{"data in no known form", []byte("opaque data"), s390xSystem, ""},
		// Red team: containers the check cannot look into are refused.
		{"a v7 tar (no magic)", v7Tar(t, file{"bin/hello", x86ELF}), s390xSystem, x86AsS390},
		{"xz", append([]byte("\xfd7zXZ\x00"), x86ELF...), s390xSystem, "is xz, not a tar.gz"},
		{"zstd", append([]byte{0x28, 0xb5, 0x2f, 0xfd}, x86ELF...), s390xSystem, "is zstd"},
		{"bzip2", append([]byte("BZh9"), x86ELF...), s390xSystem, "is bzip2"},
		{"zip", append([]byte("PK\x03\x04"), x86ELF...), s390xSystem, "is zip"},
		// Windows targets: PE files for their machine, never ELF.
		{"a Windows i686 target's own PE", tarGz(t, file{"bin/hello.exe", pe32}, file{"lib/libfoo.a", arOf(file{"foo.o", []byte{0x4c, 0x01, 1, 0, 0, 0, 0, 0}})}), windows32System, ""},
		{"an x86-64 PE for Windows i686", tarGz(t, file{"bin/hello.exe", pe64}), windows32System,
			"bin/hello.exe is x86_64 (PE32+), target is windows i686 (PE32)"},
		{"an ELF file for Windows i686", tarGz(t, file{"bin/hello.exe", x86ELF}), windows32System,
			"bin/hello.exe is an ELF file for x86_64 (64-bit little-endian), target is windows i686 (PE32)"},
		{"an x86-64 COFF object in a Windows i686 library", tarGz(t, file{"lib/libfoo.a", arOf(file{"foo.o", []byte{0x64, 0x86, 1, 0, 0, 0, 0, 0}})}), windows32System,
			"lib/libfoo.a(foo.o) is x86_64 (COFF object)"},
		{"a PE for a Linux target", tarGz(t, file{"bin/hello", pe32}), s390xSystem,
			"bin/hello is a Windows PE file for i686 (PE32), target is s390x"},
		{"a PE whose header hides beyond the checked bytes", tarGz(t, file{"bin/hello.exe", func() []byte {
			h := append(make([]byte, 0x900), pe64...)
			copy(h, "MZ")
			binary.LittleEndian.PutUint32(h[0x3c:], 0x900+0x80)
			return h
		}()}), windows32System, "beyond the first"},
		{"an unknown platform checks nothing", tarGz(t, file{"bin/hello", x86ELF}),
			&kilnv1.SystemInfo{Arch: "pdp11", Endian: "little", DataModel: "ILP32"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := artifactMismatch(bytes.NewReader(c.data), int64(len(c.data)), c.sys, nil)
			if err != nil {
				t.Fatalf("error %v, want a verdict", err)
			}
			if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
				t.Fatalf("reason %q, want %q", got, c.want)
			}
			if got != "" && !strings.HasPrefix(got, "artifact does not match the target: ") {
				t.Fatalf("reason %q lacks its prefix", got)
			}
		})
	}
}

// brokenDisk fails after n bytes, as a disk would.
type brokenDisk struct {
	r io.Reader
	n int
}

func (f *brokenDisk) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("input/output error")
	}
	p = p[:min(len(p), f.n)]
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestArtifactMismatch_ReadError_IsTheMetaserversNotAReason(t *testing.T) {
	data := tarGz(t, file{"bin/hello", s390xELF}, file{"bin/more", bytes.Repeat([]byte{1, 2, 3}, 100000)})
	got, err := artifactMismatch(&brokenDisk{r: bytes.NewReader(data), n: 100}, int64(len(data)), s390xSystem, nil)
	if err == nil || got != "" || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("reason %q, error %v; want the read error and no reason", got, err)
	}
	stop := errors.New("session ended")
	_, err = artifactMismatch(bytes.NewReader(data), int64(len(data)), s390xSystem, func() error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("error %v, want the tick's", err)
	}
}

// A volunteer whose target claims s390x and sends x86-64 code: the result is
// refused, nothing is cached, the server gets no more s390x builds in this
// session and an honest server builds it.
func TestResult_ArtifactForAnotherMachine_IsRejectedAndBuiltElsewhere(t *testing.T) {
	b := queuedBuild(1, "p", 60)
	b.Build.Constraints = &kilnv1.PlatformConstraints{Arch: "s390x"}
	ts := startTestServer(t, Config{}, b, func() *store.Build {
		c := queuedBuild(2, "q", 60)
		c.Build.Constraints = proto.Clone(b.Build.Constraints).(*kilnv1.PlatformConstraints)
		return c
	}())
	liar := ts.connectHello("liar", &kilnv1.Hello{Version: "test", Slots: 1,
		Targets: []*kilnv1.Target{{Id: "s390x", System: s390xSystem}, {Id: "native", System: testSystem}}})
	a := liar.assignment()
	data := tarGz(t, file{"bin/hello", x86ELF})
	ack := liar.resultAck(inlineResult(a.GetAttemptId(), data, data))
	if ack.GetAccepted() || !strings.Contains(ack.GetReason(), "bin/hello is x86_64 (64-bit little-endian), target is s390x (64-bit big-endian)") {
		t.Fatalf("ack %v; want refused with the mismatch", ack)
	}
	got := ts.build(a.GetBuildId())
	atts := got.GetAttempts()
	if got.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED || len(atts) != 1 ||
		atts[0].GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_REJECTED || !strings.Contains(atts[0].GetReason(), "artifact does not match the target") {
		t.Fatalf("build after the rejection: %s, attempts %v; want queued with one REJECTED attempt", got.GetState(), atts)
	}
	err := ts.st.View(func(tx store.Tx) error {
		n := 0
		err := tx.Artifacts(func(*store.Artifact) error { n++; return nil })
		if n != 0 {
			t.Errorf("%d cache entries after a rejected result, want none", n)
		}
		if _, err := tx.Blob(digest(data)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the rejected artifact is stored: %v", err)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// The liar is free, but gets neither build again on its s390x target.
	select {
	case msg := <-liar.msgs:
		if msg.GetAssignment() != nil {
			t.Fatalf("the liar got another s390x build: %v", msg)
		}
	case <-time.After(500 * time.Millisecond):
	}
	honest := ts.connectHello("honest", &kilnv1.Hello{Version: "test", Slots: 1, Targets: []*kilnv1.Target{{Id: "s390x", System: s390xSystem}}})
	h := honest.assignment()
	if h.GetBuildId() != a.GetBuildId() {
		t.Fatalf("the honest server got build %d, want %d (the rejected one, queued first)", h.GetBuildId(), a.GetBuildId())
	}
	good := tarGz(t, file{"bin/hello", s390xELF})
	honest.report(inlineResult(h.GetAttemptId(), good, good))
	if b := ts.build(a.GetBuildId()); b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || b.GetArtifact().GetSha256() != digest(good) {
		t.Fatalf("build after the honest result: %s %v", b.GetState(), b.GetArtifact())
	}
}

// v7Tar is tarOf with the ustar magic and version wiped, as an old v7
// tar writes its headers, and the checksums fixed.
func v7Tar(t *testing.T, files ...file) []byte {
	t.Helper()
	b := tarOf(t, files...)
	for off := 0; off+512 <= len(b); off += 512 {
		h := b[off : off+512]
		if string(h[257:262]) != "ustar" {
			continue
		}
		for i := 257; i < 265; i++ {
			h[i] = 0
		}
		for i := 148; i < 156; i++ {
			h[i] = ' '
		}
		var sum int
		for _, c := range h {
			sum += int(c)
		}
		copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	}
	return b
}
