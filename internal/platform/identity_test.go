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
		"os":               func(i *kilnv1.SystemInfo) { i.Os = "freebsd" },
		"arch":             func(i *kilnv1.SystemInfo) { i.Arch = "ppc64" },
		"endian":           func(i *kilnv1.SystemInfo) { i.Endian = "little" },
		"data_model":       func(i *kilnv1.SystemInfo) { i.DataModel = "ILP32" },
		"char_bit":         func(i *kilnv1.SystemInfo) { i.CharBit = 16 },
		"libc":             func(i *kilnv1.SystemInfo) { i.Libc = "musl" },
		"libc_version":     func(i *kilnv1.SystemInfo) { i.LibcVersion = "2.37" },
		"compiler":         func(i *kilnv1.SystemInfo) { i.Compiler = "clang" },
		"compiler_version": func(i *kilnv1.SystemInfo) { i.CompilerVersion = "12.3.0" },
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

func BenchmarkIdentityKey(b *testing.B) {
	info := s390x()
	b.ReportAllocs()
	for b.Loop() {
		if len(IdentityKey(info)) == 0 {
			b.Fatal("empty key")
		}
	}
}
