package e2e

import (
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// platformEndianManifest builds farmtest's endian program (CProject with
// Endian) and runs the project's own `make check`, which runs ./hello through
// $(KILN_EMULATOR) and accepts either byte order; the second check step puts
// the byte order the binary reported into the build log.
const platformEndianManifest = `requires: [make]
options:
  level:
    type: int
    default: 2
    description: optimisation level passed as -O
build:
  - make CFLAGS=-O$KILN_OPT_LEVEL
check:
  - make check
  - 'echo "byte order: $(cat hello.out)"'
artifacts:
  - hello
timeout: 5m
`

// platformLittleOnlyManifest is a project whose check wrongly assumes a
// little-endian machine: it fails on s390x and powerpc.
const platformLittleOnlyManifest = `requires: [make]
build:
  - make
check:
  - $KILN_EMULATOR ./hello | grep -qx little-endian
artifacts:
  - hello
timeout: 5m
`

// platformFreeArgs frees the fields startcompile pins to this machine by
// default, so that only the flags a test adds constrain the request.
var platformFreeArgs = []string{"--os", "any", "--arch", "any", "--endian", "any", "--data-model", "any", "--libc", "any"}

// platformRequest returns startcompile arguments for project with every
// default pin freed and then the given pins applied (later flags win).
func platformRequest(project string, pins ...string) []string {
	args := append([]string{"--project", project}, platformFreeArgs...)
	return append(args, pins...)
}

// platformRun runs startcompile, expects exit status want, and returns the
// parsed --json result and the platform it recorded as a SystemInfo.
func platformRun(t *testing.T, f *farmtest.Farm, want int, args ...string) (result, *kilnv1.SystemInfo) {
	t.Helper()
	r := f.Startcompile(args...)
	expectExit(t, r, want)
	res := parseResult(t, r)
	var raw struct {
		Platform json.RawMessage `json:"platform"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &raw); err != nil {
		t.Fatalf("startcompile --json: %v", err)
	}
	if len(raw.Platform) == 0 || string(raw.Platform) == "null" {
		return res, nil
	}
	info := &kilnv1.SystemInfo{}
	if err := protojson.Unmarshal(raw.Platform, info); err != nil {
		t.Fatalf("startcompile --json platform %s: %v", raw.Platform, err)
	}
	return res, info
}

// platformServers lists the build servers through StatusService.
func platformServers(t *testing.T, f *farmtest.Farm) []*kilnv1.BuildServerStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kilnv1.NewStatusServiceClient(f.Conn()).ListBuildServers(ctx, &kilnv1.ListBuildServersRequest{})
	if err != nil {
		t.Fatalf("ListBuildServers: %v", err)
	}
	return resp.GetBuildServers()
}

// platformTarget returns the measured system info ListBuildServers reports
// for target id of build server name, nil when there is none.
func platformTarget(t *testing.T, f *farmtest.Farm, name, id string) *kilnv1.SystemInfo {
	t.Helper()
	for _, s := range platformServers(t, f) {
		if s.GetName() != name {
			continue
		}
		for _, tg := range s.GetTargets() {
			if tg.GetId() == id {
				return tg.GetSystem()
			}
		}
	}
	return nil
}

// platformWaitTargets waits until build server name is connected and offers
// exactly the target ids want.
func platformWaitTargets(t *testing.T, f *farmtest.Farm, name string, want ...string) {
	t.Helper()
	farmtest.Eventually(t, farmtest.WaitTimeout, func() error {
		for _, s := range platformServers(t, f) {
			if s.GetName() != name || !s.GetConnected() {
				continue
			}
			var got []string
			for _, tg := range s.GetTargets() {
				got = append(got, tg.GetId())
			}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				return fmt.Errorf("%s offers targets %v, want %v", name, got, want)
			}
			return nil
		}
		return fmt.Errorf("%s is not connected", name)
	})
}

// platformBuiltBy checks that build id succeeded, that its last attempt ran
// on server's target, and that the platform recorded with the artifact, in
// GetBuild and in startcompile's JSON (fromCLI), is exactly what
// ListBuildServers reports measured for that target. It returns the build.
func platformBuiltBy(t *testing.T, f *farmtest.Farm, id uint64, fromCLI *kilnv1.SystemInfo, server, target string) *kilnv1.Build {
	t.Helper()
	b := f.GetBuild(t, id)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
		t.Fatalf("build %d is %s (%s), want succeeded", id, b.GetState(), b.GetFailure())
	}
	atts := b.GetAttempts()
	if len(atts) == 0 {
		t.Fatalf("build %d has no attempt", id)
	}
	last := atts[len(atts)-1]
	if last.GetBuildServer() != server || last.GetTargetId() != target {
		t.Fatalf("build %d ran on %s/%s, want %s/%s", id, last.GetBuildServer(), last.GetTargetId(), server, target)
	}
	measured := platformTarget(t, f, server, target)
	if measured == nil {
		t.Fatalf("ListBuildServers has no target %s on %s", target, server)
	}
	if !proto.Equal(b.GetPlatform(), measured) {
		t.Errorf("GetBuild platform of build %d:\n%v\nthe target measured:\n%v", id, b.GetPlatform(), measured)
	}
	if fromCLI == nil || !proto.Equal(fromCLI, measured) {
		t.Errorf("startcompile --json platform of build %d:\n%v\nthe target measured:\n%v", id, fromCLI, measured)
	}
	return b
}

// platformELF opens a downloaded binary and returns its ELF header.
func platformELF(t *testing.T, path string) elf.FileHeader {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatalf("downloaded %s is not an ELF file: %v", path, err)
	}
	defer ef.Close()
	return ef.FileHeader
}

// platformInterp returns a binary's program interpreter ("" when static).
func platformInterp(t *testing.T, path string) string {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				t.Fatalf("%s: reading PT_INTERP: %v", path, err)
			}
			return strings.TrimRight(string(b), "\x00")
		}
	}
	return ""
}

// platformLog returns a build's log through `startcompile log`.
func platformLog(t *testing.T, f *farmtest.Farm, id uint64) string {
	t.Helper()
	r := f.Startcompile("log", strconv.FormatUint(id, 10))
	expectExit(t, r, 0)
	return r.Stdout
}

// platformStatus returns `startcompile status --json ID` without waiting.
func platformStatus(t *testing.T, f *farmtest.Farm, id uint64) (result, []string) {
	t.Helper()
	r := f.Startcompile("status", "--json", strconv.FormatUint(id, 10))
	expectExit(t, r, 0)
	var w struct {
		WaitingReasons []string `json:"waiting_reasons"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &w); err != nil {
		t.Fatalf("status --json printed %q: %v", r.Stdout, err)
	}
	return parseResult(t, r), w.WaitingReasons
}

// platformReasonsContain reports whether some waiting reason contains every
// one of parts.
func platformReasonsContain(reasons []string, parts ...string) bool {
	for _, r := range reasons {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(r, p)
		}
		if all {
			return true
		}
	}
	return false
}

// platformSection returns the lines of a check report's section ("SUCCESS"
// or "FAILURE"): the lines after its header up to the next header.
func platformSection(out, header string) []string {
	var lines []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "SUCCESS ("), strings.HasPrefix(l, "FAILURE ("):
			in = strings.HasPrefix(l, header+" (")
		case in && strings.TrimSpace(l) != "":
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

// platformLineWith returns the line of lines that contains s, or "".
func platformLineWith(lines []string, s string) string {
	for _, l := range lines {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// TestPlatformTargetsMatchingQueueAndPolicy runs one farm through issue 3:
// a build server with native, s390x, i686 and musl targets, then build
// servers offering powerpc, one of which refuses the project by policy.
func TestPlatformTargetsMatchingQueueAndPolicy(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s")
	endianRepo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Name: "endian", Endian: true, ManifestText: platformEndianManifest})
	f.AddProject("endian", "file://"+endianRepo)
	littleRepo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Name: "littleonly", Endian: true, ManifestText: platformLittleOnlyManifest})
	f.AddProject("littleonly", "file://"+littleRepo)

	const multi = "multi"
	f.StartBuildserver(f.AddBuildServer(multi), "--jobs", "2",
		"--target", "native", "--target", "cross:s390x-linux-gnu", "--target", "cross:i686-linux-gnu", "--target", "musl")
	platformWaitTargets(t, f, multi, "native", "cross:s390x-linux-gnu", "cross:i686-linux-gnu", "musl")

	t.Run("the four targets are measured, not declared", func(t *testing.T) {
		cases := []struct {
			target                           string
			arch, endian, dataModel, libc    string
			emulated                         bool
			sizeofLong, sizeofPointer, chBit uint32
		}{
			{"native", "x86_64", "little", "LP64", "glibc", false, 8, 8, 8},
			{"cross:s390x-linux-gnu", "s390x", "big", "LP64", "glibc", true, 8, 8, 8},
			{"cross:i686-linux-gnu", "i686", "little", "ILP32", "glibc", true, 4, 4, 8},
			{"musl", "x86_64", "little", "LP64", "musl", false, 8, 8, 8},
		}
		for _, c := range cases {
			s := platformTarget(t, f, multi, c.target)
			if s == nil {
				t.Fatalf("target %s not listed", c.target)
			}
			if s.GetOs() != "linux" || s.GetArch() != c.arch || s.GetEndian() != c.endian || s.GetDataModel() != c.dataModel ||
				s.GetLibc() != c.libc || s.GetEmulated() != c.emulated || s.GetSizeofLong() != c.sizeofLong ||
				s.GetSizeofPointer() != c.sizeofPointer || s.GetCharBit() != c.chBit {
				t.Errorf("target %s measured %v", c.target, s)
			}
			if s.GetCompiler() == "" || s.GetCompilerVersion() == "" || s.GetTools()["make"] == "" {
				t.Errorf("target %s lacks compiler or make: %v", c.target, s)
			}
		}
	})

	t.Run("endian big builds on s390x and the project's make check runs the s390x binary", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		res, info := platformRun(t, f, 0, append(platformRequest("endian", "--endian", "big"), "--download", out, "--json", "dev@example.com")...)
		if res.State != "succeeded" || res.Cached {
			t.Fatalf("result %+v, want a fresh success", res)
		}
		b := platformBuiltBy(t, f, res.BuildID, info, multi, "cross:s390x-linux-gnu")
		if b.GetPlatform().GetArch() != "s390x" || b.GetPlatform().GetEndian() != "big" || !b.GetPlatform().GetEmulated() {
			t.Errorf("recorded platform %v, want emulated big-endian s390x", b.GetPlatform())
		}
		log := platformLog(t, f, res.BuildID)
		// make echoes the check recipe: the binary ran through qemu, and
		// what it printed is in hello.out, shown by the next step.
		for _, want := range []string{"make check", "qemu-s390x", "byte order: big-endian"} {
			if !strings.Contains(log, want) {
				t.Errorf("build log lacks %q:\n%s", want, log)
			}
		}
		if strings.Contains(log, "little-endian") {
			t.Errorf("the s390x build log reports little-endian:\n%s", log)
		}
		h := platformELF(t, filepath.Join(out, "hello"))
		if h.Machine != elf.EM_S390 || h.Class != elf.ELFCLASS64 || h.Data != elf.ELFDATA2MSB {
			t.Fatalf("downloaded hello is %v %v %v, want EM_S390 ELFCLASS64 ELFDATA2MSB", h.Machine, h.Class, h.Data)
		}
	})

	t.Run("ILP32 little-endian builds on i686", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		res, info := platformRun(t, f, 0, append(platformRequest("endian", "--data-model", "ILP32", "--endian", "little"), "--download", out, "--json", "dev@example.com")...)
		if res.State != "succeeded" {
			t.Fatalf("result %+v", res)
		}
		b := platformBuiltBy(t, f, res.BuildID, info, multi, "cross:i686-linux-gnu")
		if p := b.GetPlatform(); p.GetArch() != "i686" || p.GetDataModel() != "ILP32" || p.GetSizeofPointer() != 4 {
			t.Errorf("recorded platform %v, want i686 ILP32", p)
		}
		if log := platformLog(t, f, res.BuildID); !strings.Contains(log, "byte order: little-endian") {
			t.Errorf("i686 build log lacks the byte order:\n%s", log)
		}
		h := platformELF(t, filepath.Join(out, "hello"))
		if h.Machine != elf.EM_386 || h.Class != elf.ELFCLASS32 || h.Data != elf.ELFDATA2LSB {
			t.Fatalf("downloaded hello is %v %v %v, want EM_386 ELFCLASS32 ELFDATA2LSB", h.Machine, h.Class, h.Data)
		}
	})

	t.Run("libc musl builds on the musl target with this machine's other pins", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		// Only --libc: os, arch, endian and data model stay pinned to
		// this (x86_64 glibc) machine.
		res, info := platformRun(t, f, 0, "--project", "endian", "--libc", "musl", "--download", out, "--json", "dev@example.com")
		if res.State != "succeeded" {
			t.Fatalf("result %+v", res)
		}
		b := platformBuiltBy(t, f, res.BuildID, info, multi, "musl")
		if p := b.GetPlatform(); p.GetLibc() != "musl" || p.GetArch() != "x86_64" {
			t.Errorf("recorded platform %v, want x86_64 musl", p)
		}
		h := platformELF(t, filepath.Join(out, "hello"))
		if h.Machine != elf.EM_X86_64 {
			t.Errorf("downloaded hello is %v, want EM_X86_64", h.Machine)
		}
		if interp := platformInterp(t, filepath.Join(out, "hello")); interp != "" && !strings.Contains(interp, "musl") {
			t.Errorf("musl build's interpreter is %q", interp)
		}
	})

	t.Run("default pins build natively and record the native target", func(t *testing.T) {
		res, info := platformRun(t, f, 0, "--project", "endian", "--wait", "--json", "dev@example.com")
		b := platformBuiltBy(t, f, res.BuildID, info, multi, "native")
		if b.GetPlatform().GetEmulated() || b.GetPlatform().GetLibc() != "glibc" {
			t.Errorf("recorded platform %v, want native glibc", b.GetPlatform())
		}
	})

	t.Run("check over the four platforms lists a little-endian-only test's s390x failure and exits 1", func(t *testing.T) {
		r := f.Startcompile("check", "--project", "littleonly", "--timeout", "90s", "dev@example.com")
		expectExit(t, r, 1)
		ok, bad := platformSection(r.Stdout, "SUCCESS"), platformSection(r.Stdout, "FAILURE")
		if len(ok) != 3 || len(bad) != 1 {
			t.Fatalf("want 3 successes and 1 failure:\n%s\nstderr:\n%s", r.Stdout, r.Stderr)
		}
		if l := platformLineWith(bad, "linux/s390x big"); l == "" || !strings.Contains(l, "failed") {
			t.Errorf("FAILURE lacks s390x as failed: %q", bad)
		}
		for _, want := range []string{"linux/x86_64 little LP64 glibc", "linux/i686 little ILP32", "linux/x86_64 little LP64 musl"} {
			if platformLineWith(ok, want) == "" {
				t.Errorf("SUCCESS lacks %q: %q", want, ok)
			}
		}
	})

	t.Run("check over the four platforms exits 0 when every make check passes", func(t *testing.T) {
		// level=1 makes these builds fresh rather than cache answers.
		r := f.Startcompile("check", "--project", "endian", "-o", "level=1", "--json", "--timeout", "90s", "dev@example.com")
		expectExit(t, r, 0)
		var cr struct {
			Succeeded []struct {
				Platform string `json:"platform"`
				BuildID  uint64 `json:"build_id"`
			} `json:"succeeded"`
			Failed []json.RawMessage `json:"failed"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &cr); err != nil {
			t.Fatalf("check --json printed %q: %v", r.Stdout, err)
		}
		if len(cr.Succeeded) != 4 || len(cr.Failed) != 0 {
			t.Fatalf("check --json: %s", r.Stdout)
		}
		targets := map[string]bool{}
		for _, e := range cr.Succeeded {
			b := f.GetBuild(t, e.BuildID)
			if b.GetOptions()["level"] != "1" || len(b.GetAttempts()) == 0 {
				t.Fatalf("build %d: options %v, attempts %d", e.BuildID, b.GetOptions(), len(b.GetAttempts()))
			}
			targets[b.GetAttempts()[len(b.GetAttempts())-1].GetTargetId()] = true
		}
		if len(targets) != 4 {
			t.Fatalf("the four check builds ran on targets %v, want four distinct", targets)
		}
		// The text form prints both lists.
		r = f.Startcompile("check", "--project", "endian", "-o", "level=1", "--timeout", "90s", "dev@example.com")
		expectExit(t, r, 0)
		if len(platformSection(r.Stdout, "SUCCESS")) != 4 || !strings.Contains(r.Stdout, "FAILURE (0)") {
			t.Fatalf("check printed:\n%s", r.Stdout)
		}
	})

	t.Run("a ppc request waits with its reason, is refused by policy and is built when a powerpc build server connects", func(t *testing.T) {
		res, _ := platformRun(t, f, 0, append(platformRequest("endian", "--arch", "ppc"), "--json", "dev@example.com")...)
		if res.State != "queued" || res.BuildID == 0 {
			t.Fatalf("first answer %+v, want queued", res)
		}
		id := res.BuildID
		st, reasons := platformStatus(t, f, id)
		if st.State != "queued" || !platformReasonsContain(reasons, "arch=ppc", "4 of 4") {
			t.Fatalf("status %s, waiting reasons %q; want queued naming arch=ppc with 4 of 4 targets", st.State, reasons)
		}

		// A volunteer offering powerpc but only another project; its
		// target without a compiler is reported, not offered.
		const picky = "picky-ppc"
		f.StartBuildserver(f.AddBuildServer(picky), "--target", "cross:powerpc-linux-gnu",
			"--target", "cross:nonexistent-linux-gnu", "--allow-project", "other-project")
		platformWaitTargets(t, f, picky, "cross:powerpc-linux-gnu")
		for _, s := range platformServers(t, f) {
			if r := s.GetRejectedTargets(); s.GetName() == picky &&
				(len(r) != 1 || r[0].GetTargetId() != "cross:nonexistent-linux-gnu" || r[0].GetReason() == "") {
				t.Errorf("%s reports rejected targets %v, want cross:nonexistent-linux-gnu with a reason", picky, r)
			}
		}
		farmtest.Eventually(t, 10*time.Second, func() error {
			st, reasons := platformStatus(t, f, id)
			if st.State != "queued" {
				return fmt.Errorf("state %s with a refusing volunteer only", st.State)
			}
			if !platformReasonsContain(reasons, "policy", "endian", "1 of 5") {
				return fmt.Errorf("waiting reasons %q do not name the policy refusing project endian on 1 of 5 targets", reasons)
			}
			if !platformReasonsContain(reasons, "arch=ppc", "4 of 5") {
				return fmt.Errorf("waiting reasons %q do not count 4 of 5 targets failing arch=ppc", reasons)
			}
			return nil
		})
		if b := f.GetBuild(t, id); len(b.GetAttempts()) != 0 {
			t.Fatalf("a build the policy refuses was dispatched: %v", b.GetAttempts())
		}

		// A volunteer without that policy takes it at once.
		const open = "open-ppc"
		f.StartBuildserver(f.AddBuildServer(open), "--target", "cross:powerpc-linux-gnu")
		r := f.Startcompile("status", "--wait", "--json", "--timeout", "90s", strconv.FormatUint(id, 10))
		expectExit(t, r, 0)
		var raw struct {
			Platform json.RawMessage `json:"platform"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &raw); err != nil {
			t.Fatal(err)
		}
		info := &kilnv1.SystemInfo{}
		if err := protojson.Unmarshal(raw.Platform, info); err != nil {
			t.Fatalf("status --json platform %s: %v", raw.Platform, err)
		}
		b := platformBuiltBy(t, f, id, info, open, "cross:powerpc-linux-gnu")
		for _, a := range b.GetAttempts() {
			if a.GetBuildServer() == picky {
				t.Errorf("the refusing volunteer got attempt %v", a)
			}
		}
		if p := b.GetPlatform(); p.GetArch() != "ppc" || p.GetEndian() != "big" || p.GetDataModel() != "ILP32" {
			t.Errorf("recorded platform %v, want big-endian ILP32 ppc", p)
		}
		if log := platformLog(t, f, id); !strings.Contains(log, "byte order: big-endian") || !strings.Contains(log, "qemu-ppc") {
			t.Errorf("powerpc build log lacks its check's big-endian output:\n%s", log)
		}
	})
}
