package worker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/sandbox"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// recipe is a kiln-like recipe: steps and artifact paths.
func recipe(build []string, artifacts ...string) *kilnv1.Recipe {
	return &kilnv1.Recipe{BuildSteps: build, Artifacts: artifacts, TimeoutSeconds: 60}
}

func assignment(id uint64, url, commit string, r *kilnv1.Recipe) *kilnv1.Assignment {
	return &kilnv1.Assignment{AttemptId: id, BuildId: id * 10, TargetId: "native", Project: "hello",
		GitUrl: url, Commit: commit, Recipe: r, Options: map[string]string{"flavor": "plain"}}
}

// waitIdle waits until the client has forgotten every attempt (all results acknowledged).
func waitIdle(t testing.TB, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if !c.waitUntil(ctx, func() bool { return len(c.attempts) == 0 }) {
		t.Fatal("client still holds attempts")
	}
}

func TestClientBuildsAnAssignmentAndUploadsItsArtifact(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"kiln.yaml": "build: [make]\n", "hello.in": "hello\n"})
	cfg := testConfig(t, f)
	r := startClient(t, cfg)

	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
	h := f.hellos[0]
	if len(h.GetTargets()) != 1 || h.GetTargets()[0].GetId() != "native" || h.GetSlots() != 2 || h.GetVersion() != "test" || h.GetUnsandboxed() {
		t.Fatalf("Hello = %v", h)
	}

	rec := recipe([]string{
		"echo compiling",
		`cp hello.in hello && printf '%s %s %s %s' "$KILN_OPT_FLAVOR" "$KILN_ATTEMPT_ID" "$KILN_TARGET" "$KILN_BUILD_ID" > info`,
	}, "hello", "info")
	rec.CheckSteps = []string{"test -s hello"}
	f.push(t, assign(assignment(7, url, commit, rec)))

	res := f.waitResult(t, 7)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("outcome %v: %s\nlog:\n%s", res.GetOutcome(), res.GetReason(), f.log(7))
	}
	f.mu.Lock()
	blob := f.blobs[res.GetArtifact().GetSha256()]
	gaps := f.logGaps
	phases := f.phases[7]
	f.mu.Unlock()
	if blob == nil || uint64(len(blob)) != res.GetArtifact().GetSize() {
		t.Fatalf("artifact %s not uploaded as announced", res.GetArtifact().GetSha256())
	}
	files := untar(t, blob)
	if files["hello"] != "hello\n" || files["info"] != "plain 7 native 70" {
		t.Errorf("artifact holds %q", files)
	}
	if !slices.Equal(res.GetArtifact().GetFiles(), []string{"hello", "info"}) {
		t.Errorf("artifact files = %q", res.GetArtifact().GetFiles())
	}
	if len(gaps) > 0 {
		t.Errorf("log problems: %q", gaps)
	}
	if log := f.log(7); !strings.Contains(log, "$ echo compiling\ncompiling\n") || !strings.Contains(log, "$ test -s hello\n") {
		t.Errorf("log lacks step output:\n%s", log)
	}
	want := []kilnv1.Phase{kilnv1.Phase_PHASE_FETCHING, kilnv1.Phase_PHASE_BUILDING, kilnv1.Phase_PHASE_CHECKING,
		kilnv1.Phase_PHASE_PACKING, kilnv1.Phase_PHASE_UPLOADING}
	if !slices.Equal(phases, want) {
		t.Errorf("phases = %v, want %v", phases, want)
	}
	f.waitFor(t, "a heartbeat", func() bool { return len(f.heartbeats) > 0 })

	waitIdle(t, r.c)
	if _, err := os.Stat(r.c.results.path(7)); !os.IsNotExist(err) {
		t.Errorf("acknowledged result still on disk: %v", err)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestClientReportsOutcomes(t *testing.T) {
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	for _, tc := range []struct {
		name    string
		url     string
		recipe  *kilnv1.Recipe
		project string
		outcome kilnv1.AttemptOutcome
		step    string
		reason  string
		phases  int // at most this many progress messages
	}{
		{name: "a step that exits non-zero fails the build with its step named",
			url: url, recipe: recipe([]string{"true", "echo broken >&2; exit 3"}, "x"),
			outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, step: "echo broken >&2; exit 3", reason: "status 3", phases: 2},
		{name: "an artifact that was not produced fails the build",
			url: url, recipe: recipe([]string{"true"}, "hello"),
			outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, reason: "artifact hello not produced", phases: 3},
		{name: "an unreachable git URL is a setup failure",
			url: "file:///nonexistent/kiln-repo", recipe: recipe([]string{"true"}, "x"),
			outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, reason: "fetching", phases: 1},
		{name: "a project the policy does not allow is refused before anything runs",
			url: url, recipe: recipe([]string{"true"}, "x"), project: "secret",
			outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_REFUSED, reason: "not allowed", phases: 0},
		{name: "a step over the time limit times out",
			url: url, recipe: &kilnv1.Recipe{BuildSteps: []string{"sleep 30"}, TimeoutSeconds: 1},
			outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_TIMED_OUT, step: "sleep 30", reason: "time limit", phases: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t)
			cfg := testConfig(t, f)
			cfg.Policy = &kilnv1.BuildServerPolicy{AllowedProjects: []string{"hello"}}
			startClient(t, cfg)
			f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
			a := assignment(1, tc.url, commit, tc.recipe)
			if tc.project != "" {
				a.Project = tc.project
			}
			f.push(t, assign(a))
			res := f.waitResult(t, 1)
			if res.GetOutcome() != tc.outcome || res.GetFailingStep() != tc.step || !strings.Contains(res.GetReason(), tc.reason) {
				t.Errorf("result = %v / %q / %q, want %v / %q / reason with %q\nlog:\n%s",
					res.GetOutcome(), res.GetFailingStep(), res.GetReason(), tc.outcome, tc.step, tc.reason, f.log(1))
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if n := len(f.phases[1]); n > tc.phases {
				t.Errorf("%d progress messages (%v), want at most %d", n, f.phases[1], tc.phases)
			}
			if len(f.logGaps) > 0 {
				t.Errorf("log problems: %q", f.logGaps)
			}
		})
	}
}

func TestCancelAttemptKillsTheStep(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	startClient(t, testConfig(t, f))
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
	f.push(t, assign(assignment(3, url, commit, recipe([]string{"echo started; sleep 60; echo survived"}, "x"))))
	f.waitFor(t, "the step to start", func() bool { return strings.Contains(string(f.logs[3]), "started") })

	start := time.Now()
	f.push(t, &kilnv1.SessionResponse{Msg: &kilnv1.SessionResponse_Cancel{Cancel: &kilnv1.CancelAttempt{AttemptId: 3, Reason: "requester cancelled"}}})
	res := f.waitResult(t, 3)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_CANCELLED {
		t.Fatalf("outcome %v (%s)", res.GetOutcome(), res.GetReason())
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("cancel took %v", took)
	}
	if strings.Contains(f.log(3), "\nsurvived\n") {
		t.Error("the step kept running after the cancel")
	}
}

func TestClientReconnectsAndDeliversTheResultOfARunningBuild(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	fifo := filepath.Join(t.TempDir(), "go")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	startClient(t, testConfig(t, f))
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
	a := assignment(5, url, commit, recipe([]string{`echo started; cat "$KILN_OPT_FIFO"; echo finished > out`}, "out"))
	a.Options["fifo"] = fifo
	f.push(t, assign(a))
	f.waitFor(t, "the step to start", func() bool { return strings.Contains(string(f.logs[5]), "started") })

	f.breakSession(t)
	f.waitFor(t, "a second Hello", func() bool { return len(f.hellos) == 2 })
	if ids := f.hellos[1].GetRunningAttemptIds(); !slices.Equal(ids, []uint64{5}) {
		t.Fatalf("second Hello lists %v, want [5]", ids)
	}
	// The new session hears the attempt's phase again before the step
	// may end (releasing it at once raced the re-report under load: the
	// phase could already be PACKING).
	f.waitFor(t, "BUILDING reported on the new session", func() bool {
		n := 0
		for _, p := range f.phases[5] {
			if p == kilnv1.Phase_PHASE_BUILDING {
				n++
			}
		}
		return n == 2
	})
	// Let the step finish only now, so its result goes to the new session.
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteString("released\n")
	w.Close()

	res := f.waitResult(t, 5)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("outcome %v (%s)", res.GetOutcome(), res.GetReason())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !strings.Contains(string(f.logs[5]), "started\nreleased\n") || len(f.logGaps) > 0 {
		t.Errorf("log %q, problems %q", f.logs[5], f.logGaps)
	}
	if f.sessions != 2 {
		t.Errorf("%d sessions, want 2", f.sessions)
	}
	building := 0
	for _, p := range f.phases[5] {
		if p == kilnv1.Phase_PHASE_BUILDING {
			building++
		}
	}
	if building != 2 {
		t.Errorf("phases %v: want BUILDING reported once per session", f.phases[5])
	}
}

func TestRevokedCredentialStopsTheClient(t *testing.T) {
	f := startFake(t)
	f.revoked = true
	r := startClient(t, testConfig(t, f))
	select {
	case err := <-r.done:
		r.done <- err
		var authErr *AuthError
		if !errors.As(err, &authErr) {
			t.Fatalf("Run = %v, want *AuthError", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("client keeps running with a revoked credential")
	}
}

func TestUnacknowledgedResultSurvivesARestart(t *testing.T) {
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	for _, tc := range []struct {
		name    string
		drop    bool
		resends int
	}{
		{name: "a kept result is sent again after the restart", drop: false, resends: 1},
		{name: "a dropped result is discarded after the restart", drop: true, resends: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t)
			f.noAck = true
			cfg := testConfig(t, f)
			r := startClient(t, cfg)
			f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
			r.c.flushWait = 10 * time.Millisecond
			f.push(t, assign(assignment(9, url, commit, recipe([]string{"echo built > out"}, "out"))))
			first := f.waitResult(t, 9)
			if err := r.wait(t); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(r.c.results.path(9)); err != nil {
				t.Fatalf("unacknowledged result not on disk: %v", err)
			}

			f.mu.Lock()
			f.noAck = false
			f.dropIDs[9] = tc.drop
			f.mu.Unlock()
			r2 := startClient(t, cfg)
			f.waitFor(t, "a second Hello", func() bool { return len(f.hellos) == 2 })
			if ids := f.hellos[1].GetRunningAttemptIds(); !slices.Equal(ids, []uint64{9}) {
				t.Fatalf("Hello after restart lists %v, want [9]", ids)
			}
			waitIdle(t, r2.c)
			f.mu.Lock()
			n := len(f.results)
			last := f.results[n-1]
			f.mu.Unlock()
			if n != 1+tc.resends {
				t.Fatalf("%d results received, want %d", n, 1+tc.resends)
			}
			if tc.resends > 0 && (last.GetArtifact().GetSha256() != first.GetArtifact().GetSha256() || last.GetOutcome() != first.GetOutcome()) {
				t.Errorf("resent result %v differs from %v", last, first)
			}
			if _, err := os.Stat(r2.c.results.path(9)); !os.IsNotExist(err) {
				t.Errorf("result still on disk after ack/drop: %v", err)
			}
		})
	}
}

func TestGracefulStopReturnsUnfinishedBuilds(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	cfg := testConfig(t, f)
	cfg.Grace = 100 * time.Millisecond
	r := startClient(t, cfg)
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
	f.push(t, assign(assignment(4, url, commit, recipe([]string{"echo started; sleep 60"}, "x"))))
	f.waitFor(t, "the step to start", func() bool { return strings.Contains(string(f.logs[4]), "started") })

	if err := r.wait(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if res := f.resultForLocked(4); res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RETURNED {
		t.Errorf("result %v, want RETURNED", res)
	}
	if !slices.ContainsFunc(f.heartbeats, (*kilnv1.Heartbeat).GetDraining) {
		t.Error("no heartbeat announced draining")
	}
}

func TestAssignmentWithoutAFreeSlotIsReturned(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	cfg := testConfig(t, f)
	cfg.Slots = 1
	startClient(t, cfg)
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
	f.push(t, assign(assignment(1, url, commit, recipe([]string{"echo started; sleep 60"}, "x"))))
	f.waitFor(t, "the first step to start", func() bool { return strings.Contains(string(f.logs[1]), "started") })
	f.push(t, assign(assignment(2, url, commit, recipe([]string{"true"}, "x"))))
	res := f.waitResult(t, 2)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RETURNED || !strings.Contains(res.GetReason(), "slots") {
		t.Errorf("second assignment: %v (%s), want RETURNED for lack of slots", res.GetOutcome(), res.GetReason())
	}
}

func TestBwrapBuildCannotSeeTheDataDirectory(t *testing.T) {
	bw := sandbox.Bwrap{Grace: 200 * time.Millisecond}
	if err := bw.Available(); err != nil {
		t.Skipf("bubblewrap unavailable: %v", err)
	}
	url, commit := makeRepo(t, map[string]string{"hello.in": "hello\n"})
	hidden := `test -z "$(ls -A "$KILN_OPT_DATA/mirrors" 2>/dev/null)"`
	for _, tc := range []struct {
		name    string
		runner  StepRunner
		outcome kilnv1.AttemptOutcome
	}{
		// The contrast shows the check step really looks at the mirror.
		{"without a sandbox the step sees the mirrors", sandbox.Unsandboxed{}, kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED},
		{"under bwrap the data directory is hidden but the build dirs are writable", bw, kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t)
			cfg := testConfig(t, f)
			cfg.Sandbox = tc.runner
			if _, ok := tc.runner.(sandbox.Bwrap); ok {
				withBuildUsers(t, &cfg)
			}
			startClient(t, cfg)
			f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
			a := assignment(11, url, commit, recipe([]string{
				hidden,
				`cp hello.in hello && touch "$HOME/ok" && touch "$KILN_DESTDIR/ok"`,
			}, "hello"))
			a.Options["data"] = cfg.DataDir
			f.push(t, assign(a))
			res := f.waitResult(t, 11)
			if res.GetOutcome() != tc.outcome {
				t.Fatalf("outcome %v (%s), want %v\nlog:\n%s", res.GetOutcome(), res.GetReason(), tc.outcome, f.log(11))
			}
			if tc.outcome != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
				if res.GetFailingStep() != hidden {
					t.Errorf("failing step %q, want the visibility check", res.GetFailingStep())
				}
				return
			}
			f.mu.Lock()
			blob := f.blobs[res.GetArtifact().GetSha256()]
			f.mu.Unlock()
			if got := untar(t, blob)["hello"]; got != "hello\n" {
				t.Errorf("artifact hello = %q", got)
			}
		})
	}
}
