package server

import (
	"slices"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestABuildLongerThanAVolunteersTimeCapWaitsWithItsReasonAndGoesToAnother(t *testing.T) {
	ts := startTestServer(t, Config{}, queuedBuild(1, "hello", 3600))
	capped := ts.connect("capped", &kilnv1.BuildServerPolicy{MaxBuildSeconds: 600})
	b := ts.build(1)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED {
		t.Fatalf("state = %v, want queued: the capped server got the build", b.GetState())
	}
	want := "policy: time limit 3600s exceeds the maximum of 600s: 1 of 1 connected targets do not match"
	if !slices.Contains(b.GetWaitingReasons(), want) {
		t.Fatalf("waiting reasons %q lack %q", b.GetWaitingReasons(), want)
	}
	free := ts.connect("free", nil)
	a := free.assignment()
	if a.GetBuildId() != 1 {
		t.Fatalf("assignment of build %d, want 1", a.GetBuildId())
	}
	b = ts.build(1)
	if n := len(b.GetAttempts()); n != 1 || b.GetAttempts()[0].GetBuildServer() != "free" {
		t.Fatalf("attempts = %v, want one on free", b.GetAttempts())
	}
	_ = capped
}

func TestRefusalsDoNotCountAsInfrastructureAttempts(t *testing.T) {
	// Three volunteers refuse (their own check, after the metaserver's),
	// more than --max-infra-attempts 2: the build must still wait, with
	// every refusing server excluded, and go to the fourth.
	ts := startTestServer(t, Config{MaxInfraAttempts: 2}, queuedBuild(1, "hello", 60))
	for i, name := range []string{"r1", "r2", "r3"} {
		ss := ts.connect(name, nil)
		a := ss.assignment()
		ss.report(&kilnv1.AttemptResult{AttemptId: a.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_REFUSED,
			Reason: "project not allowed by this build server's policy"})
		b := ts.build(1)
		if b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED {
			t.Fatalf("after refusal %d: state %v (failure %q), want queued", i+1, b.GetState(), b.GetFailure())
		}
		if got := strings.Join(b.GetWaitingReasons(), "\n"); !strings.Contains(got, "busy, excluded or put aside") {
			t.Fatalf("after refusal %d: reasons %q do not say the refusing servers are excluded", i+1, got)
		}
	}
	ok := ts.connect("ok", nil)
	a := ok.assignment()
	ok.report(&kilnv1.AttemptResult{AttemptId: a.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "make failed", FailingStep: "make"})
	b := ts.build(1)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED || len(b.GetAttempts()) != 4 {
		t.Fatalf("state %v with %d attempts, want failed after 4 attempts", b.GetState(), len(b.GetAttempts()))
	}
	for i, att := range b.GetAttempts()[:3] {
		if att.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_REFUSED {
			t.Errorf("attempt %d: outcome %v, want refused", i+1, att.GetOutcome())
		}
	}
}

func TestSetupFailuresStillEndInErrorAfterMaxInfraAttempts(t *testing.T) {
	ts := startTestServer(t, withFakeClock(Config{MaxInfraAttempts: 2}), queuedBuild(1, "hello", 60))
	for i, name := range []string{"s1", "s2"} {
		ss := ts.connect(name, nil)
		if i > 0 {
			// The retry waits all of its delay after the first failure.
			ts.advance(retryDelay(1) - time.Nanosecond)
			if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED ||
				!strings.Contains(strings.Join(b.GetWaitingReasons(), "\n"), "retry delayed until") {
				t.Fatalf("a nanosecond before the retry delay ends: %v with reasons %q; want queued, delayed", b.GetState(), b.GetWaitingReasons())
			}
			ts.fake().Advance(time.Nanosecond) // the delay's own timer dispatches
		}
		a := ss.assignment()
		ss.report(&kilnv1.AttemptResult{AttemptId: a.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, Reason: "disk full"})
	}
	if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_ERROR {
		t.Fatalf("state %v after 2 setup failures with --max-infra-attempts 2, want error", b.GetState())
	}
}
