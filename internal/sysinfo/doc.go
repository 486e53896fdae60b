// Package sysinfo measures build targets: what a machine's compilers really
// produce, never what a volunteer declares.
//
// A target is one way a build server can build ([TargetSpec]): the native
// toolchain, musl-gcc, or a Debian-style cross toolchain whose binaries run
// under qemu-user (a mingw-w64 one: PE programs run by wine). Each cross
// family's quirks (qemu's name for the arch, the loader prefix, wine's
// launcher and prefix, the .exe suffix, the binfmt_misc rule) live in
// [TargetSpec.Toolchain] and the prober, nowhere else. [Probe] compiles a small C program with the target's
// compiler, runs it (under the emulator when cross) and lets one prober per
// attribute read the result, in the manner of Nomad's fingerprinters:
//
//	program   compile + run probe.c            (the only step that runs target code)
//	os        __linux__ ...                    -> SystemInfo.os
//	arch      __s390x__ ... + CanonicalArch    -> arch
//	sizes     CHAR_BIT, sizeof                 -> char_bit, sizeof_*, data_model
//	abi       (char)-1 < 0, offsetof, sysconf  -> char_signed, align_*, sizeof_long_double,
//	                                              sizeof_size_t, sizeof_wchar_t, page_size
//	endian    a union, measured at run time    -> endian
//	compiler  __clang__ / __GNUC__             -> compiler, compiler_version
//	libc      __GLIBC__ + gnu_get_libc_version, the musl loader's banner,
//	          or mingw-w64's runtime (_UCRT: ucrt, else msvcrt)
//	emulated  cross kind or foreign arch       -> emulated
//	host      tools (concurrently), cpus, memory
//
// [Local] is the fast variant for startcompile: it describes the machine it
// runs on without compiling anything.
//
// Linux only: the host probers live in _linux.go files.
package sysinfo
