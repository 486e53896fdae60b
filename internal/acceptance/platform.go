package acceptance

import "debug/elf"

// Platform is one column of the suite: how startcompile asks for it and
// what every ELF file built for it must be.
type Platform struct {
	// Name is the column's name ("native", "s390x", ...).
	Name string
	// Pins are the startcompile flags that ask for this platform. Without
	// any, startcompile pins this machine (x86-64 glibc).
	Pins []string
	// Target is the buildserver target expected to build it.
	Target string
	// Machine, Class and Data are what every ELF file must declare.
	Machine elf.Machine
	Class   elf.Class
	Data    elf.Data
	// Interp is the program interpreter of dynamic executables.
	Interp string
	// Musl: the C library is musl (needs libc.so, never libc.so.6).
	Musl bool
	// HardFloat: executables and shared objects carry ARM's
	// EF_ARM_ABI_FLOAT_HARD flag (armhf, not armel).
	HardFloat bool
}

// Platforms are the suite's columns, in report order.
var Platforms = []Platform{
	{Name: "native", Target: "native",
		Machine: elf.EM_X86_64, Class: elf.ELFCLASS64, Data: elf.ELFDATA2LSB,
		Interp: "/lib64/ld-linux-x86-64.so.2"},
	{Name: "musl", Pins: []string{"--libc", "musl"}, Target: "musl",
		Machine: elf.EM_X86_64, Class: elf.ELFCLASS64, Data: elf.ELFDATA2LSB,
		Interp: "/lib/ld-musl-x86_64.so.1", Musl: true},
	{Name: "s390x", Pins: []string{"--arch", "s390x"}, Target: "cross:s390x-linux-gnu",
		Machine: elf.EM_S390, Class: elf.ELFCLASS64, Data: elf.ELFDATA2MSB,
		Interp: "/lib/ld64.so.1"},
	{Name: "armhf", Pins: []string{"--arch", "armv7"}, Target: "cross:arm-linux-gnueabihf",
		Machine: elf.EM_ARM, Class: elf.ELFCLASS32, Data: elf.ELFDATA2LSB,
		Interp: "/lib/ld-linux-armhf.so.3", HardFloat: true},
	{Name: "ppc", Pins: []string{"--arch", "ppc"}, Target: "cross:powerpc-linux-gnu",
		Machine: elf.EM_PPC, Class: elf.ELFCLASS32, Data: elf.ELFDATA2MSB,
		Interp: "/lib/ld.so.1"},
	{Name: "i686", Pins: []string{"--arch", "i686"}, Target: "cross:i686-linux-gnu",
		Machine: elf.EM_386, Class: elf.ELFCLASS32, Data: elf.ELFDATA2LSB,
		Interp: "/lib/ld-linux.so.2"},
}

// PlatformByName returns the platform called name.
func PlatformByName(name string) (Platform, bool) {
	for _, p := range Platforms {
		if p.Name == name {
			return p, true
		}
	}
	return Platform{}, false
}

// TargetFlags are the buildserver flags that offer every platform's target.
func TargetFlags() []string {
	var args []string
	for _, p := range Platforms {
		args = append(args, "--target", p.Target)
	}
	return args
}
