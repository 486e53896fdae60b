package compilecli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func ppcInfo() *kilnv1.SystemInfo {
	return &kilnv1.SystemInfo{Os: "linux", Arch: "ppc", Endian: "big", DataModel: "ILP32", Libc: "glibc", LibcVersion: "2.36", Emulated: true}
}

func target(id string, info *kilnv1.SystemInfo) *kilnv1.Target {
	return &kilnv1.Target{Id: id, System: info}
}

// matrixFake answers Submit with one build per distinct arch and finishes
// each build with the state failOn gives its arch (SUCCEEDED otherwise).
func matrixFake(t *testing.T, failOn map[string]kilnv1.BuildState) *fakeMeta {
	f := startFake(t)
	var mu sync.Mutex
	ids := map[uint64]*kilnv1.SystemInfo{}
	f.submit = func(req *kilnv1.SubmitRequest) (*kilnv1.SubmitResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		id := uint64(len(ids) + 10)
		var info *kilnv1.SystemInfo
		for _, cand := range []*kilnv1.SystemInfo{x86Info(), s390xInfo(), ppcInfo()} {
			if platform.Satisfies(cand, req.GetConstraints()) {
				info = cand
				break
			}
		}
		ids[id] = info
		b := queued(id)
		b.Constraints = req.GetConstraints()
		return &kilnv1.SubmitResponse{Build: b}, nil
	}
	f.watch = func(req *kilnv1.WatchBuildRequest, _ int, send func(*kilnv1.WatchBuildResponse) error, _ context.Context) error {
		mu.Lock()
		info := ids[req.GetBuildId()]
		mu.Unlock()
		st := kilnv1.BuildState_BUILD_STATE_ERROR
		if info != nil {
			st = kilnv1.BuildState_BUILD_STATE_SUCCEEDED
			if s, ok := failOn[info.GetArch()]; ok {
				st = s
			}
		}
		b := final(req.GetBuildId(), st)
		b.Platform = info
		if info == nil {
			b.Platform, b.Failure = nil, "no target matches"
		}
		return send(upd(b))
	}
	f.servers = []*kilnv1.BuildServerStatus{
		{Name: "bs1", Connected: true, Targets: []*kilnv1.Target{target("native", x86Info()), target("cross:s390x-linux-gnu", s390xInfo())}},
		{Name: "bs2", Connected: true, Targets: []*kilnv1.Target{target("native", x86Info())}},
		{Name: "gone", Connected: false, Targets: []*kilnv1.Target{target("cross:powerpc-linux-gnu", ppcInfo())}},
	}
	return f
}

func TestCheckBuildsOnEveryDistinctConnectedPlatformAndListsFailures(t *testing.T) {
	f := matrixFake(t, map[string]kilnv1.BuildState{"s390x": kilnv1.BuildState_BUILD_STATE_FAILED})
	stdout, stderr, code := f.run(t, "check", "--project", "hello", "--revision", "main", email)
	if code != ExitFailed {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	if len(f.submits) != 2 {
		t.Fatalf("%d requests, want 2 (x86_64 twice counts once, the disconnected ppc not at all)", len(f.submits))
	}
	for _, s := range f.submits {
		c := s.GetConstraints()
		if c.GetOs() != "linux" || c.GetEndian() == "" || c.GetDataModel() != "LP64" || c.GetLibc() != "glibc" || c.GetCompiler() != "" {
			t.Fatalf("constraints %v do not pin exactly os arch endian data_model libc", c)
		}
	}
	w := len(platform.Describe(s390xInfo()))
	want := []string{
		"SUCCESS (1)",
		fmt.Sprintf("  %-*s  build ", w, platform.Describe(x86Info())),
		"FAILURE (1)",
		fmt.Sprintf("  %-*s  build ", w, platform.Describe(s390xInfo())),
	}
	got := lines(stdout)
	if len(got) != 4 {
		t.Fatalf("stdout:\n%s", stdout)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Fatalf("line %d = %q, want prefix %q\nstdout:\n%s", i, got[i], want[i], stdout)
		}
	}
	if !strings.Contains(got[3], "failed; make exited with status 2; step: make check") {
		t.Fatalf("failure line lacks the reason: %q", got[3])
	}
}

func TestCheckExitsZeroWhenEveryPlatformSucceeds(t *testing.T) {
	f := matrixFake(t, nil)
	stdout, stderr, code := f.run(t, "check", "--project", "hello", email)
	if code != 0 || !strings.Contains(stdout, "SUCCESS (2)") || !strings.Contains(stdout, "FAILURE (0)") {
		t.Fatalf("exit %d stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

func TestCheckUsesTheGivenPlatformsInsteadOfAskingTheServer(t *testing.T) {
	f := matrixFake(t, map[string]kilnv1.BuildState{"ppc": kilnv1.BuildState_BUILD_STATE_CANCELLED})
	stdout, stderr, code := f.run(t, "check", "--project", "hello", "--platform", "arch=s390x,endian=big", "--platform", "arch=ppc,data-model=ilp32", "--json", email)
	if code != ExitFailed {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if f.listCalls != 0 {
		t.Fatal("ListBuildServers called although --platform was given")
	}
	want := []*kilnv1.PlatformConstraints{{Arch: "s390x", Endian: "big"}, {Arch: "ppc", DataModel: "ILP32"}}
	for i, s := range f.submits {
		if !proto.Equal(s.GetConstraints(), want[i]) {
			t.Fatalf("request %d constraints %v, want %v", i, s.GetConstraints(), want[i])
		}
	}
	var res CheckResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if len(res.Succeeded) != 1 || len(res.Failed) != 1 || res.Failed[0].State != "cancelled" || res.ExitCode != ExitFailed ||
		res.Succeeded[0].Platform != platform.Describe(s390xInfo()) {
		t.Fatalf("result %+v", res)
	}
}

func TestCheckReportsARefusedRequestWithItsStatus(t *testing.T) {
	f := matrixFake(t, nil)
	f.submit = func(*kilnv1.SubmitRequest) (*kilnv1.SubmitResponse, error) {
		return nil, status.Error(codes.InvalidArgument, "option level: not an integer")
	}
	stdout, stderr, code := f.run(t, "check", "--project", "hello", "-o", "level=x", email)
	if code != ExitInvalid || !strings.Contains(stdout, "no build: metaserver refused the request (InvalidArgument): option level: not an integer") {
		t.Fatalf("exit %d stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

func TestCheckWithoutConnectedPlatformsIsAnInfrastructureError(t *testing.T) {
	f := startFake(t)
	_, stderr, code := f.run(t, "check", "--project", "hello", email)
	if code != ExitInfra || !strings.Contains(stderr, "no connected build server") {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
}

func TestDistinctPlatformsSkipsRevokedAndDrainingServers(t *testing.T) {
	got := DistinctPlatforms([]*kilnv1.BuildServerStatus{
		{Connected: true, Revoked: true, Targets: []*kilnv1.Target{target("n", ppcInfo())}},
		{Connected: true, Draining: true, Targets: []*kilnv1.Target{target("n", s390xInfo())}},
		{Connected: true, Targets: []*kilnv1.Target{target("n", x86Info()), target("m", &kilnv1.SystemInfo{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", Libc: "glibc", LibcVersion: "2.99", Compiler: "clang"})}},
	})
	if len(got) != 1 || !proto.Equal(got[0], platform.FromInfo(x86Info(), MatrixFields...)) {
		t.Fatalf("DistinctPlatforms = %v", got)
	}
}

func TestStatusPrintsTheBuildAndExitsByItsState(t *testing.T) {
	tests := []struct {
		name string
		b    *kilnv1.Build
		want int
		line string
	}{
		{"a queued build exits 0", queued(4), ExitOK, "  waiting   endian=big: 3 of 3 connected targets differ"},
		{"a succeeded build exits 0", final(4, kilnv1.BuildState_BUILD_STATE_SUCCEEDED), ExitOK, "  artifact  sha256 " + strings.Repeat("ab", 32) + ", 1234 bytes"},
		{"attempts are counted within the build, not by store id", retried(4), ExitOK, "  attempt   1 on bs1/native: lost: lease expired\n  attempt   2 on bs2/native: running (building)\n"},
		{"a failed build exits 1", final(4, kilnv1.BuildState_BUILD_STATE_FAILED), ExitFailed, "  failure   make exited with status 2 (step: make check)"},
		{"an errored build exits 3", final(4, kilnv1.BuildState_BUILD_STATE_ERROR), ExitInfra, "build 4: error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t)
			f.builds[4] = tt.b
			stdout, stderr, code := f.run(t, "status", "4")
			if code != tt.want || !strings.Contains(stdout, tt.line) {
				t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", code, tt.want, stdout, stderr)
			}
		})
	}
}

// retried is build id running its second attempt after a lost first.
func retried(id uint64) *kilnv1.Build {
	b := running(id, kilnv1.Phase_PHASE_BUILDING)
	b.Attempts[0].Outcome, b.Attempts[0].Reason = kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_LOST, "lease expired"
	b.Attempts = append(b.Attempts, &kilnv1.Attempt{Id: 5889, BuildServer: "bs2", TargetId: "native",
		Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RUNNING, Phase: kilnv1.Phase_PHASE_BUILDING})
	return b
}

func TestGlobalFlagsGoBeforeOrAfterTheCommand(t *testing.T) {
	tests := []struct {
		name string
		args func(addr string) []string
		want string
	}{
		{"status, flags first", func(a string) []string { return []string{"--metaserver", a, "status", "4"} }, "build 4: running"},
		{"status, flags after the name", func(a string) []string { return []string{"status", "--metaserver", a, "4"} }, "build 4: running"},
		{"status, flags last", func(a string) []string { return []string{"status", "4", "--metaserver=" + a} }, "build 4: running"},
		{"status, flags on both sides", func(a string) []string {
			return []string{"--dial-timeout", "3s", "--insecure", "status", "--metaserver", a, "4", "--json"}
		}, `"state":"running"`},
		{"log, flags first", func(a string) []string { return []string{"-metaserver", a, "log", "4"} }, "compiling\n"},
		{"log, flags after the name", func(a string) []string { return []string{"log", "--metaserver", a, "-f", "4"} }, "compiling\n"},
		{"cancel, flags after the name", func(a string) []string { return []string{"cancel", "--metaserver", a, "4", "--email", email} }, "build 4 cancelled"},
		{"check, flags after the name", func(a string) []string {
			return []string{"check", "--metaserver", a, "--project", "hello", "--platform", "arch=x86_64", "--json", email}
		}, `"succeeded":[{"platform":"linux/x86_64`},
		{"cancel, flags first", func(a string) []string { return []string{"--metaserver", a, "--email", email, "cancel", "4"} }, "build 4 cancelled"},
		{"check, flags first", func(a string) []string {
			return []string{"--metaserver", a, "--json", "check", "--project", "hello", "--platform", "arch=x86_64", email}
		}, `"succeeded":[{"platform":"linux/x86_64`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := matrixFake(t, nil)
			f.builds[4] = retried(4)
			f.logs = []*kilnv1.GetLogResponse{{Offset: 0, Data: []byte("compiling\n")}}
			f.cancel = func(req *kilnv1.CancelRequest) (*kilnv1.CancelResponse, error) {
				return &kilnv1.CancelResponse{Build: final(req.GetBuildId(), kilnv1.BuildState_BUILD_STATE_CANCELLED)}, nil
			}
			// No KILN_METASERVER: only the flag leads to the fake.
			env := Env{Getenv: envWith(), Measure: measured(x86Info())}
			stdout, stderr, code := runWith(t, env, tt.args(f.addr)...)
			if code != ExitOK || !strings.Contains(stdout, tt.want) {
				t.Fatalf("exit %d, want 0 and %q on stdout; stdout:\n%s\nstderr:\n%s", code, tt.want, stdout, stderr)
			}
		})
	}
}

// TestEveryCommandTakesTheConnectionFlagsOnEitherSide holds for every
// command in the tables, those added later included: the shared flags
// (--metaserver, --dial-timeout, --ca, --insecure) before the command's
// name are the command's own, like after it.
func TestEveryCommandTakesTheConnectionFlagsOnEitherSide(t *testing.T) {
	getenv := envWith()
	for name := range commandSynopses {
		if name == "help" {
			continue
		}
		for _, args := range [][]string{
			{"--metaserver", "127.0.0.1:1", "--dial-timeout", "3s", name, "5"},
			{name, "--metaserver", "127.0.0.1:1", "5", "--dial-timeout=3s"},
		} {
			got, rest := findCommand(args, getenv)
			if got != name {
				t.Errorf("%q: command %q, want %q", args, got, name)
				continue
			}
			fs := commandFlags[name](getenv)
			if fs.Lookup("metaserver") == nil || fs.Lookup("dial-timeout") == nil {
				t.Fatalf("command %s lacks the connection flags (bindConnection)", name)
			}
			if _, err := parseInterspersed(fs, rest); err != nil {
				t.Errorf("%q: %v", args, err)
				continue
			}
			if v := fs.Lookup("metaserver").Value.String(); v != "127.0.0.1:1" {
				t.Errorf("%q: --metaserver %q", args, v)
			}
			if v := fs.Lookup("dial-timeout").Value.String(); v != "3s" {
				t.Errorf("%q: --dial-timeout %q", args, v)
			}
		}
	}
}

func TestAFlagValueNamedLikeACommandIsNotTheCommand(t *testing.T) {
	f := startFake(t)
	f.submit = answerQueued(1)
	_, stderr, code := f.run(t, "--project", "status", "--revision", "log", email)
	if code != ExitOK || len(f.submits) != 1 || f.submits[0].GetProject() != "status" || f.submits[0].GetRevision() != "log" {
		t.Fatalf("exit %d, submits %v; stderr:\n%s", code, f.submits, stderr)
	}
}

func TestStatusOfAnUnknownBuildExitsTwo(t *testing.T) {
	f := startFake(t)
	_, stderr, code := f.run(t, "status", "--json", "77")
	if code != ExitInvalid || !strings.Contains(stderr, "no such build") {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
}

func TestStatusWaitFollowsToTheEnd(t *testing.T) {
	f := startFake(t)
	f.builds[4] = running(4, kilnv1.Phase_PHASE_BUILDING)
	f.watch = script(logChunk(0, "compiling\n"), upd(final(4, kilnv1.BuildState_BUILD_STATE_FAILED)))
	stdout, stderr, code := f.run(t, "status", "4", "--wait", "--json")
	if code != ExitFailed || !strings.Contains(stderr, "compiling\n") || !strings.Contains(stdout, `"state":"failed"`) {
		t.Fatalf("exit %d stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

func TestCancelSendsTheEmailAndReportsTheState(t *testing.T) {
	f := startFake(t)
	f.cancel = func(req *kilnv1.CancelRequest) (*kilnv1.CancelResponse, error) {
		if req.GetEmail() != email {
			return nil, status.Error(codes.PermissionDenied, "only a requester of build 4 may cancel it")
		}
		return &kilnv1.CancelResponse{Build: final(4, kilnv1.BuildState_BUILD_STATE_CANCELLED)}, nil
	}
	stdout, stderr, code := f.run(t, "cancel", "--email", email, "4")
	if code != 0 || strings.TrimSpace(stdout) != "build 4 cancelled" || f.cancels[0].GetBuildId() != 4 {
		t.Fatalf("exit %d stdout %q stderr %s", code, stdout, stderr)
	}
	_, stderr, code = f.run(t, "cancel", "4", "--email", "other@example.com")
	if code != ExitInvalid || !strings.Contains(stderr, "only a requester") {
		t.Fatalf("exit %d stderr %s", code, stderr)
	}
}

func TestCancelOfAWaitOnABuildOthersWaitForSaysItGoesOn(t *testing.T) {
	f := startFake(t)
	f.cancel = func(req *kilnv1.CancelRequest) (*kilnv1.CancelResponse, error) {
		return &kilnv1.CancelResponse{Build: &kilnv1.Build{Id: 4, State: kilnv1.BuildState_BUILD_STATE_RUNNING, Waiters: 1}}, nil
	}
	stdout, stderr, code := f.run(t, "cancel", "--email", email, "4")
	want := "build 4 running; your wait is withdrawn: it goes on for its other requesters, no mail follows for you"
	if code != ExitOK || strings.TrimSpace(stdout) != want {
		t.Fatalf("exit %d stdout %q stderr %s; want exit 0 and %q", code, stdout, stderr, want)
	}
}

func TestLogPrintsTheChunksOnceEach(t *testing.T) {
	f := startFake(t)
	f.logs = []*kilnv1.GetLogResponse{
		{Offset: 0, Data: []byte("one\n")},
		{Offset: 4, Data: []byte("two\n")},
		{Offset: 2, Data: []byte("e\ntwo\nthree\n")}, // overlaps what was printed
	}
	stdout, stderr, code := f.run(t, "log", "--follow", "9")
	if code != 0 || stdout != "one\ntwo\nthree\n" {
		t.Fatalf("exit %d stdout %q stderr %s", code, stdout, stderr)
	}
	if r := f.logReqs[0]; r.GetBuildId() != 9 || !r.GetFollow() {
		t.Fatalf("request %v", r)
	}
}
