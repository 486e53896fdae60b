package platform

import (
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Describe returns one short human line for info, such as
// "linux/s390x big LP64 glibc-2.36 gcc-12.2.0 (emulated)". Unmeasured parts
// are left out; CHAR_BIT shows only when it is not 8. For logs and web pages,
// never for keys (see IdentityKey).
func Describe(info *kilnv1.SystemInfo) string {
	if info == nil {
		return "unknown"
	}
	var parts []string
	osArch := info.Os
	if info.Arch != "" {
		if osArch != "" {
			osArch += "/"
		}
		osArch += info.Arch
	}
	for _, p := range []string{osArch, info.Endian, info.DataModel, join(info.Libc, info.LibcVersion), join(info.Compiler, info.CompilerVersion)} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if info.CharBit != 0 && info.CharBit != 8 {
		parts = append(parts, "char_bit="+Value(info, "char_bit"))
	}
	if info.Emulated {
		parts = append(parts, "(emulated)")
	}
	if len(parts) == 0 {
		return "unknown"
	}
	return strings.Join(parts, " ")
}

// FieldValues returns info's measured platform fields (Fields) by name,
// typed as in SystemInfo: strings, numbers (uint32) and char_signed as a
// bool; fields not measured are left out. For JSON output.
func FieldValues(info *kilnv1.SystemInfo) map[string]any {
	out := map[string]any{}
	if info == nil {
		return out
	}
	m := info.ProtoReflect()
	for _, name := range Fields {
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil || !m.Has(fd) {
			continue
		}
		out[name] = m.Get(fd).Interface()
	}
	return out
}

// DescribeConstraints returns the pinned fields of c as "field=value" pairs
// in Fields order ("arch=s390x endian=big"), or "any" when nothing is pinned.
func DescribeConstraints(c *kilnv1.PlatformConstraints) string {
	var parts []string
	for _, f := range Fields {
		if v := Get(c, f); v != "" {
			parts = append(parts, f+"="+v)
		}
	}
	if len(parts) == 0 {
		return Any
	}
	return strings.Join(parts, " ")
}

func join(name, version string) string {
	switch {
	case name == "":
		return version
	case version == "":
		return name
	}
	return name + "-" + version
}
