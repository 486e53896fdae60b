package sysinfo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// loaderTimeout bounds running the musl loader for its banner.
const loaderTimeout = 10 * time.Second

// muslVersionRE finds the version in the musl loader's banner:
//
//	musl libc (x86_64)
//	Version 1.2.3
//	Dynamic Program Loader
var muslVersionRE = regexp.MustCompile(`(?m)^Version\s+(\S+)`)

// probeLibc takes glibc (and uClibc) from the program, which reports the
// run-time version. musl defines no macro: it is recognized by the binary's
// loader (/lib/ld-musl-ARCH.so.1), whose banner gives the version.
func probeLibc(ctx context.Context, env *probeEnv, info *kilnv1.SystemInfo) error {
	if l := env.prog.values["libc"]; l != "" {
		info.Libc = l
		info.LibcVersion = env.prog.values["libc_version"]
		return nil
	}
	if !isMuslLoader(env.prog.interp) {
		return nil // unknown libc: left empty rather than guessed
	}
	info.Libc = "musl"
	loader := env.prog.interp
	if len(env.tc.Emulator) > 0 {
		// Under qemu -L the loader lives below the sysroot.
		if p := filepath.Join(sysroot(env.tc), loader); fileExists(p) {
			loader = p
		}
	}
	v, err := muslVersion(ctx, env.tc.Emulator, loader)
	if err != nil {
		return err
	}
	info.LibcVersion = v
	return nil
}

// isMuslLoader reports whether an ELF interpreter path is musl's loader.
func isMuslLoader(interp string) bool {
	return strings.HasPrefix(path.Base(interp), "ld-musl-")
}

// muslVersion runs the musl loader with no arguments (under emulator when
// given); it prints its banner on stderr and exits with status 1.
func muslVersion(ctx context.Context, emulator []string, loader string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, loaderTimeout)
	defer cancel()
	argv := append(append([]string(nil), emulator...), loader)
	_, stderr, err := run(ctx, "", argv, nil)
	if m := muslVersionRE.FindStringSubmatch(stderr); m != nil {
		return m[1], nil
	}
	if err == nil {
		err = errors.New("no version in its banner")
	}
	return "", fmt.Errorf("musl loader %s: %w: %s", loader, err, stderr)
}

// sysroot is the -L prefix of an emulator command line, or "".
func sysroot(tc Toolchain) string {
	for i, a := range tc.Emulator {
		if a == "-L" && i+1 < len(tc.Emulator) {
			return tc.Emulator[i+1]
		}
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
