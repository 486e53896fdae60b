package acceptance

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hostELF returns the test binary's bytes and a platform it fits.
func hostELF(t *testing.T) ([]byte, Platform) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Skipf("the test binary is not ELF: %v", err)
	}
	defer ef.Close()
	return data, Platform{Name: "host", Machine: ef.Machine, Class: ef.Class, Data: ef.Data}
}

// foreign is a platform no host binary fits.
func foreign(host Platform) Platform {
	p, _ := PlatformByName("s390x")
	if host.Machine == elf.EM_S390 {
		p, _ = PlatformByName("armhf")
	}
	return p
}

// arArchive builds a GNU ar archive; names longer than 15 bytes go to the
// long-name table as GNU ar does.
func arArchive(members map[string][]byte, order []string) []byte {
	var long bytes.Buffer
	idx := map[string]int{}
	for _, n := range order {
		if len(n) > 15 {
			idx[n] = long.Len()
			long.WriteString(n + "/\n")
		}
	}
	var b bytes.Buffer
	b.WriteString(arMagic)
	add := func(name string, data []byte) {
		fmt.Fprintf(&b, "%-16s%-12s%-6s%-6s%-8s%-10d`\n", name, "0", "0", "0", "644", len(data))
		b.Write(data)
		if len(data)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	add("/", []byte{0, 0, 0, 0})
	if long.Len() > 0 {
		add("//", long.Bytes())
	}
	for _, n := range order {
		name := n + "/"
		if i, ok := idx[n]; ok {
			name = fmt.Sprintf("/%d", i)
		}
		add(name, members[n])
	}
	return b.Bytes()
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestInspect_HostBinary_FitsHostOnly(t *testing.T) {
	data, host := hostELF(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "bin", "prog"), data)
	writeFile(t, filepath.Join(dir, "share", "doc.txt"), []byte("not ELF"))
	if err := os.Symlink("prog", filepath.Join(dir, "bin", "alias")); err != nil {
		t.Fatal(err)
	}

	in, err := Inspect(dir, host)
	if err != nil {
		t.Fatal(err)
	}
	if in.ELFs != 1 || len(in.Problems) != 0 {
		t.Fatalf("on the host's platform: %+v, want 1 ELF file and no problem", in)
	}

	p := foreign(host)
	in, err = Inspect(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Problems) != 1 || !strings.HasPrefix(in.Problems[0], "bin/prog is ") || !strings.Contains(in.Problems[0], p.Name+" needs "+p.Machine.String()) {
		t.Fatalf("on %s: problems %q, want one naming bin/prog and %s", p.Name, in.Problems, p.Machine)
	}
}

func TestInspect_StaticArchive_ChecksEveryMember(t *testing.T) {
	data, host := hostELF(t)
	dir := t.TempDir()
	members := map[string][]byte{"a_rather_long_member_name.o": data, "short.o": data, "README": []byte("text\n")}
	writeFile(t, filepath.Join(dir, "lib", "libx.a"), arArchive(members, []string{"a_rather_long_member_name.o", "README", "short.o"}))

	in, err := Inspect(dir, foreign(host))
	if err != nil {
		t.Fatal(err)
	}
	if in.ELFs != 2 || len(in.Problems) != 2 {
		t.Fatalf("got %d ELF members and problems %q, want 2 and 2", in.ELFs, in.Problems)
	}
	for i, want := range []string{"lib/libx.a(a_rather_long_member_name.o) is ", "lib/libx.a(short.o) is "} {
		if !strings.HasPrefix(in.Problems[i], want) {
			t.Errorf("problem %d = %q, want prefix %q", i, in.Problems[i], want)
		}
	}
}

func TestInspect_SharedLibrary_Listed(t *testing.T) {
	lib := "/lib/x86_64-linux-gnu/libz.so.1"
	data, err := os.ReadFile(lib)
	if err != nil {
		t.Skipf("no %s: %v", lib, err)
	}
	native, _ := PlatformByName("native")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "usr/local/lib/libz.so.1.2.13"), data)
	in, err := Inspect(dir, native)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.SharedLibs) != 1 || in.SharedLibs[0] != "usr/local/lib/libz.so.1.2.13" || len(in.Problems) != 0 {
		t.Fatalf("got %+v, want the one shared library and no problem", in)
	}
	musl, _ := PlatformByName("musl")
	in, _ = Inspect(dir, musl)
	if len(in.Problems) != 1 || !strings.Contains(in.Problems[0], "needs glibc's libc.so.6 on musl") {
		t.Fatalf("on musl: problems %q, want the glibc dependency named", in.Problems)
	}
}

func TestEachMember_TruncatedArchive_Error(t *testing.T) {
	a := arArchive(map[string][]byte{"x.o": []byte("0123456789")}, []string{"x.o"})
	a = a[:len(a)-4]
	err := eachMember(bytes.NewReader(a), int64(len(a)), func(string, *io.SectionReader) {})
	if err == nil {
		t.Fatal("a truncated archive was accepted")
	}
}
