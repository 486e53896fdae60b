/* Kiln's target probe: compiled with the target's compiler, run on the
 * target (natively or under qemu-user), prints key=value lines that
 * package sysinfo parses. Compile-time facts come from the compiler's
 * predefined macros, run-time facts (endianness, libc version) from the
 * running program. Keep it dependency-free C89 plus printf (and the
 * system's page size call). */
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#if defined(_WIN32)
#include <windows.h>
#else
#include <unistd.h>
#endif
#ifdef __GLIBC__
#include <gnu/libc-version.h>
#endif

#if defined(__x86_64__) && defined(__ILP32__)
#define KILN_ARCH "x32"
#elif defined(__x86_64__)
#define KILN_ARCH "x86_64"
#elif defined(__i386__)
#define KILN_ARCH "i686"
#elif defined(__aarch64__) && defined(__AARCH64EB__)
#define KILN_ARCH "aarch64_be"
#elif defined(__aarch64__)
#define KILN_ARCH "aarch64"
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 7
#define KILN_ARCH "armv7"
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH == 6
#define KILN_ARCH "armv6"
#elif defined(__arm__)
#define KILN_ARCH "armv5"
#elif defined(__s390x__)
#define KILN_ARCH "s390x"
#elif defined(__s390__)
#define KILN_ARCH "s390"
#elif defined(__powerpc64__) && defined(__LITTLE_ENDIAN__)
#define KILN_ARCH "ppc64le"
#elif defined(__powerpc64__)
#define KILN_ARCH "ppc64"
#elif defined(__powerpc__)
#define KILN_ARCH "ppc"
#elif defined(__riscv) && defined(__riscv_xlen) && __riscv_xlen == 64
#define KILN_ARCH "riscv64"
#elif defined(__riscv)
#define KILN_ARCH "riscv32"
#elif defined(__mips__) && defined(__mips64) && defined(__MIPSEL__)
#define KILN_ARCH "mips64el"
#elif defined(__mips__) && defined(__mips64)
#define KILN_ARCH "mips64"
#elif defined(__mips__) && defined(__MIPSEL__)
#define KILN_ARCH "mipsel"
#elif defined(__mips__)
#define KILN_ARCH "mips"
#elif defined(__loongarch64)
#define KILN_ARCH "loongarch64"
#elif defined(__sparc__) && defined(__arch64__)
#define KILN_ARCH "sparc64"
#elif defined(__sparc__)
#define KILN_ARCH "sparc"
#elif defined(__m68k__)
#define KILN_ARCH "m68k"
#elif defined(__alpha__)
#define KILN_ARCH "alpha"
#elif defined(__hppa__)
#define KILN_ARCH "hppa"
#elif defined(__sh__)
#define KILN_ARCH "sh4"
#else
#define KILN_ARCH ""
#endif

#if defined(__linux__)
#define KILN_OS "linux"
#elif defined(__FreeBSD__)
#define KILN_OS "freebsd"
#elif defined(__NetBSD__)
#define KILN_OS "netbsd"
#elif defined(__OpenBSD__)
#define KILN_OS "openbsd"
#elif defined(__APPLE__)
#define KILN_OS "darwin"
#elif defined(_WIN32)
#define KILN_OS "windows"
#else
#define KILN_OS ""
#endif

/* ABI alignment of a type: its offset after a char in a struct, which is
 * what struct layouts use (i686 Linux: 4 for double and long long,
 * although the compiler prefers 8 for variables). */
struct kiln_ll { char c; long long x; };
struct kiln_d { char c; double x; };
struct kiln_p { char c; void *x; };

static unsigned long page_size(void)
{
#if defined(_WIN32)
	SYSTEM_INFO si;
	GetSystemInfo(&si);
	return (unsigned long)si.dwPageSize;
#else
	long n = sysconf(_SC_PAGESIZE);
	return n > 0 ? (unsigned long)n : 0;
#endif
}

int main(void)
{
	union {
		unsigned long v;
		unsigned char b[sizeof(unsigned long)];
	} u;
	u.v = 1;

	printf("os=%s\n", KILN_OS);
	printf("arch=%s\n", KILN_ARCH);
	printf("char_bit=%d\n", CHAR_BIT);
	printf("sizeof_short=%u\n", (unsigned)sizeof(short));
	printf("sizeof_int=%u\n", (unsigned)sizeof(int));
	printf("sizeof_long=%u\n", (unsigned)sizeof(long));
	printf("sizeof_long_long=%u\n", (unsigned)sizeof(long long));
	printf("sizeof_pointer=%u\n", (unsigned)sizeof(void *));
	printf("char_signed=%d\n", (char)-1 < 0 ? 1 : 0);
	printf("align_long_long=%u\n", (unsigned)offsetof(struct kiln_ll, x));
	printf("align_double=%u\n", (unsigned)offsetof(struct kiln_d, x));
	printf("align_pointer=%u\n", (unsigned)offsetof(struct kiln_p, x));
	printf("sizeof_long_double=%u\n", (unsigned)sizeof(long double));
	printf("sizeof_size_t=%u\n", (unsigned)sizeof(size_t));
	printf("sizeof_wchar_t=%u\n", (unsigned)sizeof(wchar_t));
	printf("page_size=%lu\n", page_size());
	printf("endian=%s\n", u.b[0] == 1 ? "little" : u.b[sizeof(u.b) - 1] == 1 ? "big" : "");
#if defined(__clang__)
	printf("compiler=clang\ncompiler_version=%d.%d.%d\n", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
	printf("compiler=gcc\ncompiler_version=%d.%d.%d\n", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#endif
#if defined(__GLIBC__)
	printf("libc=glibc\nlibc_version=%s\n", gnu_get_libc_version());
#elif defined(__UCLIBC__)
	printf("libc=uclibc\nlibc_version=%d.%d.%d\n", __UCLIBC_MAJOR__, __UCLIBC_MINOR__, __UCLIBC_SUBLEVEL__);
#elif defined(__BIONIC__)
	printf("libc=bionic\n");
#elif defined(_UCRT)
	/* mingw-w64 linked against the Universal C runtime */
	printf("libc=ucrt\nlibc_version=%d.%d\n", __MSVCRT_VERSION__ >> 8, __MSVCRT_VERSION__ & 0xff);
#elif defined(__MSVCRT_VERSION__)
	/* mingw-w64 linked against msvcrt.dll (0x700: 7.0) */
	printf("libc=msvcrt\nlibc_version=%d.%d\n", __MSVCRT_VERSION__ >> 8, __MSVCRT_VERSION__ & 0xff);
#endif
	printf("end=1\n");
	return 0;
}
