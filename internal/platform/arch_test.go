package platform

import "testing"

func TestCanonicalArch(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"GOARCH amd64 is x86_64", "amd64", "x86_64"},
		{"uname x86_64 stays", "x86_64", "x86_64"},
		{"the dashed spelling is x86_64", "x86-64", "x86_64"},
		{"GOARCH 386 is i686", "386", "i686"},
		{"i386 is i686", "i386", "i686"},
		{"i586 is i686", "i586", "i686"},
		{"x86 is i686", "x86", "i686"},
		{"arm64 is aarch64", "arm64", "aarch64"},
		{"GOARCH arm is armv7", "arm", "armv7"},
		{"uname armv7l is armv7", "armv7l", "armv7"},
		{"Debian armhf is armv7", "armhf", "armv7"},
		{"uname armv6l is armv6", "armv6l", "armv6"},
		{"s390x stays", "s390x", "s390x"},
		{"powerpc is ppc", "powerpc", "ppc"},
		{"powerpc64 is ppc64", "powerpc64", "ppc64"},
		{"powerpc64le is ppc64le", "powerpc64le", "ppc64le"},
		{"riscv64 stays", "riscv64", "riscv64"},
		{"GOARCH mipsle is mipsel", "mipsle", "mipsel"},
		{"GOARCH mips64le is mips64el", "mips64le", "mips64el"},
		{"GOARCH loong64 is loongarch64", "loong64", "loongarch64"},
		{"a triple's arch is used", "s390x-linux-gnu", "s390x"},
		{"an ARM hard-float triple is armv7", "arm-linux-gnueabihf", "armv7"},
		{"an i686 triple is i686", "i686-linux-gnu", "i686"},
		{"case and space are ignored", " AMD64\n", "x86_64"},
		{"an unknown arch is lower-cased", "Xtensa", "xtensa"},
		{"an unknown triple is returned whole", "foo-bar-baz", "foo-bar-baz"},
		{"empty stays empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CanonicalArch(tt.in); got != tt.want {
				t.Errorf("CanonicalArch(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestCanonicalArchIsIdempotent(t *testing.T) {
	for alias := range archAliases {
		c := CanonicalArch(alias)
		if CanonicalArch(c) != c {
			t.Errorf("%s -> %s -> %s", alias, c, CanonicalArch(c))
		}
	}
}

func TestDataModel(t *testing.T) {
	tests := []struct {
		name                                 string
		short, int_, long, longLong, pointer uint32
		want                                 string
	}{
		{"32-bit Linux is ILP32", 2, 4, 4, 8, 4, "ILP32"},
		{"64-bit Linux is LP64", 2, 4, 8, 8, 8, "LP64"},
		{"64-bit Windows is LLP64", 2, 4, 4, 8, 8, "LLP64"},
		{"Cray-style 64-bit int is ILP64", 2, 8, 8, 8, 8, "ILP64"},
		{"16-bit int with 32-bit long and pointer is LP32", 2, 2, 4, 4, 4, "LP32"},
		{"64-bit pointers with a 32-bit long long is nothing known", 2, 4, 4, 4, 8, ""},
		{"all zero is nothing known", 0, 0, 0, 0, 0, ""},
		{"16-bit pointers are nothing known", 1, 2, 4, 8, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DataModel(tt.short, tt.int_, tt.long, tt.longLong, tt.pointer); got != tt.want {
				t.Errorf("DataModel = %q, want %q", got, tt.want)
			}
		})
	}
}
