package platform

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestIdentityKeyChangesWithEveryIdentityField(t *testing.T) {
	base := s390x()
	key := IdentityKey(base)
	changes := map[string]func(*kilnv1.SystemInfo){
		"os":                 func(i *kilnv1.SystemInfo) { i.Os = "freebsd" },
		"arch":               func(i *kilnv1.SystemInfo) { i.Arch = "ppc64" },
		"endian":             func(i *kilnv1.SystemInfo) { i.Endian = "little" },
		"data_model":         func(i *kilnv1.SystemInfo) { i.DataModel = "ILP32" },
		"char_bit":           func(i *kilnv1.SystemInfo) { i.CharBit = 16 },
		"libc":               func(i *kilnv1.SystemInfo) { i.Libc = "musl" },
		"libc_version":       func(i *kilnv1.SystemInfo) { i.LibcVersion = "2.37" },
		"compiler":           func(i *kilnv1.SystemInfo) { i.Compiler = "clang" },
		"compiler_version":   func(i *kilnv1.SystemInfo) { i.CompilerVersion = "12.3.0" },
		"char_signed":        func(i *kilnv1.SystemInfo) { i.CharSigned = proto.Bool(true) },
		"align_long_long":    func(i *kilnv1.SystemInfo) { i.AlignLongLong = 4 },
		"align_double":       func(i *kilnv1.SystemInfo) { i.AlignDouble = 4 },
		"align_pointer":      func(i *kilnv1.SystemInfo) { i.AlignPointer = 2 },
		"sizeof_long_double": func(i *kilnv1.SystemInfo) { i.SizeofLongDouble = 8 },
		"sizeof_wchar_t":     func(i *kilnv1.SystemInfo) { i.SizeofWcharT = 2 },
	}
	if len(changes) != len(IdentityFields) {
		t.Fatalf("test covers %d fields, IdentityFields has %d", len(changes), len(IdentityFields))
	}
	for _, f := range IdentityFields {
		t.Run("changing "+f+" changes the key", func(t *testing.T) {
			info := proto.Clone(base).(*kilnv1.SystemInfo)
			changes[f](info)
			if bytes.Equal(IdentityKey(info), key) {
				t.Errorf("key unchanged after changing %s", f)
			}
		})
	}
}

func TestIdentityKeyIgnoresNonIdentityFields(t *testing.T) {
	base := s390x()
	other := proto.Clone(base).(*kilnv1.SystemInfo)
	other.Tools = map[string]string{"cmake": "3.25.1"}
	other.Cpus = 64
	other.MemoryBytes = 1 << 40
	other.Labels = []string{"slow", "donated"}
	other.Emulated = false
	other.SizeofShort = 8 // sizes enter through data_model only
	other.SizeofSizeT = 4
	other.PageSize = 65536 // the machine's, not the ABI's
	if !bytes.Equal(IdentityKey(base), IdentityKey(other)) {
		t.Error("key changed with non-identity fields")
	}
}

func TestIdentityKeyIsUnambiguous(t *testing.T) {
	// Moving a byte from one field to the next must change the key: the
	// length prefixes keep field boundaries.
	a := &kilnv1.SystemInfo{Libc: "glibc2", LibcVersion: ".36"}
	b := &kilnv1.SystemInfo{Libc: "glibc", LibcVersion: "2.36"}
	if bytes.Equal(IdentityKey(a), IdentityKey(b)) {
		t.Error("keys collide across a field boundary")
	}
	if !bytes.Equal(IdentityKey(nil), IdentityKey(&kilnv1.SystemInfo{})) {
		t.Error("nil and empty systems encode differently")
	}
}

// A system measured before the second version's fields keeps the key it
// had: the first version's encoding, written out here, byte for byte.
func TestIdentityKeyOfAnOldMeasurementIsUnchanged(t *testing.T) {
	old := s390x()
	old.CharSigned = nil
	old.AlignLongLong, old.AlignDouble, old.AlignPointer, old.SizeofLongDouble, old.SizeofWcharT = 0, 0, 0, 0, 0
	var want []byte
	want = appendString(want, "kiln.platform.identity.v1")
	for _, kv := range [][2]string{{"os", "linux"}, {"arch", "s390x"}, {"endian", "big"}, {"data_model", "LP64"}, {"char_bit", "8"},
		{"libc", "glibc"}, {"libc_version", "2.36"}, {"compiler", "gcc"}, {"compiler_version", "12.2.0"}} {
		want = appendString(appendString(want, kv[0]), kv[1])
	}
	if got := IdentityKey(old); !bytes.Equal(got, want) {
		t.Errorf("IdentityKey of a first-version measurement = %q, want %q", got, want)
	}
	if bytes.Equal(IdentityKey(s390x()), want) {
		t.Error("measuring the new fields left the key unchanged")
	}
}

func BenchmarkIdentityKey(b *testing.B) {
	info := s390x()
	b.ReportAllocs()
	for b.Loop() {
		if len(IdentityKey(info)) == 0 {
			b.Fatal("empty key")
		}
	}
}
