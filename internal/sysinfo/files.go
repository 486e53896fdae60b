package sysinfo

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// TargetFile is a file, or a directory of symbolic links, that a build on
// the target needs: the build server writes it under each attempt's
// $HOME/.kiln before the steps run and sets Env to its path.
type TargetFile struct {
	// Env is the variable through which the steps find it.
	Env string
	// Name is its path under $HOME/.kiln, one plain name.
	Name string
	// Content is the file's text; unused when Links is set.
	Content string
	// Links, when set, makes Name a directory of symbolic links, each
	// name pointing at a host path.
	Links map[string]string
}

// kernelHeaderDirs are the directories of Linux's user-space headers
// (Debian's linux-libc-dev) that real code includes as <linux/...>,
// <asm/...> and so on; musl-gcc does not see /usr/include.
var kernelHeaderDirs = []string{"linux", "asm-generic", "drm", "misc", "mtd", "rdma", "scsi", "sound", "video", "xen"}

// Files returns the files a build on the target needs, given its measured
// system info: on a cross target a CMake toolchain file
// (KILN_CMAKE_TOOLCHAIN_FILE) and a Meson cross file
// (KILN_MESON_CROSS_FILE); on a musl target a directory of links to the
// host's kernel headers on musl-gcc's C include path (C_INCLUDE_PATH),
// because Debian's musl headers lack them (<linux/limits.h>). Only host
// directories that exist are linked. None for a native target.
func (t TargetSpec) Files(sys *kilnv1.SystemInfo) []TargetFile {
	tc := t.Toolchain()
	switch t.Kind {
	case KindCross:
		return []TargetFile{
			{Env: "KILN_CMAKE_TOOLCHAIN_FILE", Name: "toolchain.cmake", Content: cmakeToolchain(t, tc, sys)},
			{Env: "KILN_MESON_CROSS_FILE", Name: "meson-cross.ini", Content: mesonCross(t, tc, sys)},
		}
	case KindMusl:
		links := map[string]string{}
		for _, d := range kernelHeaderDirs {
			if dirExists("/usr/include/" + d) {
				links[d] = "/usr/include/" + d
			}
		}
		if asm := "/usr/include/" + tc.BuildTriple + "/asm"; dirExists(asm) {
			links["asm"] = asm
		}
		return []TargetFile{{Env: "C_INCLUDE_PATH", Name: "musl-include", Links: links}}
	}
	return nil
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// WriteFiles writes files under dir (created, emptied first) and returns
// NAME=path environment entries for them.
func WriteFiles(dir string, files []TargetFile) ([]string, error) {
	if len(files) == 0 {
		return nil, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var env []string
	for _, f := range files {
		if f.Name == "" || f.Name != filepath.Base(f.Name) || f.Name == "." || f.Name == ".." {
			return nil, fmt.Errorf("target file name %q is not a plain name", f.Name)
		}
		p := filepath.Join(dir, f.Name)
		if f.Links != nil {
			if err := os.Mkdir(p, 0o755); err != nil {
				return nil, err
			}
			for name, target := range f.Links {
				if err := os.Symlink(target, filepath.Join(p, filepath.Base(name))); err != nil {
					return nil, err
				}
			}
		} else if err := os.WriteFile(p, []byte(f.Content), 0o644); err != nil {
			return nil, err
		}
		env = append(env, f.Env+"="+p)
	}
	return env, nil
}

// cmakeProcessor is CMAKE_SYSTEM_PROCESSOR by canonical arch where it is
// not the arch itself: what uname -m says on such a machine.
var cmakeProcessor = map[string]string{"armv7": "armv7l", "armv6": "armv6l", "armv5": "armv5tel", "mipsel": "mips", "mips64el": "mips64", "hppa": "parisc"}

// mesonCPUFamily is Meson's cpu_family by canonical arch where it is not
// the arch itself.
var mesonCPUFamily = map[string]string{
	"i686": "x86", "armv7": "arm", "armv6": "arm", "armv5": "arm", "aarch64_be": "aarch64",
	"ppc64le": "ppc64", "mipsel": "mips", "mips64el": "mips64", "hppa": "parisc",
}

// toolName returns the value of NAME in a toolchain's environment.
func toolName(tc Toolchain, name string) string {
	for _, kv := range tc.Env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// cmakeToolchain is a CMake toolchain file for a cross target: Linux on
// the target's processor, its compilers (C++ always named, so that CMake
// never falls back to the host's c++), the emulator that runs its
// binaries for try_run and ctest, and programs found on the host only.
func cmakeToolchain(t TargetSpec, tc Toolchain, sys *kilnv1.SystemInfo) string {
	arch := platform.CanonicalArch(t.Triple)
	if a := sys.GetArch(); a != "" {
		arch = a
	}
	proc := arch
	if p, ok := cmakeProcessor[arch]; ok {
		proc = p
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Kiln: CMake toolchain file of target %s.\n", t.ID)
	fmt.Fprintf(&b, "set(CMAKE_SYSTEM_NAME %s)\n", map[bool]string{false: "Linux", true: "Windows"}[tc.Windows])
	fmt.Fprintf(&b, "set(CMAKE_SYSTEM_PROCESSOR %s)\n", proc)
	fmt.Fprintf(&b, "set(CMAKE_C_COMPILER %s)\n", tc.CC)
	fmt.Fprintf(&b, "set(CMAKE_CXX_COMPILER %s-g++)\n", t.Triple)
	fmt.Fprintf(&b, "set(CMAKE_CROSSCOMPILING_EMULATOR %s)\n", strings.Join(tc.Emulator, ";"))
	fmt.Fprintf(&b, "set(CMAKE_FIND_ROOT_PATH /usr/%s)\n", t.Triple)
	fmt.Fprintf(&b, "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)\n")
	return b.String()
}

// mesonCross is a Meson cross file for a cross target, with exe_wrapper so
// that meson test runs the target's tests.
func mesonCross(t TargetSpec, tc Toolchain, sys *kilnv1.SystemInfo) string {
	arch := platform.CanonicalArch(t.Triple)
	if a := sys.GetArch(); a != "" {
		arch = a
	}
	family := arch
	if f, ok := mesonCPUFamily[arch]; ok {
		family = f
	}
	endian := sys.GetEndian()
	if endian == "" {
		endian = "little"
	}
	quote := func(s string) string { return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'" }
	list := func(ss []string) string {
		q := make([]string, len(ss))
		for i, s := range ss {
			q[i] = quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Kiln: Meson cross file of target %s.\n[binaries]\n", t.ID)
	fmt.Fprintf(&b, "c = %s\n", quote(tc.CC))
	fmt.Fprintf(&b, "cpp = %s\n", quote(t.Triple+"-g++"))
	for _, tool := range []struct{ key, env string }{{"ar", "AR"}, {"strip", "STRIP"}, {"nm", "NM"}, {"objcopy", "OBJCOPY"}} {
		if v := toolName(tc, tool.env); v != "" {
			fmt.Fprintf(&b, "%s = %s\n", tool.key, quote(v))
		}
	}
	fmt.Fprintf(&b, "pkgconfig = 'pkg-config'\n")
	fmt.Fprintf(&b, "exe_wrapper = %s\n", list(tc.Emulator))
	fmt.Fprintf(&b, "\n[properties]\npkg_config_libdir = %s\nneeds_exe_wrapper = true\n", list(strings.Split(PkgConfigLibDir(t.Triple), ":")))
	fmt.Fprintf(&b, "\n[host_machine]\nsystem = %s\ncpu_family = %s\ncpu = %s\nendian = %s\n", quote(map[bool]string{false: "linux", true: "windows"}[tc.Windows]), quote(family), quote(arch), quote(endian))
	return b.String()
}
