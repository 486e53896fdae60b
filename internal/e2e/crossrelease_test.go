package e2e

import (
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

// foreignRelease is each foreign architecture of `make release` with the
// qemu-user program that runs it and what its ELF files must say.
var foreignRelease = []struct {
	arch, qemu string
	machine    elf.Machine
	class      elf.Class
	order      binary.ByteOrder
}{
	{"arm64", "qemu-aarch64", elf.EM_AARCH64, elf.ELFCLASS64, binary.LittleEndian},
	{"armv7", "qemu-arm", elf.EM_ARM, elf.ELFCLASS32, binary.LittleEndian},
	{"ppc64le", "qemu-ppc64le", elf.EM_PPC64, elf.ELFCLASS64, binary.LittleEndian},
	{"s390x", "qemu-s390x", elf.EM_S390, elf.ELFCLASS64, binary.BigEndian},
	{"riscv64", "qemu-riscv64", elf.EM_RISCV, elf.ELFCLASS64, binary.LittleEndian},
}

// TestReleaseBinariesRunOnForeignArchesUnderQemu builds the volunteer's
// programs with scripts/release.sh for every foreign architecture of a
// release (big-endian s390x and 32-bit armv7 among them), checks each is a
// static ELF file for its machine, and runs it under qemu-user: `buildserver
// doctor` checks this machine and asks a real metaserver over gRPC, and
// startcompile prints its help and sends a real request, refused for an
// unknown project.
//
// KILN_RELEASE_ARCHES (comma-separated, e.g. "s390x,armv7": what `make
// test` runs on CI, where a cold Go cache pays about two minutes of
// compiling per architecture) narrows the architectures; unset, all.
func TestReleaseBinariesRunOnForeignArchesUnderQemu(t *testing.T) {
	args := []string{"--program", "buildserver", "--program", "startcompile", "--no-deb"}
	if only := os.Getenv("KILN_RELEASE_ARCHES"); only != "" {
		keep := foreignRelease[:0:0]
		for _, a := range foreignRelease {
			if slices.Contains(strings.Split(only, ","), a.arch) {
				keep = append(keep, a)
			}
		}
		if len(keep) == 0 {
			t.Fatalf("KILN_RELEASE_ARCHES=%q names none of the release's foreign architectures", only)
		}
		foreignRelease = keep
	}
	for _, a := range foreignRelease {
		if _, err := osexec.LookPath(a.qemu); err != nil {
			t.Skipf("%s is not installed (scripts/setup.sh installs qemu-user): %v", a.qemu, err)
		}
		args = append(args, "--arch", a.arch)
	}
	out := release(t, args...)

	f := farmtest.New(t)
	meta := f.StartMetaserver()
	// A PATH without the cross compilers: the doctor then probes the
	// native target only (each probe is a compile and a run), which is
	// enough to exercise it.
	path := t.TempDir()
	cross := regexp.MustCompile(`^[a-z0-9_]+-linux-gnu[a-z0-9]*-`)
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !cross.MatchString(e.Name()) {
				os.Symlink(filepath.Join(dir, e.Name()), filepath.Join(path, e.Name()))
			}
		}
	}
	env := append(os.Environ(), "PATH="+path, "KILN_METASERVER="+meta.Addr)
	for _, a := range foreignRelease {
		t.Run(a.arch, func(t *testing.T) {
			dir := filepath.Join(out, "kiln_"+releaseVersion+"_linux-"+a.arch)
			for _, p := range []string{"buildserver", "startcompile"} {
				checkStaticELF(t, filepath.Join(dir, p), a.machine, a.class, a.order)
			}
			run := func(prog string, args ...string) (string, int) {
				cmd := osexec.Command(a.qemu, append([]string{filepath.Join(dir, prog)}, args...)...)
				cmd.Env = env
				b, err := cmd.CombinedOutput()
				var exit *osexec.ExitError
				switch {
				case err == nil:
					return string(b), 0
				case errors.As(err, &exit):
					return string(b), exit.ExitCode()
				}
				t.Fatalf("%s %s: %v", a.qemu, prog, err)
				return "", -1
			}
			out, code := run("buildserver", "doctor", "--metaserver", meta.Addr, "--data-dir", t.TempDir(), "--build-uid", "1799100000")
			if code != 0 && code != 1 || !strings.Contains(out, "ok    metaserver "+meta.Addr+" answers") ||
				!strings.Contains(out, "would offer: native") {
				t.Errorf("buildserver doctor under %s: exit %d\n%s", a.qemu, code, out)
			}
			out, code = run("startcompile", "--help")
			if code != 0 || !strings.Contains(out, "usage: startcompile [flags] EMAIL") {
				t.Errorf("startcompile --help under %s: exit %d\n%s", a.qemu, code, out)
			}
			out, code = run("startcompile", "--project", "no-such-project", "--arch", "any", "--json", "dev@example.com")
			var res struct {
				Error    string `json:"error"`
				ExitCode int    `json:"exit_code"`
			}
			for _, l := range strings.Split(out, "\n") { // stdout's JSON among stderr's lines
				if strings.HasPrefix(l, "{") {
					json.Unmarshal([]byte(l), &res)
				}
			}
			if code != 2 || res.ExitCode != 2 || !strings.Contains(res.Error, "no-such-project") {
				t.Errorf("startcompile for an unknown project under %s: exit %d\n%s", a.qemu, code, out)
			}
		})
	}
}

// checkStaticELF checks that path is an executable for machine, class and
// byte order, with no program interpreter and no shared library.
func checkStaticELF(t *testing.T, path string, machine elf.Machine, class elf.Class, order binary.ByteOrder) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine || f.Class != class || f.ByteOrder != order || f.Type != elf.ET_EXEC {
		t.Errorf("%s: %v %v %v %v, want %v %v %v ET_EXEC", path, f.Machine, f.Class, f.ByteOrder, f.Type, machine, class, order)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is not static: it has %v", path, p.Type)
		}
	}
}
