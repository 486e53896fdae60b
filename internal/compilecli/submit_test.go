package compilecli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/platform"
	"github.com/kilnbuild/kiln/internal/sysinfo"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// testTimeout bounds every command run in these tests.
const testTimeout = 20 * time.Second

var errNotFound = status.Error(codes.NotFound, "no such build")

const email = "dev@example.com"

func queued(id uint64) *kilnv1.Build {
	return &kilnv1.Build{Id: id, Project: "hello", Revision: "main", State: kilnv1.BuildState_BUILD_STATE_QUEUED, QueuePosition: 3,
		WaitingReasons: []string{"endian=big: 3 of 3 connected targets differ"}}
}

func running(id uint64, phase kilnv1.Phase) *kilnv1.Build {
	b := queued(id)
	b.State, b.QueuePosition, b.WaitingReasons = kilnv1.BuildState_BUILD_STATE_RUNNING, 0, nil
	b.Commit = strings.Repeat("c", 40)
	b.Platform = x86Info()
	// A store id, unique across builds: people read the attempt's number
	// within the build instead.
	b.Attempts = []*kilnv1.Attempt{{Id: id<<8 | 1, BuildServer: "bs1", TargetId: "native", Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RUNNING, Phase: phase}}
	return b
}

func final(id uint64, st kilnv1.BuildState) *kilnv1.Build {
	b := running(id, kilnv1.Phase_PHASE_UPLOADING)
	b.State = st
	b.LogSize = 12
	b.Attempts[0].Outcome = kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED
	switch st {
	case kilnv1.BuildState_BUILD_STATE_SUCCEEDED:
		b.Artifact = &kilnv1.Artifact{Sha256: strings.Repeat("ab", 32), Size: 1234, Files: []string{"hello"}}
	default:
		b.Attempts[0].Outcome = kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED
		b.Failure = "make exited with status 2"
		b.FailingStep = "make check"
	}
	return b
}

// answerQueued makes Submit queue build id.
func answerQueued(id uint64) func(*kilnv1.SubmitRequest) (*kilnv1.SubmitResponse, error) {
	return func(*kilnv1.SubmitRequest) (*kilnv1.SubmitResponse, error) {
		return &kilnv1.SubmitResponse{Build: queued(id), RequestId: 99}, nil
	}
}

// script makes every WatchBuild send msgs.
func script(msgs ...*kilnv1.WatchBuildResponse) func(*kilnv1.WatchBuildRequest, int, func(*kilnv1.WatchBuildResponse) error, context.Context) error {
	return func(_ *kilnv1.WatchBuildRequest, _ int, send func(*kilnv1.WatchBuildResponse) error, _ context.Context) error {
		for _, m := range msgs {
			if err := send(m); err != nil {
				return err
			}
		}
		return nil
	}
}

func upd(b *kilnv1.Build) *kilnv1.WatchBuildResponse { return &kilnv1.WatchBuildResponse{Build: b} }

func logChunk(off uint64, s string) *kilnv1.WatchBuildResponse {
	return &kilnv1.WatchBuildResponse{LogOffset: off, Log: []byte(s)}
}

func TestSubmitExitStatusFollowsTheGRPCCode(t *testing.T) {
	tests := []struct {
		code codes.Code
		want int
	}{
		{codes.InvalidArgument, ExitInvalid},
		{codes.NotFound, ExitInvalid},
		{codes.PermissionDenied, ExitInvalid},
		{codes.FailedPrecondition, ExitInvalid},
		{codes.ResourceExhausted, ExitInvalid},
		{codes.AlreadyExists, ExitInvalid},
		{codes.Unavailable, ExitInfra},
		{codes.DeadlineExceeded, ExitInfra},
		{codes.DataLoss, ExitInfra},
		{codes.Internal, ExitInfra},
		{codes.Unknown, ExitInfra},
	}
	for _, tt := range tests {
		t.Run("a refusal with "+tt.code.String()+" exits "+itoa(uint64(tt.want)), func(t *testing.T) {
			f := startFake(t)
			f.submit = func(*kilnv1.SubmitRequest) (*kilnv1.SubmitResponse, error) {
				return nil, status.Error(tt.code, "option level: 9 is above the maximum 3")
			}
			stdout, stderr, code := f.run(t, "--project", "hello", "-o", "level=9", email)
			if code != tt.want {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.want, stderr)
			}
			if !strings.Contains(stderr, "option level: 9 is above the maximum 3") || !strings.Contains(stderr, tt.code.String()) {
				t.Fatalf("stderr does not carry the server's message and code:\n%s", stderr)
			}
			if stdout != "" {
				t.Fatalf("stdout not empty on a refusal: %q", stdout)
			}
		})
	}
}

func TestSubmitWithWaitExitStatusFollowsTheFinalState(t *testing.T) {
	tests := []struct {
		state kilnv1.BuildState
		want  int
	}{
		{kilnv1.BuildState_BUILD_STATE_SUCCEEDED, ExitOK},
		{kilnv1.BuildState_BUILD_STATE_FAILED, ExitFailed},
		{kilnv1.BuildState_BUILD_STATE_CANCELLED, ExitFailed},
		{kilnv1.BuildState_BUILD_STATE_ERROR, ExitInfra},
	}
	for _, tt := range tests {
		t.Run("a build ending "+tt.state.Word()+" exits "+itoa(uint64(tt.want)), func(t *testing.T) {
			f := startFake(t)
			f.submit = answerQueued(5)
			f.watch = script(upd(queued(5)), upd(running(5, kilnv1.Phase_PHASE_BUILDING)), logChunk(0, "cc -O2 hello.c\n"), upd(final(5, tt.state)))
			_, stderr, code := f.run(t, "--project", "hello", "--wait", email)
			if code != tt.want {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.want, stderr)
			}
			if !strings.Contains(stderr, "[build 5] "+tt.state.Word()) {
				t.Fatalf("no final state line on stderr:\n%s", stderr)
			}
		})
	}
}

func TestWaitShowsEveryChangeAndTheLog(t *testing.T) {
	f := startFake(t)
	f.submit = answerQueued(5)
	q2 := queued(5)
	q2.QueuePosition = 1
	lost := running(5, kilnv1.Phase_PHASE_FETCHING)
	lost.State = kilnv1.BuildState_BUILD_STATE_QUEUED
	lost.Attempts[0].Outcome, lost.Attempts[0].Reason = kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_LOST, "lease expired"
	second := running(5, kilnv1.Phase_PHASE_CHECKING)
	second.Attempts = append(lost.Attempts, &kilnv1.Attempt{Id: 5<<8 | 2, BuildServer: "bs2", TargetId: "native", Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RUNNING, Phase: kilnv1.Phase_PHASE_BUILDING})
	f.watch = script(
		upd(queued(5)), upd(queued(5)), // an unchanged update prints nothing
		upd(q2),
		upd(running(5, kilnv1.Phase_PHASE_FETCHING)),
		upd(lost),
		upd(second),
		logChunk(0, "cc -O2 "), logChunk(7, "hello.c\n"),
		upd(final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)),
	)
	stdout, stderr, code := f.run(t, "--project", "hello", "--wait", email)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	want := []string{
		"[build 5] queued, platform os=linux arch=x86_64 endian=little data_model=LP64 libc=glibc",
		"[build 5] queued, position 3",
		"[build 5] waiting: endian=big: 3 of 3 connected targets differ",
		"[build 5] queued, position 1",
		"[build 5] running on bs1/native (linux/x86_64 little LP64 glibc-2.36 gcc-12.2.0), attempt 1",
		"[build 5] fetching",
		"[build 5] attempt 1 on bs1/native: lost: lease expired",
		"[build 5] queued",
		"[build 5] running on bs2/native (linux/x86_64 little LP64 glibc-2.36 gcc-12.2.0), attempt 2",
		"[build 5] building",
		"cc -O2 hello.c",
		"[build 5] succeeded: artifact abababababab (1234 bytes, 1 files) on linux/x86_64 little LP64 glibc-2.36 gcc-12.2.0",
	}
	if got := lines(stderr); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stderr:\n%s\nwant:\n%s", stderr, strings.Join(want, "\n"))
	}
	if !strings.HasPrefix(stdout, "build 5 succeeded") {
		t.Fatalf("stdout %q", stdout)
	}
}

func TestWaitResumesAnInterruptedWatchWithoutRepeatingTheLog(t *testing.T) {
	f := startFake(t)
	f.submit = answerQueued(5)
	var offsets []int64
	f.watch = func(req *kilnv1.WatchBuildRequest, n int, send func(*kilnv1.WatchBuildResponse) error, _ context.Context) error {
		offsets = append(offsets, req.GetLogOffset())
		if n == 0 {
			send(upd(running(5, kilnv1.Phase_PHASE_BUILDING)))
			send(logChunk(0, "line one\nline "))
			return status.Error(codes.Unavailable, "metaserver restarting")
		}
		// The restarted server resends from an earlier offset.
		send(upd(running(5, kilnv1.Phase_PHASE_BUILDING)))
		send(logChunk(5, "one\nline two\n"))
		return send(upd(final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)))
	}
	_, stderr, code := f.run(t, "--project", "hello", "--wait", email)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if strings.Count(stderr, "line one\n") != 1 || strings.Count(stderr, "line two\n") != 1 {
		t.Fatalf("log repeated or lost across the resume:\n%s", stderr)
	}
	if len(offsets) != 2 || offsets[0] != 0 || offsets[1] != 14 {
		t.Fatalf("watch log offsets %v, want [0 14]", offsets)
	}
}

func TestWaitGivesUpAtTheTimeoutWithInfraStatus(t *testing.T) {
	f := startFake(t)
	f.submit = answerQueued(5)
	f.watch = func(_ *kilnv1.WatchBuildRequest, _ int, send func(*kilnv1.WatchBuildResponse) error, ctx context.Context) error {
		send(upd(queued(5)))
		<-ctx.Done()
		return ctx.Err()
	}
	start := time.Now()
	_, stderr, code := f.run(t, "--project", "hello", "--wait", "--timeout", "300ms", email)
	if code != ExitInfra || !strings.Contains(stderr, "gave up after --timeout 300ms, build 5 is queued") {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestSubmitWithoutWaitPrintsHowTheRequestWasAnswered(t *testing.T) {
	tests := []struct {
		name string
		resp *kilnv1.SubmitResponse
		want string
	}{
		{"a cached answer names the artifact", &kilnv1.SubmitResponse{Build: final(3, kilnv1.BuildState_BUILD_STATE_SUCCEEDED), Cached: true},
			"build 3 cached: artifact sha256 " + strings.Repeat("ab", 32) + ", 1234 bytes (state succeeded)"},
		{"a joined answer says so", &kilnv1.SubmitResponse{Build: running(4, kilnv1.Phase_PHASE_BUILDING), Joined: true},
			"build 4 joined (state running)"},
		{"a queued answer gives the position", &kilnv1.SubmitResponse{Build: queued(5)}, "build 5 queued, position 3 (state queued)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t)
			f.submit = func(*kilnv1.SubmitRequest) (*kilnv1.SubmitResponse, error) { return tt.resp, nil }
			stdout, stderr, code := f.run(t, "--project", "hello", email)
			if code != 0 || strings.TrimSpace(stdout) != tt.want {
				t.Fatalf("exit %d stdout %q, want %q; stderr:\n%s", code, stdout, tt.want, stderr)
			}
		})
	}
}

func TestSubmitSendsTheRequestAsGiven(t *testing.T) {
	f := startFake(t)
	f.submit = answerQueued(1)
	_, stderr, code := f.run(t, "--project", "hello", "--revision", "v1..v2", "-o", "level=3", "-o", "flavor=fancy", email)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := f.submits[0]
	if got.GetProject() != "hello" || got.GetRevision() != "v1..v2" || got.GetEmail() != email ||
		len(got.GetOptions()) != 2 || got.GetOptions()["level"] != "3" || got.GetOptions()["flavor"] != "fancy" {
		t.Fatalf("request %v", got)
	}
}

func TestConstraintsArePinnedToTheMachineAndFreedByAny(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want *kilnv1.PlatformConstraints
	}{
		{"by default os arch endian data model and libc are this machine's", nil,
			&kilnv1.PlatformConstraints{Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", Libc: "glibc"}},
		{"any frees a default field, and a CPU field given frees the other CPU defaults", []string{"--arch", "any", "--endian", "ANY"},
			&kilnv1.PlatformConstraints{Os: "linux", Libc: "glibc"}},
		{"a value overrides the measured one", []string{"--arch", "amd64", "--endian", "little", "--libc", "musl"},
			&kilnv1.PlatformConstraints{Os: "linux", Arch: "x86_64", Endian: "little", Libc: "musl"}},
		{"compiler and versions are free unless given", []string{"--compiler", "gcc", "--compiler-version", "12.2.0", "--libc-version", "2.36"},
			&kilnv1.PlatformConstraints{Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", Libc: "glibc", LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0"}},
		{"everything can be freed", []string{"--os", "any", "--arch", "any", "--endian", "any", "--data-model", "any", "--libc", "any"},
			&kilnv1.PlatformConstraints{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t)
			f.submit = answerQueued(1)
			env := Env{Getenv: envWith(EnvMetaserver, f.addr), Measure: measured(s390xInfo())}
			_, stderr, code := runWith(t, env, append(append([]string{"--project", "hello"}, tt.args...), email)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got := f.submits[0].GetConstraints(); !proto.Equal(got, tt.want) {
				t.Fatalf("constraints %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDefaultConstraintsComeFromSysinfoLocal(t *testing.T) {
	local, err := sysinfo.Local(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f := startFake(t)
	f.submit = answerQueued(1)
	_, stderr, code := runWith(t, Env{Getenv: envWith(EnvMetaserver, f.addr), Measure: sysinfo.Local}, "--project", "hello", email)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := platform.FromInfo(local, DefaultPinned...)
	if got := f.submits[0].GetConstraints(); !proto.Equal(got, want) || got.GetArch() == "" || got.GetEndian() == "" {
		t.Fatalf("constraints %v, want %v from sysinfo.Local", got, want)
	}
}

func TestMeasureIsSkippedWhenEveryDefaultFieldIsGiven(t *testing.T) {
	f := startFake(t)
	f.submit = answerQueued(1)
	env := Env{Getenv: envWith(EnvMetaserver, f.addr), Measure: func(context.Context) (*kilnv1.SystemInfo, error) {
		t.Error("Measure called although every default field was given")
		return nil, context.Canceled
	}}
	_, stderr, code := runWith(t, env, "--project", "hello", "--os", "linux", "--arch", "ppc", "--endian", "big", "--data-model", "ILP32", "--libc", "any", email)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestJSONOutputCarriesTheBuildAndItsPlatform(t *testing.T) {
	f := startFake(t)
	f.submit = answerQueued(5)
	f.watch = script(upd(running(5, kilnv1.Phase_PHASE_BUILDING)), logChunk(0, "log\n"), upd(final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)))
	stdout, stderr, code := f.run(t, "--project", "hello", "--wait", "--json", email)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if n := len(lines(stdout)); n != 1 {
		t.Fatalf("stdout has %d lines, want one JSON object:\n%s", n, stdout)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	for _, k := range []string{"build_id", "state", "cached", "joined", "artifact_sha256", "artifact_size", "platform", "files", "commit", "failure", "log_size", "exit_code"} {
		if _, ok := got[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, stdout)
		}
	}
	if got["build_id"] != 5.0 || got["state"] != "succeeded" || got["artifact_size"] != 1234.0 || got["log_size"] != 12.0 ||
		got["commit"] != strings.Repeat("c", 40) || got["exit_code"] != 0.0 || got["request_id"] != 99.0 {
		t.Errorf("JSON values: %s", stdout)
	}
	plat, ok := got["platform"].(map[string]any)
	if !ok || plat["arch"] != "x86_64" || plat["data_model"] != "LP64" || plat["libc_version"] != "2.36" {
		t.Errorf("platform is not the measured system info object: %v", got["platform"])
	}
	if files, ok := got["files"].([]any); !ok || len(files) != 1 || files[0] != "hello" {
		t.Errorf("files %v", got["files"])
	}
}

// The platform is encoded while the build runs, as soon as it is known
// (issue 20: off the path from the final answer to the exit); a build
// retried on another target must still print the target that built it.
func TestJSONOutputNamesThePlatformOfTheFinalStateAfterARetryElsewhere(t *testing.T) {
	f := startFake(t)
	f.submit = answerQueued(5)
	first := running(5, kilnv1.Phase_PHASE_BUILDING)
	first.Platform = s390xInfo()
	f.watch = script(upd(first), upd(running(5, kilnv1.Phase_PHASE_FETCHING)), upd(final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)))
	stdout, stderr, code := f.run(t, "--project", "hello", "--wait", "--json", email)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "s390x") {
		t.Fatalf("the first attempt's s390x target was never shown; the case tests nothing:\n%s", stderr)
	}
	var got struct {
		Platform map[string]any `json:"platform"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	if got.Platform["arch"] != "x86_64" || got.Platform["endian"] != "little" {
		t.Fatalf("platform %v, want the final state's x86_64 target", got.Platform)
	}
}

func TestJSONOutputOnARefusalCarriesTheError(t *testing.T) {
	f := startFake(t)
	f.submit = func(*kilnv1.SubmitRequest) (*kilnv1.SubmitResponse, error) {
		return nil, status.Error(codes.NotFound, `project "nope" is not registered`)
	}
	stdout, _, code := f.run(t, "--project", "nope", "--json", email)
	var got Result
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	if code != ExitInvalid || got.ExitCode != ExitInvalid || !strings.Contains(got.Error, "is not registered") || got.Files == nil {
		t.Fatalf("exit %d, JSON %+v", code, got)
	}
}

func TestCommandLineMistakesExitTwoWithoutContactingTheServer(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"a missing email", []string{"--project", "hello"}, "positional"},
		{"a malformed email", []string{"--project", "hello", "not-an-address"}, "not a plain email"},
		{"a missing project", []string{email}, "--project is required"},
		{"an option without =", []string{"--project", "hello", "-o", "level", email}, "want name=value"},
		{"an option given twice", []string{"--project", "hello", "-o", "a=1", "-o", "a=2", email}, "given twice"},
		{"an unknown flag", []string{"--project", "hello", "--frobnicate", email}, "frobnicate"},
		{"a bad endianness", []string{"--project", "hello", "--endian", "middle", email}, "little, big or any"},
		{"a bad data model", []string{"--project", "hello", "--data-model", "LP128", email}, "ILP32"},
		{"pin without download", []string{"--pin", "stable", email}, "--pin needs --download"},
		{"pin with a project", []string{"--pin", "stable", "--download", "d", "--project", "x", email}, "do not apply"},
		{"two emails", []string{"--project", "hello", email, email}, "positional"},
		{"a negative timeout", []string{"--project", "hello", "--timeout", "-1s", email}, "negative"},
		{"status without an id", []string{"status"}, "positional"},
		{"status with a bad id", []string{"status", "abc"}, "BUILD_ID"},
		{"cancel without email", []string{"cancel", "5"}, "EMAIL"},
		{"check with a bad platform", []string{"check", "--project", "hello", "--platform", "arch", email}, "field=value"},
		{"check with an unknown field", []string{"check", "--project", "hello", "--platform", "colour=red", email}, "unknown platform field"},
		{"a command name where the email goes", []string{"--project", "hello", "status"},
			`"status" is a command, not an email address: to run it, type "startcompile status [--wait] [--download DIR] [--json] BUILD_ID"`},
		{"a command name after the email", []string{"--project", "hello", email, "log", "5"}, `"log" is a command, not an email address`},
		{"a command name where check's email goes", []string{"check", "--project", "hello", "cancel"},
			`type "startcompile cancel --email EMAIL BUILD_ID"`},
		{"a command name where the build id goes", []string{"status", "log"}, `"log" is a command, not a build id`},
		{"a submit flag before a command", []string{"--project", "hello", "log", "5"}, `"log" is a command, not an email address: to run it, type "startcompile log [-f|--follow] BUILD_ID"`},
		{"a submit flag after a command", []string{"log", "--project", "hello", "5"}, "flag provided but not defined: -project"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t)
			_, stderr, code := f.run(t, tt.args...)
			if code != ExitInvalid || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, want 2 with %q; stderr:\n%s", code, tt.want, stderr)
			}
			if n := f.calls(); n != 0 {
				t.Fatalf("%d RPCs reached the server", n)
			}
		})
	}
}

func TestFlagsMayFollowTheEmail(t *testing.T) {
	f := startFake(t)
	f.submit = answerQueued(1)
	_, stderr, code := f.run(t, email, "--project", "hello", "-o", "level=1")
	if code != 0 || f.submits[0].GetOptions()["level"] != "1" {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestAnUnreachableMetaserverExitsThreeQuickly(t *testing.T) {
	env := Env{Getenv: envWith(EnvMetaserver, "127.0.0.1:1"), Measure: measured(x86Info())}
	start := time.Now()
	_, stderr, code := runWith(t, env, "--project", "hello", email)
	if code != ExitInfra || !strings.Contains(stderr, "Unavailable") {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %s to notice", d)
	}
}

func TestMetaserverFlagOverridesTheEnvironment(t *testing.T) {
	f := startFake(t)
	f.submit = answerQueued(1)
	env := Env{Getenv: envWith(EnvMetaserver, "127.0.0.1:1"), Measure: measured(x86Info())}
	_, stderr, code := runWith(t, env, "--metaserver", f.addr, "--project", "hello", email)
	if code != 0 || len(f.submits) != 1 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestAnInterruptedWaitExitsThreeAndSaysSo(t *testing.T) {
	f := startFake(t)
	f.submit = answerQueued(5)
	ctx, cancel := context.WithCancel(context.Background())
	f.watch = func(_ *kilnv1.WatchBuildRequest, _ int, send func(*kilnv1.WatchBuildResponse) error, sctx context.Context) error {
		send(upd(queued(5)))
		cancel() // the user presses ^C while the build is queued
		<-sctx.Done()
		return sctx.Err()
	}
	var stdout, stderr strings.Builder
	code := Run(ctx, Env{Stdout: &stdout, Stderr: &stderr, Getenv: envWith(EnvMetaserver, f.addr), Measure: measured(x86Info())},
		[]string{"--project", "hello", "--wait", email})
	if code != ExitInfra || !strings.Contains(stderr.String(), "interrupted") {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
}

func TestSettingOneCPUFieldFreesTheOtherDefaultedCPUFields(t *testing.T) {
	local := &kilnv1.SystemInfo{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", Libc: "glibc"}
	tests := []struct {
		name string
		set  map[string]string
		want *kilnv1.PlatformConstraints
	}{
		{"nothing given pins the whole machine", nil,
			&kilnv1.PlatformConstraints{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", Libc: "glibc"}},
		{"endian big alone frees arch and data model", map[string]string{"endian": "big"},
			&kilnv1.PlatformConstraints{Os: "linux", Endian: "big", Libc: "glibc"}},
		{"data model and endian free arch", map[string]string{"data_model": "ILP32", "endian": "little"},
			&kilnv1.PlatformConstraints{Os: "linux", Endian: "little", DataModel: "ILP32", Libc: "glibc"}},
		{"libc alone keeps the CPU pinned", map[string]string{"libc": "musl"},
			&kilnv1.PlatformConstraints{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", Libc: "musl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &SubmitOptions{Platform: tt.set}
			got, err := o.Constraints(local)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
