package e2e

import (
	"debug/pe"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Issue 18, platform breadth: the sample project's own `make check` on
// every platform of this machine, and a project whose bugs show only on
// some of them.

// breadthLinuxTargets and breadthWindowsTargets are the 16 platforms
// scripts/setup.sh installs: the six of before, eight more Linux
// architectures and the two mingw-w64 Windows targets.
var (
	breadthLinuxTargets = []string{
		"native", "musl", "cross:i686-linux-gnu", "cross:arm-linux-gnueabihf", "cross:s390x-linux-gnu", "cross:powerpc-linux-gnu",
		"cross:aarch64-linux-gnu", "cross:riscv64-linux-gnu", "cross:powerpc64le-linux-gnu", "cross:powerpc64-linux-gnu",
		"cross:mips64el-linux-gnuabi64", "cross:sparc64-linux-gnu", "cross:m68k-linux-gnu", "cross:hppa-linux-gnu",
	}
	breadthWindowsTargets = []string{"cross:x86_64-w64-mingw32", "cross:i686-w64-mingw32"}
)

// breadthStrictAlignment are the architectures whose misaligned loads
// trap under qemu-user 7.2 (SIGBUS), measured with the buggy project's
// own program: mips64el and sparc64 do; hppa, m68k, arm, aarch64, powerpc,
// riscv64 and s390x do not. Kiln measures no such field: the test names
// them.
var breadthStrictAlignment = []string{"mips64el", "sparc64"}

// breadthPortableFiles is the sample project: a program, a Makefile whose
// check runs it both directly (./bin/hello.exe through binfmt_misc, as
// real projects do) and through $(KILN_EMULATOR), and its manifest.
var breadthPortableFiles = map[string]string{
	"hello.c": "#include <stdio.h>\n\nint main(void)\n{\n\tputs(\"hello, kiln\");\n\treturn 0;\n}\n",
	"Makefile": `EXE = $(KILN_EXEEXT)

all: bin/hello$(EXE)

bin/hello$(EXE): hello.c
	mkdir -p bin
	$(CC) -O1 -o $@ hello.c

# Windows programs end their lines with CR LF.
check: all
	./bin/hello$(EXE) > direct.raw
	$(KILN_EMULATOR) ./bin/hello$(EXE) > emulated.raw
	tr -d '\r' < direct.raw | grep -qx 'hello, kiln'
	tr -d '\r' < emulated.raw | grep -qx 'hello, kiln'
	echo "ran on: $(KILN_TARGET)"

.PHONY: all check
`,
	"kiln.yaml": "requires: [make]\nbuild:\n  - make\ncheck:\n  - make check\nartifacts:\n  - bin/*\ntimeout: 10m\n",
}

// breadthBuggyFiles is a project written on x86 with three bugs that
// x86 hides: it takes plain char for signed, reads an int's first byte as
// its low byte, and stores through a misaligned pointer. Its `make check`
// fails exactly on the unsigned-char, big-endian and strict-alignment
// platforms.
var breadthBuggyFiles = map[string]string{
	"bug.c": `#include <stdio.h>
#include <string.h>

int main(void)
{
	static unsigned char buf[16];
	volatile unsigned int *p = (volatile unsigned int *)(buf + 1);
	unsigned int one = 1;
	unsigned char first;
	char c = (char)200;
	int bad = 0;

	if (c >= 0) { /* bug 1: "char is signed" */
		puts("bug: plain char is unsigned here");
		bad = 1;
	}
	memcpy(&first, &one, 1);
	if (first != 1) { /* bug 2: "the first byte is the low one" */
		puts("bug: big-endian");
		bad = 1;
	}
	fflush(stdout);
	*p = 0x01020304u; /* bug 3: a misaligned store and load */
	if (*p != 0x01020304u)
		bad = 1;
	puts(bad ? "FAIL" : "ok");
	return bad;
}
`,
	"Makefile": `EXE = $(KILN_EXEEXT)

all: bin/bug$(EXE)

bin/bug$(EXE): bug.c
	mkdir -p bin
	$(CC) -O0 -o $@ bug.c

check: all
	$(KILN_EMULATOR) ./bin/bug$(EXE)

.PHONY: all check
`,
	"kiln.yaml": "requires: [make]\nbuild:\n  - make\ncheck:\n  - make check\nartifacts:\n  - bin/*\ntimeout: 10m\n",
}

// TestBreadthSixteenPlatforms is the whole of issue 18 on this machine:
// 16 platforms from two build servers (14 Linux, 2 Windows), the sample
// project's make check on each, the buggy project failing exactly where
// it must. 111 s on the project's shared 2-core machine (148 s before
// probes ran two at a time), 50 s of it probing (the two wine prefixes),
// 32 s the sample project's check, 28 s the buggy one's; every wait in
// it is bounded (5 min for the probes, 20 min per check).
func TestBreadthSixteenPlatforms(t *testing.T) {
	breadthRun(t, breadthLinuxTargets, breadthWindowsTargets)
}

// breadthEntry is one entry of check --json, with the platform's fields.
type breadthEntry struct {
	Platform    string `json:"platform"`
	BuildID     uint64 `json:"build_id"`
	State       string `json:"state"`
	Os          string `json:"os"`
	Arch        string `json:"arch"`
	Endian      string `json:"endian"`
	DataModel   string `json:"data_model"`
	Libc        string `json:"libc"`
	CharSigned  *bool  `json:"char_signed"`
	AlignDouble uint32 `json:"align_double"`
	WcharT      uint32 `json:"sizeof_wchar_t"`
	PageSize    uint32 `json:"page_size"`
}

func breadthRun(t *testing.T, linux, windows []string) {
	start := time.Now()
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "500ms", "--lease", "30s")
	portable, _ := farmtest.CProject(t, farmtest.CProjectOptions{Name: "portable", Files: breadthPortableFiles})
	f.AddProject("portable", "file://"+portable)
	buggy, _ := farmtest.CProject(t, farmtest.CProjectOptions{Name: "buggy", Files: breadthBuggyFiles})
	f.AddProject("buggy", "file://"+buggy)

	servers := map[string][]string{"breadth-linux": linux, "breadth-windows": windows}
	for name, targets := range servers {
		args := []string{"--jobs", "2"}
		for _, tg := range targets {
			args = append(args, "--target", tg)
		}
		f.StartBuildserver(f.AddBuildServer(name), args...)
	}
	// Probing a Windows target makes a wine prefix: up to a minute.
	farmtest.Eventually(t, 5*time.Minute, func() error {
		for name, targets := range servers {
			got := map[string]bool{}
			for _, s := range platformServers(t, f) {
				if s.GetName() == name && s.GetConnected() {
					for _, tg := range s.GetTargets() {
						got[tg.GetId()] = true
					}
				}
			}
			for _, tg := range targets {
				if !got[tg] {
					return fmt.Errorf("%s does not offer %s yet", name, tg)
				}
			}
		}
		return nil
	})
	n := len(linux) + len(windows)
	t.Logf("%d targets probed and offered after %.1f s", n, time.Since(start).Seconds())

	// What each target measured decides where the buggy project must fail.
	wantFail := map[string]bool{} // by "os/arch libc"
	systems := map[string]*kilnv1.SystemInfo{}
	for name, targets := range servers {
		for _, tg := range targets {
			s := platformTarget(t, f, name, tg)
			if s == nil || s.CharSigned == nil || s.GetAlignDouble() == 0 || s.GetSizeofWcharT() == 0 || s.GetPageSize() == 0 {
				t.Fatalf("%s/%s measured %v: the new fields are missing", name, tg, s)
			}
			key := breadthKey(s.GetOs(), s.GetArch(), s.GetLibc())
			systems[key] = s
			wantFail[key] = !s.GetCharSigned() || s.GetEndian() == "big" || slices.Contains(breadthStrictAlignment, s.GetArch())
		}
	}
	if len(systems) != n {
		t.Fatalf("%d targets measured %d distinct platforms", n, len(systems))
	}
	breadthMeasuredSpotChecks(t, systems)

	t.Run("check runs the sample project's make check on every platform", func(t *testing.T) {
		began := time.Now()
		// One address per check: the metaserver takes 30 requests a minute
		// from one (--requests-per-minute), a check makes one per platform.
		r := f.Startcompile("check", "--project", "portable", "--json", "--timeout", "20m", "portable@example.com")
		expectExit(t, r, 0)
		var cr struct {
			Succeeded, Failed []breadthEntry
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &cr); err != nil {
			t.Fatalf("check --json printed %q: %v", r.Stdout, err)
		}
		if len(cr.Succeeded) != n || len(cr.Failed) != 0 {
			t.Fatalf("check: %d succeeded, %d failed, want %d and 0:\n%s\n%s", len(cr.Succeeded), len(cr.Failed), n, r.Stdout, r.Stderr)
		}
		seen := map[string]bool{}
		for _, e := range cr.Succeeded {
			key := breadthKey(e.Os, e.Arch, e.Libc)
			s := systems[key]
			if s == nil || seen[key] || e.State != "succeeded" || e.Endian != s.GetEndian() || e.DataModel != s.GetDataModel() ||
				e.CharSigned == nil || *e.CharSigned != s.GetCharSigned() || e.AlignDouble != s.GetAlignDouble() || e.WcharT != s.GetSizeofWcharT() {
				t.Errorf("entry %+v does not name a distinct measured platform (%v)", e, s)
			}
			seen[key] = true
			log := platformLog(t, f, e.BuildID)
			if !strings.Contains(log, "ran on: ") {
				t.Errorf("build %d (%s): make check did not finish:\n%s", e.BuildID, key, log)
			}
		}
		t.Logf("check of the sample project on %d platforms: %.1f s", n, time.Since(began).Seconds())
		r = f.Startcompile("check", "--project", "portable", "--timeout", "5m", "portable-again@example.com")
		expectExit(t, r, 0)
		t.Logf("startcompile check (answered from the cache):\n%s", r.Stdout)
	})

	t.Run("the buggy project fails exactly on unsigned-char, big-endian and strict-alignment platforms", func(t *testing.T) {
		began := time.Now()
		r := f.Startcompile("check", "--project", "buggy", "--timeout", "20m", "buggy@example.com")
		expectExit(t, r, 1)
		t.Logf("startcompile check:\n%s", r.Stdout)
		ok, bad := platformSection(r.Stdout, "SUCCESS"), platformSection(r.Stdout, "FAILURE")
		var wantOK, wantBad []string
		for key, fail := range wantFail {
			if fail {
				wantBad = append(wantBad, key)
			} else {
				wantOK = append(wantOK, key)
			}
		}
		sort.Strings(wantOK)
		sort.Strings(wantBad)
		if len(ok) != len(wantOK) || len(bad) != len(wantBad) {
			t.Fatalf("%d successes and %d failures, want %v and %v:\n%s", len(ok), len(bad), wantOK, wantBad, r.Stdout)
		}
		for _, key := range wantBad {
			if l := platformLineWith(bad, breadthDescribed(systems[key])); l == "" || !strings.Contains(l, "failed") || !strings.Contains(l, "make check") {
				t.Errorf("FAILURE lacks %s failing its make check: %q", key, bad)
			}
		}
		for _, key := range wantOK {
			if platformLineWith(ok, breadthDescribed(systems[key])) == "" {
				t.Errorf("SUCCESS lacks %s: %q", key, ok)
			}
		}
		t.Logf("check of the buggy project on %d platforms: %.1f s", n, time.Since(began).Seconds())
	})

	t.Run("--char unsigned reaches an unsigned-char platform", func(t *testing.T) {
		res, info := platformRun(t, f, 0, "--project", "portable", "--char", "unsigned", "--wait", "--json", "char@example.com")
		if res.State != "succeeded" || info == nil || info.CharSigned == nil || info.GetCharSigned() {
			t.Fatalf("result %+v on %v, want a success on an unsigned-char platform", res, info)
		}
	})

	t.Run("--os windows --arch i686 downloads a PE32 for i386", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		res, info := platformRun(t, f, 0, append(platformRequest("portable", "--os", "windows", "--arch", "i686"), "--download", out, "--json", "windows@example.com")...)
		if res.State != "succeeded" || info.GetOs() != "windows" || info.GetLibc() == "" || info.GetSizeofWcharT() != 2 {
			t.Fatalf("result %+v on %v", res, info)
		}
		pf, err := pe.Open(filepath.Join(out, "bin", "hello.exe"))
		if err != nil {
			t.Fatalf("downloaded bin/hello.exe: %v", err)
		}
		defer pf.Close()
		if _, is32 := pf.OptionalHeader.(*pe.OptionalHeader32); pf.Machine != pe.IMAGE_FILE_MACHINE_I386 || !is32 {
			t.Fatalf("bin/hello.exe is machine 0x%x (%T), want an i386 PE32", pf.Machine, pf.OptionalHeader)
		}
	})
	t.Logf("%d platforms, whole test: %.1f s", n, time.Since(start).Seconds())
}

func breadthKey(os, arch, libc string) string { return os + "/" + arch + " " + libc }

// breadthDescribed is the start of the line check prints for s:
// "linux/m68k big ILP32 glibc".
func breadthDescribed(s *kilnv1.SystemInfo) string {
	return fmt.Sprintf("%s/%s %s %s %s", s.GetOs(), s.GetArch(), s.GetEndian(), s.GetDataModel(), s.GetLibc())
}

// breadthMeasuredSpotChecks checks measured facts that distinguish the
// platforms, where each is offered.
func breadthMeasuredSpotChecks(t *testing.T, systems map[string]*kilnv1.SystemInfo) {
	t.Helper()
	for _, c := range []struct {
		key, field, want string
	}{
		{"windows/x86_64 msvcrt", "data_model", "LLP64"},
		{"windows/x86_64 msvcrt", "sizeof_wchar_t", "2"},
		{"windows/i686 msvcrt", "align_double", "8"},
		{"linux/i686 glibc", "align_double", "4"},
		{"linux/aarch64 glibc", "char_signed", "unsigned"},
		{"linux/x86_64 glibc", "char_signed", "signed"},
		{"linux/m68k glibc", "align_pointer", "2"},
		{"linux/m68k glibc", "endian", "big"},
		{"linux/sparc64 glibc", "page_size", "8192"},
		{"linux/ppc64le glibc", "endian", "little"},
		{"linux/ppc64 glibc", "endian", "big"},
	} {
		s, ok := systems[c.key]
		if !ok {
			continue
		}
		if got := platform.Value(s, c.field); got != c.want {
			t.Errorf("%s measured %s=%q, want %q", c.key, c.field, got, c.want)
		}
	}
}
