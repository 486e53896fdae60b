package sysinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func fileByEnv(files []TargetFile, env string) (TargetFile, bool) {
	for _, f := range files {
		if f.Env == env {
			return f, true
		}
	}
	return TargetFile{}, false
}

func TestTargetSpec_Files_CrossGetsToolchainAndCrossFile(t *testing.T) {
	spec, _ := ParseTarget("cross:s390x-linux-gnu")
	files := spec.Files(&kilnv1.SystemInfo{Arch: "s390x", Endian: "big", DataModel: "LP64"})
	cm, ok := fileByEnv(files, "KILN_CMAKE_TOOLCHAIN_FILE")
	if !ok {
		t.Fatalf("no CMake toolchain file in %+v", files)
	}
	for _, want := range []string{
		"set(CMAKE_SYSTEM_NAME Linux)\n", "set(CMAKE_SYSTEM_PROCESSOR s390x)\n",
		"set(CMAKE_C_COMPILER s390x-linux-gnu-gcc)\n", "set(CMAKE_CXX_COMPILER s390x-linux-gnu-g++)\n",
		"set(CMAKE_CROSSCOMPILING_EMULATOR qemu-s390x;-L;/usr/s390x-linux-gnu)\n",
		"set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)\n",
	} {
		if !strings.Contains(cm.Content, want) {
			t.Errorf("toolchain file lacks %q:\n%s", want, cm.Content)
		}
	}
	ms, ok := fileByEnv(files, "KILN_MESON_CROSS_FILE")
	if !ok {
		t.Fatalf("no Meson cross file in %+v", files)
	}
	for _, want := range []string{
		"c = 's390x-linux-gnu-gcc'\n", "ar = 's390x-linux-gnu-ar'\n",
		"exe_wrapper = ['qemu-s390x', '-L', '/usr/s390x-linux-gnu']\n",
		"pkg_config_libdir = ['/usr/lib/s390x-linux-gnu/pkgconfig', '/usr/s390x-linux-gnu/lib/pkgconfig', '/usr/share/pkgconfig']\n",
		"system = 'linux'\ncpu_family = 's390x'\ncpu = 's390x'\nendian = 'big'\n",
	} {
		if !strings.Contains(ms.Content, want) {
			t.Errorf("cross file lacks %q:\n%s", want, ms.Content)
		}
	}
}

func TestTargetSpec_Files_NamesOfOtherArches(t *testing.T) {
	for _, c := range []struct{ target, arch, endian, processor, family string }{
		{"cross:arm-linux-gnueabihf", "armv7", "little", "armv7l", "arm"},
		{"cross:i686-linux-gnu", "i686", "little", "i686", "x86"},
		{"cross:powerpc-linux-gnu", "ppc", "big", "ppc", "ppc"},
	} {
		spec, _ := ParseTarget(c.target)
		files := spec.Files(&kilnv1.SystemInfo{Arch: c.arch, Endian: c.endian})
		cm, _ := fileByEnv(files, "KILN_CMAKE_TOOLCHAIN_FILE")
		ms, _ := fileByEnv(files, "KILN_MESON_CROSS_FILE")
		if !strings.Contains(cm.Content, "set(CMAKE_SYSTEM_PROCESSOR "+c.processor+")") {
			t.Errorf("%s: toolchain file:\n%s", c.target, cm.Content)
		}
		if !strings.Contains(ms.Content, "cpu_family = '"+c.family+"'\ncpu = '"+c.arch+"'\nendian = '"+c.endian+"'") {
			t.Errorf("%s: cross file:\n%s", c.target, ms.Content)
		}
	}
}

func TestTargetSpec_Files_NativeHasNone(t *testing.T) {
	spec, _ := ParseTarget("native")
	if files := spec.Files(&kilnv1.SystemInfo{Arch: "x86_64"}); len(files) != 0 {
		t.Errorf("native target files %+v, want none", files)
	}
}

func TestTargetSpec_Files_MuslSeesKernelHeaders(t *testing.T) {
	if _, err := exec.LookPath("musl-gcc"); err != nil {
		t.Skip("musl-gcc not installed")
	}
	spec, _ := ParseTarget("musl")
	env, err := WriteFiles(filepath.Join(t.TempDir(), ".kiln"), spec.Files(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(env) != 1 || !strings.HasPrefix(env[0], "C_INCLUDE_PATH=") {
		t.Fatalf("env %q, want C_INCLUDE_PATH", env)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "t.c")
	prog := "#include <linux/limits.h>\n#include <linux/fs.h>\n#include <asm/types.h>\n#include <stdio.h>\nint main(void){printf(\"%d\\n\", PATH_MAX);return 0;}\n"
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	build := func(extra []string) ([]byte, error) {
		cmd := exec.Command("musl-gcc", "-o", filepath.Join(dir, "t"), src)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, extra...)
		return cmd.CombinedOutput()
	}
	// The fixture must need the links: without them musl-gcc fails.
	if out, err := build(nil); err == nil || !strings.Contains(string(out), "linux/limits.h") {
		t.Fatalf("musl-gcc found <linux/limits.h> without the links (%v): %s", err, out)
	}
	if out, err := build(env); err != nil {
		t.Fatalf("musl-gcc with %s: %v\n%s", env[0], err, out)
	}
	out, err := exec.Command(filepath.Join(dir, "t")).Output()
	if err != nil || strings.TrimSpace(string(out)) != "4096" {
		t.Errorf("program printed %q, %v; want 4096", out, err)
	}
}

func TestWriteFiles_ReplacesAndRefusesPaths(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ".kiln")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stale"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	env, err := WriteFiles(dir, []TargetFile{{Env: "X_FILE", Name: "x.ini", Content: "x=1\n"}})
	if err != nil || len(env) != 1 || env[0] != "X_FILE="+filepath.Join(dir, "x.ini") {
		t.Fatalf("WriteFiles = %q, %v", env, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale")); !os.IsNotExist(err) {
		t.Errorf("an earlier attempt's file survived: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "x.ini")); string(b) != "x=1\n" {
		t.Errorf("x.ini = %q", b)
	}
	if _, err := WriteFiles(dir, []TargetFile{{Env: "X", Name: "../escape"}}); err == nil {
		t.Error("a name climbing out was written")
	}
}
