package server

import (
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// lostOn requires build id's first attempt to be LOST on server with a
// reason containing reason.
func lostOn(t *testing.T, ts *testServer, id uint64, server, reason string) {
	t.Helper()
	first := ts.build(id).GetAttempts()[0]
	if first.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_LOST || first.GetBuildServer() != server ||
		!strings.Contains(first.GetReason(), reason) {
		t.Fatalf("first attempt %v; want lost on %s with %q", first, server, reason)
	}
}

func TestAClosedConnectionsAttemptGoesElsewhereAfterTheReconnectGraceNotTheLease(t *testing.T) {
	// A lease of a minute: the build must move long before it.
	ts := startTestServer(t, Config{Lease: time.Minute, ReconnectGrace: 200 * time.Millisecond}, queuedBuild(1, "hello", 60))
	crashed := ts.connect("crashed", nil)
	a := crashed.assignment()
	other := ts.connect("other", nil)
	closed := time.Now()
	crashed.conn.Close() // as a SIGKILL closes the process's socket
	b := other.assignment()
	if b.GetBuildId() != 1 || b.GetAttemptId() == a.GetAttemptId() {
		t.Fatalf("other got %v; want a new attempt of build 1", b)
	}
	if waited := time.Since(closed); waited >= time.Minute {
		t.Fatalf("re-dispatched after %s, not before the lease", waited)
	}
	lostOn(t, ts, 1, "crashed", "crashed did not reconnect")
	other.report(&kilnv1.AttemptResult{AttemptId: b.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "make failed"})
	if got := ts.build(1); got.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED {
		t.Fatalf("build %v; want failed by other's result", got.GetState())
	}
}

func TestABuildServerReconnectingWithinTheGraceKeepsItsAttemptAndDelivers(t *testing.T) {
	grace := time.Second
	ts := startTestServer(t, Config{Lease: time.Minute, ReconnectGrace: grace}, queuedBuild(1, "hello", 60))
	first := ts.connect("blip", nil)
	a := first.assignment()
	first.conn.Close()
	again := ts.reopen(first, hello(a.GetAttemptId()))
	// Wait past the grace: the attempt is still blip's, with a whole lease.
	time.Sleep(grace + 500*time.Millisecond)
	if atts := ts.build(1).GetAttempts(); len(atts) != 1 || atts[0].GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RUNNING {
		t.Fatalf("attempts %v after a reconnect within the grace; want the first still running", atts)
	}
	again.report(&kilnv1.AttemptResult{AttemptId: a.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "make failed"})
	if got := ts.build(1); got.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED || len(got.GetAttempts()) != 1 {
		t.Fatalf("build %v with %d attempts; want failed by the reconnected server's result", got.GetState(), len(got.GetAttempts()))
	}
}

func TestASilentPartitionIsBoundedByTheLeaseNotTheReconnectGrace(t *testing.T) {
	lease := 2 * time.Second
	ts := startTestServer(t, Config{Lease: lease, HeartbeatInterval: time.Second, ReconnectGrace: 100 * time.Millisecond},
		queuedBuild(1, "hello", 60))
	silent := ts.connect("silent", nil) // its stream stays open; it never heartbeats
	a := silent.assignment()
	other := ts.connect("other", nil)
	time.Sleep(lease / 2) // ten graces, half the lease
	if atts := ts.build(1).GetAttempts(); len(atts) != 1 || atts[0].GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RUNNING {
		t.Fatalf("attempts %v before the lease lapsed; want the first still running", atts)
	}
	b := other.assignment() // within 5 s: the lease, then one tick
	if b.GetBuildId() != 1 || b.GetAttemptId() == a.GetAttemptId() {
		t.Fatalf("other got %v; want a new attempt of build 1", b)
	}
	lostOn(t, ts, 1, "silent", "no heartbeat from silent")
	started := ts.build(1).GetAttempts()
	if held := started[0].GetFinishedAt().AsTime().Sub(started[0].GetStartedAt().AsTime()); held < lease {
		t.Fatalf("taken back after %s, before the lease (%s)", held, lease)
	}
}
