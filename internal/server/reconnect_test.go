package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

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

// running requires build id to have one attempt, still running on server.
func running(t *testing.T, ts *testServer, id uint64, server, when string) {
	t.Helper()
	if atts := ts.build(id).GetAttempts(); len(atts) != 1 || atts[0].GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RUNNING ||
		atts[0].GetBuildServer() != server {
		t.Fatalf("attempts %v %s; want the first still running on %s", atts, when, server)
	}
}

func TestAClosedConnectionsAttemptGoesElsewhereAfterTheReconnectGraceNotTheLease(t *testing.T) {
	// A lease of a minute: the build must move long before it.
	grace := 200 * time.Millisecond
	ts := startTestServer(t, withFakeClock(Config{Lease: time.Minute, ReconnectGrace: grace}), queuedBuild(1, "hello", 60))
	crashed := ts.connect("crashed", nil)
	a := crashed.assignment()
	other := ts.connect("other", nil)
	crashed.conn.Close() // as a SIGKILL closes the process's socket
	ts.waitGone("crashed")
	closed := ts.fake().Now()
	// The whole grace: the attempt still waits for crashed.
	ts.advance(grace)
	running(t, ts, 1, "crashed", "at the end of the reconnect grace")
	// Past it, the grace's own timer (no lease round: the clock stays
	// before the lease loop's first tick) queues the build elsewhere.
	ts.fake().Advance(time.Millisecond)
	b := other.assignment()
	if b.GetBuildId() != 1 || b.GetAttemptId() == a.GetAttemptId() {
		t.Fatalf("other got %v; want a new attempt of build 1", b)
	}
	lostOn(t, ts, 1, "crashed", "crashed did not reconnect")
	if lost := ts.build(1).GetAttempts()[0].GetFinishedAt().AsTime().Sub(closed); lost <= grace || lost > grace+time.Millisecond {
		t.Fatalf("lost %s after the connection closed; want just past the %s grace, not the lease", lost, grace)
	}
	other.report(&kilnv1.AttemptResult{AttemptId: b.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "make failed"})
	if got := ts.build(1); got.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED {
		t.Fatalf("build %v; want failed by other's result", got.GetState())
	}
}

func TestABuildServerReconnectingWithinTheGraceKeepsItsAttemptAndDelivers(t *testing.T) {
	grace := time.Second
	ts := startTestServer(t, withFakeClock(Config{Lease: time.Minute, ReconnectGrace: grace}), queuedBuild(1, "hello", 60))
	first := ts.connect("blip", nil)
	a := first.assignment()
	first.conn.Close()
	ts.waitGone("blip")
	ts.advance(grace / 2)
	again := ts.reopen(first, hello(a.GetAttemptId()))
	// Past the grace (its timer fires): the attempt is still blip's, with
	// a whole lease.
	ts.advance(grace)
	running(t, ts, 1, "blip", "after a reconnect within the grace")
	again.report(&kilnv1.AttemptResult{AttemptId: a.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "make failed"})
	if got := ts.build(1); got.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED || len(got.GetAttempts()) != 1 {
		t.Fatalf("build %v with %d attempts; want failed by the reconnected server's result", got.GetState(), len(got.GetAttempts()))
	}
}

func TestAReconnectAtTheGracesLastInstantKeepsTheAttemptAndANanosecondLaterDropsIt(t *testing.T) {
	grace := 3 * time.Second
	for _, tc := range []struct {
		name  string
		after time.Duration
		keep  bool
	}{
		{"exactly at the end of the grace: kept", grace, true},
		{"a nanosecond past it: dropped and lost", grace + time.Nanosecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startTestServer(t, withFakeClock(Config{Lease: time.Minute, ReconnectGrace: grace}), queuedBuild(1, "hello", 60))
			first := ts.connect("edge", nil)
			a := first.assignment()
			first.conn.Close()
			ts.waitGone("edge")
			// Only the clock moves: no lease round, and the grace's
			// timer (a millisecond past it) has not fired.
			ts.fake().Advance(tc.after)
			again := ts.dial("edge", first.token, hello(a.GetAttemptId()))
			w := again.next(5 * time.Second).GetWelcome()
			if w == nil {
				t.Fatal("the first message is not a Welcome")
			}
			kept := len(w.GetKeepAttemptIds()) == 1 && w.GetKeepAttemptIds()[0] == a.GetAttemptId() && len(w.GetDropAttemptIds()) == 0
			dropped := len(w.GetDropAttemptIds()) == 1 && w.GetDropAttemptIds()[0] == a.GetAttemptId() && len(w.GetKeepAttemptIds()) == 0
			if tc.keep && !kept || !tc.keep && !dropped {
				t.Fatalf("welcome keeps %v and drops %v; want attempt %d kept: %v", w.GetKeepAttemptIds(), w.GetDropAttemptIds(), a.GetAttemptId(), tc.keep)
			}
			ts.advance(time.Millisecond) // the grace's timer and a lease round
			if tc.keep {
				running(t, ts, 1, "edge", "after a reconnect at the grace's last instant")
				return
			}
			lostOn(t, ts, 1, "edge", "edge did not reconnect")
		})
	}
}

func TestASilentPartitionIsBoundedByTheLeaseNotTheReconnectGrace(t *testing.T) {
	lease := 2 * time.Second
	// Silent is put aside at its first loss: the scheduler, which picks
	// any free target, then cannot hand the build back to it (on the real
	// clock it would lose it again a lease later, be excluded and the
	// test would pass later; the fake clock stands still).
	ts := startTestServer(t, withFakeClock(Config{Lease: lease, HeartbeatInterval: time.Second, ReconnectGrace: 100 * time.Millisecond,
		LossesBeforeAside: 1}), queuedBuild(1, "hello", 60))
	silent := ts.connect("silent", nil) // its stream stays open; it never heartbeats
	a := silent.assignment()
	other := ts.connect("other", nil)
	ts.advance(lease) // twenty graces, the whole lease
	running(t, ts, 1, "silent", "at the end of the lease")
	// One tick of the lease loop past the lease, its own round (not
	// advance's) takes the build back.
	tick := ts.srv.leaseTick()
	ts.fake().Advance(tick)
	b := other.assignment()
	if b.GetBuildId() != 1 || b.GetAttemptId() == a.GetAttemptId() {
		t.Fatalf("other got %v; want a new attempt of build 1", b)
	}
	lostOn(t, ts, 1, "silent", "no heartbeat from silent")
	started := ts.build(1).GetAttempts()
	if held := started[0].GetFinishedAt().AsTime().Sub(started[0].GetStartedAt().AsTime()); held <= lease || held > lease+tick {
		t.Fatalf("taken back after %s; want past the lease (%s), within a tick (%s)", held, lease, tick)
	}
}

// TestASessionOpenedAfterDrainBeganIsRefusedAndRegistersNothing: Drain
// ends the sessions it finds; one whose Hello arrives after it (a build
// server reconnecting at that moment) must be refused, not registered,
// or it would hold the graceful stop for its whole grace (seen in the
// PostgreSQL soak: a SIGTERMed writer outlived the harness's 10 s).
func TestASessionOpenedAfterDrainBeganIsRefusedAndRegistersNothing(t *testing.T) {
	ts := startTestServer(t, Config{})
	before, _ := ts.welcome("before")
	ts.srv.Drain()
	before.waitEnd() // idle, with no heartbeat to come: ended at once
	expectCode(t, "a session Drain found", before.end, codes.Unavailable)

	after := ts.open("after", &kilnv1.Hello{Version: "test", Slots: 1, Targets: []*kilnv1.Target{{Id: "native", System: testSystem}}})
	after.waitEnd()
	expectCode(t, "a session opened after Drain", after.end, codes.Unavailable)
	if !strings.Contains(after.end.Error(), errStopped.Error()) {
		t.Fatalf("session after Drain ended with %v; want %q", after.end, errStopped)
	}
	ts.srv.mu.Lock()
	_, registered := ts.srv.sessions["after"]
	ts.srv.mu.Unlock()
	if registered {
		t.Fatal("a session refused after Drain is registered")
	}
}
