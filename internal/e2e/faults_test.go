package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// slowManifest builds for about `seconds` so a test can act mid-build.
func slowManifest(seconds int) string {
	return `options:
  n: {type: int, default: 0}
build:
  - echo build-started
  - sleep ` + strconv.Itoa(seconds) + `
  - make
artifacts: [hello]
timeout: 2m
`
}

// submit queues a build without waiting and returns its id.
func submit(t *testing.T, f *farmtest.Farm, args ...string) uint64 {
	t.Helper()
	r := f.Startcompile(append(append([]string{"--project", "hello", "--json"}, args...), "dev@example.com")...)
	expectExit(t, r, 0)
	return parseResult(t, r).BuildID
}

// waitRunningOn waits until build id runs (phase building) on build server name.
func waitRunningOn(t *testing.T, f *farmtest.Farm, id uint64, name string) {
	t.Helper()
	farmtest.Eventually(t, farmtest.WaitTimeout, func() error {
		b := f.GetBuild(t, id)
		atts := b.GetAttempts()
		if b.GetState() != kilnv1.BuildState_BUILD_STATE_RUNNING || len(atts) == 0 {
			return errorf("build %d is %s", id, b.GetState())
		}
		last := atts[len(atts)-1]
		if last.GetBuildServer() != name || last.GetPhase() != kilnv1.Phase_PHASE_BUILDING {
			return errorf("attempt on %s in phase %s", last.GetBuildServer(), last.GetPhase())
		}
		return nil
	})
}

func waitFinal(t *testing.T, f *farmtest.Farm, id uint64, within time.Duration) *kilnv1.Build {
	t.Helper()
	var b *kilnv1.Build
	farmtest.Eventually(t, within, func() error {
		b = f.GetBuild(t, id)
		switch b.GetState() {
		case kilnv1.BuildState_BUILD_STATE_QUEUED, kilnv1.BuildState_BUILD_STATE_RUNNING:
			return errorf("build %d still %s", id, b.GetState())
		}
		return nil
	})
	return b
}

func outcomes(b *kilnv1.Build) string {
	var parts []string
	for _, a := range b.GetAttempts() {
		parts = append(parts, a.GetBuildServer()+":"+strings.TrimPrefix(a.GetOutcome().String(), "ATTEMPT_OUTCOME_"))
	}
	return strings.Join(parts, ",")
}

func faultFarm(t *testing.T, manifest string, lease string) (*farmtest.Farm, string) {
	t.Helper()
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", lease, "--inline-artifact-bytes", "0")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{ManifestText: manifest})
	f.AddProject("hello", repo)
	return f, repo
}

func TestFaultAKilledBuildserversBuildIsRerunElsewhere(t *testing.T) {
	f, _ := faultFarm(t, slowManifest(3), "2s")
	a := f.StartBuildserver(f.AddBuildServer("a"))
	f.WaitBuildServers(1)
	id := submit(t, f)
	waitRunningOn(t, f, id, "a")
	f.StartBuildserver(f.AddBuildServer("b"))
	f.WaitBuildServers(2)
	killed := time.Now()
	a.Kill()
	b := waitFinal(t, f, id, 30*time.Second)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || outcomes(b) != "a:LOST,b:SUCCEEDED" {
		t.Fatalf("after killing a: state %s, attempts %s", b.GetState(), outcomes(b))
	}
	// Re-dispatched after the lease (2 s) lapsed, plus one dispatch: the
	// lease is checked on every heartbeat tick (200 ms); 5 s of slack covers
	// a loaded CI machine (measured: 2.0 s on a quiet one).
	redispatch := b.GetAttempts()[1].GetStartedAt().AsTime().Sub(killed)
	t.Logf("second attempt started %s after the kill", redispatch)
	if redispatch > 2*time.Second+200*time.Millisecond+5*time.Second {
		t.Fatalf("the second attempt started %s after the kill; want within the lease plus one dispatch", redispatch)
	}
	// And finished within that plus one build (3 s) plus slack.
	if took := time.Since(killed); took > 2*time.Second+3*time.Second+10*time.Second {
		t.Fatalf("re-run took %s", took)
	}
}

func TestFaultAKilledBuildserversBuildGoesElsewhereAfterTheReconnectGraceNotTheLease(t *testing.T) {
	// A lease of 30 s and the default reconnect grace (3 s): the killed
	// server's connection closes at once, so its build must not wait the lease.
	const lease = 30 * time.Second
	f, _ := faultFarm(t, slowManifest(3), lease.String())
	a := f.StartBuildserver(f.AddBuildServer("a"))
	f.WaitBuildServers(1)
	id := submit(t, f)
	waitRunningOn(t, f, id, "a")
	f.StartBuildserver(f.AddBuildServer("b"))
	f.WaitBuildServers(2)
	killed := time.Now()
	a.Kill()
	b := waitFinal(t, f, id, lease+30*time.Second)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || outcomes(b) != "a:LOST,b:SUCCEEDED" {
		t.Fatalf("after killing a: state %s, attempts %s", b.GetState(), outcomes(b))
	}
	if reason := b.GetAttempts()[0].GetReason(); !strings.Contains(reason, "a did not reconnect") {
		t.Fatalf("a's attempt lost with %q; want it lost for not reconnecting", reason)
	}
	// The behaviour, not a speed: the second attempt starts before the
	// lease could have lapsed (the figure is loadtest's redispatch).
	redispatch := b.GetAttempts()[1].GetStartedAt().AsTime().Sub(killed)
	t.Logf("second attempt started %s after the kill (lease %s)", redispatch, lease)
	if redispatch >= lease {
		t.Fatalf("the second attempt started %s after the kill, not before the lease (%s)", redispatch, lease)
	}
}

func TestFaultMetaserverKilledMidBuildDeliversTheBuildOnce(t *testing.T) {
	f, _ := faultFarm(t, slowManifest(3), "8s")
	bs := f.StartBuildserver(f.AddBuildServer("a"))
	f.WaitBuildServers(1)
	id := submit(t, f)
	waitRunningOn(t, f, id, "a")
	f.Meta().Process.Kill()
	f.Meta().Restart()
	b := waitFinal(t, f, id, 40*time.Second)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || outcomes(b) != "a:SUCCEEDED" {
		t.Fatalf("after a metaserver restart: %s, attempts %s\n%s", b.GetState(), outcomes(b), bs.Logs())
	}
	if n := len(listBuilds(t, f)); n != 1 {
		t.Fatalf("%d builds, want 1", n)
	}
}

func TestFaultAShortConnectionCutKeepsTheBuild(t *testing.T) {
	f, _ := faultFarm(t, slowManifest(3), "4s")
	proxy := newFaultProxy(t, f.Meta().Addr)
	f.StartBuildserver(f.AddBuildServer("a"), "--metaserver", proxy.Addr())
	f.WaitBuildServers(1)
	id := submit(t, f)
	waitRunningOn(t, f, id, "a")
	proxy.Cut()
	time.Sleep(1 * time.Second) // the fault itself: shorter than the 4 s lease
	proxy.Heal()
	b := waitFinal(t, f, id, 30*time.Second)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || outcomes(b) != "a:SUCCEEDED" {
		t.Fatalf("after a short cut: %s, attempts %s", b.GetState(), outcomes(b))
	}
}

func TestFaultALongConnectionCutRerunsElsewhereAndRefusesTheLateResult(t *testing.T) {
	f, _ := faultFarm(t, slowManifest(4), "2s")
	proxy := newFaultProxy(t, f.Meta().Addr)
	a := f.StartBuildserver(f.AddBuildServer("a"), "--metaserver", proxy.Addr())
	f.WaitBuildServers(1)
	id := submit(t, f)
	waitRunningOn(t, f, id, "a")
	proxy.Cut()
	f.StartBuildserver(f.AddBuildServer("b"))
	b := waitFinal(t, f, id, 40*time.Second)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || outcomes(b) != "a:LOST,b:SUCCEEDED" {
		t.Fatalf("after a long cut: %s, attempts %s", b.GetState(), outcomes(b))
	}
	// a reconnects still holding its copy of the attempt: the metaserver
	// refuses it (the Welcome drops it; a result sent anyway is not accepted).
	proxy.Heal()
	farmtest.Eventually(t, 40*time.Second, func() error {
		logs := a.Logs()
		if !strings.Contains(logs, "dropped=1") && !strings.Contains(logs, "accepted=false") {
			return errorf("a's late attempt not refused yet")
		}
		return nil
	})
	if got := f.GetBuild(t, id); outcomes(got) != "a:LOST,b:SUCCEEDED" || got.GetArtifact().GetSha256() != b.GetArtifact().GetSha256() {
		t.Fatalf("the late result changed the build: %s", outcomes(got))
	}
}

func TestFaultASetupFailureIsRetriedElsewhereAndACompileFailureIsNot(t *testing.T) {
	f, repo := faultFarm(t, slowManifest(0), "2s")
	// Build server a cannot clone or fetch its source mirror, even after
	// wiping it (a setup failure, not the build's fault).
	a := f.StartBuildserverEnv(gitThatCannotFetch(t), f.AddBuildServer("a"))
	f.WaitBuildServers(1)
	id := submit(t, f)
	farmtest.Eventually(t, farmtest.WaitTimeout, func() error {
		if b := f.GetBuild(t, id); !strings.Contains(outcomes(b), "a:SETUP_FAILED") {
			return errorf("attempts %s", outcomes(b))
		}
		return nil
	})
	f.StartBuildserver(f.AddBuildServer("b"))
	b := waitFinal(t, f, id, 30*time.Second)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || !strings.HasSuffix(outcomes(b), "b:SUCCEEDED") || strings.Contains(outcomes(b), "a:SUCCEEDED") {
		t.Fatalf("setup failure: %s, attempts %s", b.GetState(), outcomes(b))
	}

	// A compile failure is final: one attempt, no retry, even with b idle.
	a.Stop()
	f.WaitBuildServers(1)
	dir := repo
	broken := farmtest.Commit(t, dir, map[string]string{"hello.c": "this is not C\n"}, "break the build")
	fid := submit(t, f, "--revision", broken)
	fb := waitFinal(t, f, fid, 30*time.Second)
	if fb.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED || len(fb.GetAttempts()) != 1 || fb.GetFailingStep() == "" {
		t.Fatalf("compile failure: %s, attempts %s, failing step %q", fb.GetState(), outcomes(fb), fb.GetFailingStep())
	}
}

func TestAfterMaxInfraAttemptsTheBuildEndsAsErrorWithEveryReason(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--inline-artifact-bytes", "0", "--max-infra-attempts", "2")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{ManifestText: slowManifest(0)})
	f.AddProject("hello", repo)
	// Neither build server can clone or fetch its source mirror (as in the
	// setup-failure fault test).
	env := gitThatCannotFetch(t)
	for _, name := range []string{"a", "b"} {
		f.StartBuildserverEnv(env, f.AddBuildServer(name))
	}
	f.WaitBuildServers(2)
	r := f.Startcompile("--project", "hello", "--wait", "--json", "dev@example.com")
	expectExit(t, r, 3)
	res := parseResult(t, r)
	if res.State != "error" {
		t.Fatalf("build: %+v, want state error", res)
	}
	b := f.GetBuild(t, res.BuildID)
	atts := b.GetAttempts()
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_ERROR || len(atts) != 2 {
		t.Fatalf("build %d: %s with attempts %s, want error after 2", b.GetId(), b.GetState(), outcomes(b))
	}
	servers := map[string]bool{}
	for i, a := range atts {
		servers[a.GetBuildServer()] = true
		if a.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED || a.GetReason() == "" {
			t.Fatalf("attempt %d: %s %q, want setup_failed with a reason", i+1, a.GetOutcome(), a.GetReason())
		}
		want := "attempt " + strconv.Itoa(i+1) + " on " + a.GetBuildServer() + ": setup_failed (" + a.GetReason() + ")"
		if !strings.Contains(b.GetFailure(), want) || !strings.Contains(res.Failure, want) {
			t.Fatalf("the failure reason lacks %q:\nGetBuild: %s\nstartcompile: %s", want, b.GetFailure(), res.Failure)
		}
	}
	if !servers["a"] || !servers["b"] {
		t.Fatalf("attempts ran on %v, want one on each build server", servers)
	}
	// startcompile status reports the same.
	r = f.Startcompile("status", "--json", strconv.FormatUint(res.BuildID, 10))
	expectExit(t, r, 3)
	if got := parseResult(t, r); got.State != "error" || got.Failure != b.GetFailure() {
		t.Fatalf("status: %+v", got)
	}
}

// gitThatCannotFetch returns a PATH setting for a build server whose git
// refuses every clone and fetch (and runs the real git for anything else,
// ls-remote included): its source mirror can never be made, not even after
// the build server wipes it, so each of its attempts ends SETUP_FAILED.
func gitThatCannotFetch(t *testing.T) []string {
	t.Helper()
	real, err := exec.LookPath("git")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := "#!/bin/sh\nfor a in \"$@\"; do\n  case \"$a\" in clone|fetch) echo 'fatal: this build server cannot fetch (e2e)' >&2; exit 128;; esac\ndone\nexec " + real + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "git"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{"PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH")}
}
