package platform

import (
	"google.golang.org/protobuf/proto"
	"slices"
	"testing"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func s390x() *kilnv1.SystemInfo {
	return &kilnv1.SystemInfo{
		Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", CharBit: 8,
		SizeofShort: 2, SizeofInt: 4, SizeofLong: 8, SizeofLongLong: 8, SizeofPointer: 8,
		Libc: "glibc", LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0",
		Tools: map[string]string{"make": "4.3", "cc": "12.2.0"}, Cpus: 2, MemoryBytes: 1 << 30,
		Emulated: true, Labels: []string{"fast"},
		CharSigned: proto.Bool(false), AlignLongLong: 8, AlignDouble: 8, AlignPointer: 8,
		SizeofLongDouble: 16, SizeofSizeT: 8, SizeofWcharT: 4, PageSize: 4096,
	}
}

func TestSatisfiesAndUnmet(t *testing.T) {
	tests := []struct {
		name  string
		info  *kilnv1.SystemInfo
		c     *kilnv1.PlatformConstraints
		unmet []string
	}{
		{"nil constraints are satisfied by any system", s390x(), nil, nil},
		{"empty constraints are satisfied by any system", s390x(), &kilnv1.PlatformConstraints{}, nil},
		{"nil constraints are satisfied even by a nil system", nil, nil, nil},
		{"matching arch and endian are satisfied", s390x(), &kilnv1.PlatformConstraints{Arch: "s390x", Endian: "big"}, nil},
		{"every field pinned to the measured value is satisfied", s390x(), FromInfo(s390x(), Fields...), nil},
		{"a different arch is unmet", s390x(), &kilnv1.PlatformConstraints{Arch: "x86_64"}, []string{"arch"}},
		{"unmet fields come back in Fields order", s390x(), &kilnv1.PlatformConstraints{CharBit: 16, Endian: "little", Os: "freebsd", CompilerVersion: "13"}, []string{"os", "endian", "compiler_version", "char_bit"}},
		{"a pinned field the system did not measure is unmet", &kilnv1.SystemInfo{Os: "linux"}, &kilnv1.PlatformConstraints{Libc: "glibc"}, []string{"libc"}},
		{"an unsigned char pin is met by s390x", s390x(), &kilnv1.PlatformConstraints{CharSigned: proto.Bool(false)}, nil},
		{"a signed char pin is not", s390x(), &kilnv1.PlatformConstraints{CharSigned: proto.Bool(true), AlignDouble: 4}, []string{"char_signed", "align_double"}},
		{"a system that never measured char signedness meets no pin of it", &kilnv1.SystemInfo{Os: "linux"}, &kilnv1.PlatformConstraints{CharSigned: proto.Bool(false)}, []string{"char_signed"}},
		{"a nil system meets no pinned field", nil, &kilnv1.PlatformConstraints{Os: "linux", CharBit: 8}, []string{"os", "char_bit"}},
		{"a matching char_bit is satisfied", s390x(), &kilnv1.PlatformConstraints{CharBit: 8}, nil},
		{"comparison is exact, so a non-canonical constraint is unmet", s390x(), &kilnv1.PlatformConstraints{DataModel: "lp64"}, []string{"data_model"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Unmet(tt.info, tt.c)
			if !slices.Equal(got, tt.unmet) {
				t.Errorf("Unmet = %v, want %v", got, tt.unmet)
			}
			if want := len(tt.unmet) == 0; Satisfies(tt.info, tt.c) != want {
				t.Errorf("Satisfies = %v, want %v", !want, want)
			}
		})
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		name       string
		build, req *kilnv1.PlatformConstraints
		want       bool
	}{
		{"a free request is covered by any build", &kilnv1.PlatformConstraints{Arch: "s390x"}, &kilnv1.PlatformConstraints{}, true},
		{"a nil request is covered by a nil build", nil, nil, true},
		{"a pinning request is not covered by a nil build", nil, &kilnv1.PlatformConstraints{Os: "linux"}, false},
		{"an identical pin is covered", &kilnv1.PlatformConstraints{Arch: "s390x"}, &kilnv1.PlatformConstraints{Arch: "s390x"}, true},
		{"a build pinning more than the request covers it", &kilnv1.PlatformConstraints{Arch: "s390x", Endian: "big", CharBit: 8}, &kilnv1.PlatformConstraints{Endian: "big"}, true},
		{"a build leaving free what the request pins does not cover it", &kilnv1.PlatformConstraints{Endian: "big"}, &kilnv1.PlatformConstraints{Arch: "s390x", Endian: "big"}, false},
		{"a build pinning a different value does not cover", &kilnv1.PlatformConstraints{Arch: "ppc"}, &kilnv1.PlatformConstraints{Arch: "s390x"}, false},
		{"a different char_bit does not cover", &kilnv1.PlatformConstraints{CharBit: 16}, &kilnv1.PlatformConstraints{CharBit: 8}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Covers(tt.build, tt.req); got != tt.want {
				t.Errorf("Covers = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestCoversImpliesSatisfies checks Covers' contract on concrete systems: a
// system satisfying the build also satisfies every request the build covers.
func TestCoversImpliesSatisfies(t *testing.T) {
	info := s390x()
	for mask := 0; mask < 1<<len(Fields); mask++ {
		var pinned []string
		for i, f := range Fields {
			if mask&(1<<i) != 0 {
				pinned = append(pinned, f)
			}
		}
		build := FromInfo(info, pinned...)
		for i := range pinned {
			req := FromInfo(info, pinned[:i]...)
			if !Covers(build, req) {
				t.Fatalf("build %s does not cover its subset %s", DescribeConstraints(build), DescribeConstraints(req))
			}
			if !Satisfies(info, build) || !Satisfies(info, req) {
				t.Fatalf("%s does not satisfy %s or %s", Describe(info), DescribeConstraints(build), DescribeConstraints(req))
			}
		}
	}
}

func TestFromInfoPinsOnlyTheGivenFields(t *testing.T) {
	c := FromInfo(s390x(), "arch", "char_bit", "no_such_field")
	if got := DescribeConstraints(c); got != "arch=s390x char_bit=8" {
		t.Errorf("FromInfo pinned %q", got)
	}
	if got := DescribeConstraints(FromInfo(s390x())); got != "any" {
		t.Errorf("FromInfo without fields pinned %q", got)
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		name string
		info *kilnv1.SystemInfo
		want string
	}{
		{"an emulated target says so", s390x(), "linux/s390x big LP64 glibc-2.36 gcc-12.2.0 (emulated)"},
		{"a nil system is unknown", nil, "unknown"},
		{"an empty system is unknown", &kilnv1.SystemInfo{}, "unknown"},
		{"unmeasured parts are left out", &kilnv1.SystemInfo{Os: "linux", Arch: "x86_64", Libc: "musl"}, "linux/x86_64 musl"},
		{"an unusual char_bit shows", &kilnv1.SystemInfo{Arch: "dsp", CharBit: 16}, "dsp char_bit=16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Describe(tt.info); got != tt.want {
				t.Errorf("Describe = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDescribeConstraints(t *testing.T) {
	if got := DescribeConstraints(nil); got != "any" {
		t.Errorf("nil = %q", got)
	}
	c := &kilnv1.PlatformConstraints{Endian: "big", Arch: "s390x"}
	if got := DescribeConstraints(c); got != "arch=s390x endian=big" {
		t.Errorf("got %q", got)
	}
}

func BenchmarkSatisfies(b *testing.B) {
	info := s390x()
	c := FromInfo(info, Fields...)
	b.ReportAllocs()
	for b.Loop() {
		if !Satisfies(info, c) {
			b.Fatal("not satisfied")
		}
	}
}
