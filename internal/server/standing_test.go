package server

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// hello is a Hello of one native target and one slot reporting the given
// running attempts.
func hello(running ...uint64) *kilnv1.Hello {
	return &kilnv1.Hello{Version: "test", Slots: 1, RunningAttemptIds: running,
		Targets: []*kilnv1.Target{{Id: "native", System: testSystem}}}
}

// eventually polls cond every 20ms until it holds, failing the test with
// what after limit.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// buildServer returns the status of build server name.
func (ts *testServer) buildServer(name string) *kilnv1.BuildServerStatus {
	ts.t.Helper()
	resp, err := kilnv1.NewStatusServiceClient(ts.conn).ListBuildServers(context.Background(), &kilnv1.ListBuildServersRequest{})
	if err != nil {
		ts.t.Fatal(err)
	}
	for _, bs := range resp.GetBuildServers() {
		if bs.GetName() == name {
			return bs
		}
	}
	ts.t.Fatalf("build server %s not listed", name)
	return nil
}

// heartbeats sends heartbeats for the running attempts of ss every 100ms
// (at most 300 of them) until the returned function is called, which
// returns once no more are sent: the stream may then be used again.
func heartbeats(ss *testSession, running ...uint64) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 300; i++ {
			if err := ss.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Heartbeat{Heartbeat: &kilnv1.Heartbeat{RunningAttemptIds: running}}}); err != nil {
				return
			}
			select {
			case <-quit:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	var once bool
	return func() {
		if !once {
			once = true
			close(quit)
			<-done
		}
	}
}

func TestAnAttemptHeldPastItsTimeLimitPlusGraceIsTakenBackAndGoesToAnother(t *testing.T) {
	ts := startTestServer(t, withFakeClock(Config{TimeoutGrace: time.Second, ExcludeFor: time.Minute}), queuedBuild(1, "hello", 1))
	holder := ts.connect("holder", nil)
	a := holder.assignment()
	stop := heartbeats(holder, a.GetAttemptId())
	defer stop()
	honest := ts.connect("honest", nil)

	// The holder heartbeats but never ends the attempt: it is cancelled
	// once the 1s time limit plus 1s grace have passed, not before.
	ts.advance(2 * time.Second)
	running(t, ts, 1, "holder", "at the end of its time limit plus grace")
	ts.advance(time.Nanosecond)
	var cancel *kilnv1.CancelAttempt
	for cancel == nil {
		msg := holder.next(10 * time.Second)
		cancel = msg.GetCancel()
	}
	if cancel.GetAttemptId() != a.GetAttemptId() || !strings.Contains(cancel.GetReason(), "past its time limit of 1s plus 1s grace") {
		t.Fatalf("cancel %v; want attempt %d taken back for its time limit", cancel, a.GetAttemptId())
	}
	b2 := honest.assignment()
	if b2.GetBuildId() != 1 {
		t.Fatalf("the honest server got build %d, want 1", b2.GetBuildId())
	}
	b := ts.build(1)
	first := b.GetAttempts()[0]
	if first.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_LOST || first.GetBuildServer() != "holder" {
		t.Fatalf("first attempt %v; want lost on holder", first)
	}
	if held := first.GetFinishedAt().AsTime().Sub(first.GetStartedAt().AsTime()); held != 2*time.Second+time.Nanosecond {
		t.Fatalf("taken back after %s, want just past the time limit plus grace (2s)", held)
	}
	// The holder's late result is refused: its attempt is no longer current.
	stop()
	ack := func() *kilnv1.ResultAck {
		if err := holder.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{Result: &kilnv1.AttemptResult{
			AttemptId: a.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "sabotage"}}}); err != nil {
			t.Fatal(err)
		}
		for {
			if r := holder.next(5 * time.Second).GetResultAck(); r != nil {
				return r
			}
		}
	}()
	if ack.GetAccepted() {
		t.Fatal("the holder's late result for a taken-back attempt was accepted")
	}
	honest.report(&kilnv1.AttemptResult{AttemptId: b2.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "make failed"})
	if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED || b.GetFailure() != "make failed" {
		t.Fatalf("build %v (%q); want failed by the honest server's result", b.GetState(), b.GetFailure())
	}
}

func TestAVolunteerThatKeepsLosingAttemptsIsPutAsideVisiblyAndCannotErrorTheBuild(t *testing.T) {
	// Three losses by one volunteer, with a budget of two: the build must
	// stay queued, the volunteer be put aside (through a reconnect too),
	// and the put-aside end by itself.
	cfg := withFakeClock(Config{MaxInfraAttempts: 2, LossesBeforeAside: 3, AsideFor: 3 * time.Second, ExcludeFor: 100 * time.Millisecond})
	ts := startTestServer(t, cfg, queuedBuild(1, "hello", 60))
	flaky := ts.connect("flaky", nil)
	for loss := 1; loss <= 3; loss++ {
		a := flaky.assignment()
		if a.GetBuildId() != 1 {
			t.Fatalf("loss %d: assignment of build %d, want 1", loss, a.GetBuildId())
		}
		// Reconnect without the attempt, as the reported attack did.
		flaky = ts.reopen(flaky, hello())
		b := ts.build(1)
		if b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED && b.GetState() != kilnv1.BuildState_BUILD_STATE_RUNNING {
			t.Fatalf("after loss %d the build is %v (%q); one volunteer's losses must not end it", loss, b.GetState(), b.GetFailure())
		}
		if loss == 2 {
			// Lost again: flaky is excluded from the build for all of
			// --exclude-for, then gets it back.
			ts.advance(cfg.ExcludeFor - time.Nanosecond)
			if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED ||
				!strings.Contains(strings.Join(b.GetWaitingReasons(), "\n"), "excluded") {
				t.Fatalf("a nanosecond before the exclusion ends: %v with reasons %q; want queued, flaky excluded", b.GetState(), b.GetWaitingReasons())
			}
			ts.advance(time.Nanosecond)
		}
	}
	bs := ts.buildServer("flaky")
	if bs.GetPutAsideUntil() == nil || bs.GetConsecutiveLosses() != 3 || !strings.Contains(bs.GetPutAsideReason(), "3 attempts lost in a row") {
		t.Fatalf("after 3 losses: aside until %v, %d in a row, reason %q; want put aside after 3",
			bs.GetPutAsideUntil(), bs.GetConsecutiveLosses(), bs.GetPutAsideReason())
	}
	if left := ts.fake().Until(bs.GetPutAsideUntil().AsTime()); left != cfg.AsideFor {
		t.Fatalf("put aside for %s, want --aside-for %s", left, cfg.AsideFor)
	}
	eventually(t, 5*time.Second, "3 lost attempts counted in the record", func() bool { return ts.buildServer("flaky").GetAttemptsLost() == 3 })
	// A reconnect does not end the put-aside.
	flaky = ts.reopen(flaky, hello())
	if ts.buildServer("flaky").GetPutAsideUntil() == nil {
		t.Fatal("reconnecting ended the put-aside")
	}
	b := ts.build(1)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED || !strings.Contains(strings.Join(b.GetWaitingReasons(), "\n"), "put aside") {
		t.Fatalf("build %v with reasons %q; want queued, its only server put aside", b.GetState(), b.GetWaitingReasons())
	}
	// The put-aside lasts all of --aside-for, then ends by itself and the
	// volunteer gets the build again; this time it reports FAILED, which
	// ends the build but not its run of losses: a failure costs a lying
	// volunteer nothing (red team).
	ts.advance(cfg.AsideFor - time.Nanosecond)
	if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED || ts.buildServer("flaky").GetPutAsideUntil() == nil {
		t.Fatalf("a nanosecond before the put-aside ends: build %v, aside until %v; want queued, still aside", b.GetState(), ts.buildServer("flaky").GetPutAsideUntil())
	}
	ts.fake().Advance(time.Nanosecond) // the put-aside's own timer dispatches
	a := flaky.next(10 * time.Second).GetAssignment()
	if a.GetBuildId() != 1 {
		t.Fatalf("after the put-aside, got %v; want build 1 again", a)
	}
	if ts.buildServer("flaky").GetPutAsideUntil() != nil {
		t.Fatal("the put-aside is still shown after it ended")
	}
	flaky.report(&kilnv1.AttemptResult{AttemptId: a.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "make failed"})
	if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED || len(b.GetAttempts()) != 4 {
		t.Fatalf("build %v after %d attempts; want failed after 4", b.GetState(), len(b.GetAttempts()))
	}
	if n := ts.buildServer("flaky").GetConsecutiveLosses(); n != 3 {
		t.Fatalf("%d losses in a row after a FAILED result, want still 3 (only a success ends them)", n)
	}
}

func TestLossesOfDifferentVolunteersStillExhaustTheBudget(t *testing.T) {
	ts := startTestServer(t, Config{MaxInfraAttempts: 2}, queuedBuild(1, "hello", 60))
	for _, name := range []string{"v1", "v2"} {
		ss := ts.connect(name, nil)
		ss.assignment()
		// Back without the attempt, draining: it takes no new work.
		h := hello()
		h.Draining = true
		ts.reopen(ss, h)
	}
	// The final record is committed after the Welcome: poll for it.
	eventually(t, 5*time.Second, "build 1 ends error after losses on 2 servers with --max-infra-attempts 2", func() bool {
		return ts.build(1).GetState() == kilnv1.BuildState_BUILD_STATE_ERROR
	})
}

func TestASetupFailureExclusionExpiresSoTheOnlyMatchingVolunteerGetsTheBuildAgain(t *testing.T) {
	cfg := withFakeClock(Config{ExcludeFor: 500 * time.Millisecond})
	ts := startTestServer(t, cfg, queuedBuild(1, "hello", 60))
	only := ts.connect("only", nil)
	a := only.assignment()
	only.report(&kilnv1.AttemptResult{AttemptId: a.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, Reason: "disk full"})
	b := ts.build(1)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED || !strings.Contains(strings.Join(b.GetWaitingReasons(), "\n"), "excluded") {
		t.Fatalf("build %v with reasons %q; want queued, the only server excluded", b.GetState(), b.GetWaitingReasons())
	}
	// Past the retry delay, to the exclusion's last instant: still queued.
	ts.advance(cfg.ExcludeFor - time.Nanosecond)
	if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED || !strings.Contains(strings.Join(b.GetWaitingReasons(), "\n"), "excluded") {
		t.Fatalf("a nanosecond before the exclusion ends: %v with reasons %q; want queued, excluded", b.GetState(), b.GetWaitingReasons())
	}
	var rec *store.Build
	if err := ts.st.View(func(tx store.Tx) (err error) { rec, err = tx.Build(1); return err }); err != nil {
		t.Fatal(err)
	}
	if rec.GetExcludedUntil()["only"] == nil || len(rec.GetExcludedBuildServers()) != 0 {
		t.Fatalf("stored exclusions %v (legacy %v); want an end time for only, no legacy list", rec.GetExcludedUntil(), rec.GetExcludedBuildServers())
	}
	ts.advance(time.Nanosecond)
	a2 := only.next(10 * time.Second).GetAssignment()
	if a2.GetBuildId() != 1 || a2.GetAttemptId() == a.GetAttemptId() {
		t.Fatalf("after the exclusion ended got %v; want a new attempt of build 1", a2)
	}
}

func TestAnExclusionForGoodFromAnOlderStoreEndsAfterExcludeFor(t *testing.T) {
	// A build record as the previous metaserver wrote it: excluded_build_servers
	// without end times, which kept a build queued forever.
	old := queuedBuild(1, "hello", 60)
	old.ExcludedBuildServers = []string{"only"}
	old.InfraAttempts = 1
	ts := startTestServer(t, withFakeClock(Config{ExcludeFor: time.Second}), old)
	only := ts.connect("only", nil)
	ts.advance(time.Second - time.Nanosecond)
	b := ts.build(1)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED {
		t.Fatalf("state %v; the upgraded exclusion must hold for --exclude-for first", b.GetState())
	}
	ts.advance(time.Nanosecond)
	a := only.next(10 * time.Second).GetAssignment()
	if a.GetBuildId() != 1 {
		t.Fatalf("got %v; want build 1 once the exclusion ended", a)
	}
	var rec *store.Build
	if err := ts.st.View(func(tx store.Tx) (err error) { rec, err = tx.Build(1); return err }); err != nil {
		t.Fatal(err)
	}
	if len(rec.GetExcludedBuildServers()) != 0 || rec.GetExcludedUntil()["only"] == nil {
		t.Fatalf("record after the upgrade: legacy %v, until %v; want moved to excluded_until", rec.GetExcludedBuildServers(), rec.GetExcludedUntil())
	}
}

// final is a build that ended, with its waiters' addresses.
type final struct {
	build   *kilnv1.Build
	waiting []string
}

// finals is a FinalHook that records the builds that ended.
type finals chan final

func (f finals) BuildFinished(tx store.Tx, b *kilnv1.Build, waiting []*store.Request, logTail string) error {
	var emails []string
	for _, r := range waiting {
		emails = append(emails, r.GetEmail())
	}
	f <- final{build: b, waiting: emails}
	return nil
}

func TestAQueuedBuildNoTargetMatchesExpiresAndItsWaitersAreTold(t *testing.T) {
	got := make(finals, 8)
	big := queuedBuild(1, "big", 60)
	big.Build.Constraints = &kilnv1.PlatformConstraints{Endian: "big"}
	// Builds 2 and 3 fit the one-slot server: 3 waits behind 2, matched
	// but busy, and must not expire.
	cfg := withFakeClock(Config{ExpireUnmatchedAfter: 2 * time.Second, Notifier: got})
	ts := startTestServer(t, cfg, big, queuedBuild(2, "a", 60), queuedBuild(3, "b", 60))
	if err := ts.st.Update(func(tx store.Tx) error {
		return tx.PutRequest(&store.Request{Id: 1, BuildId: 1, Email: "waiter@example.org", CreatedAt: timestamppb.Now()})
	}); err != nil {
		t.Fatal(err)
	}
	ss := ts.connect("little", nil)
	if a := ss.assignment(); a.GetBuildId() != 2 {
		t.Fatalf("assignment of build %d, want 2", a.GetBuildId())
	}
	// The first round finds build 1 unmatched; it waits all of
	// --expire-unmatched from there, then at most a check interval more.
	ts.advance(0)
	ts.advance(cfg.ExpireUnmatchedAfter - time.Nanosecond)
	select {
	case f := <-got:
		t.Fatalf("build %d ended %v before --expire-unmatched passed", f.build.GetId(), f.build.GetState())
	default:
	}
	if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED {
		t.Fatalf("build 1 is %v a nanosecond before --expire-unmatched; want queued", b.GetState())
	}
	ts.advance(ts.srv.expiryCheckInterval())
	var f final
	select {
	case f = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no build ended within 10s")
	}
	b := f.build
	if b.GetId() != 1 || b.GetState() != kilnv1.BuildState_BUILD_STATE_EXPIRED {
		t.Fatalf("build %d ended %v; want build 1 expired", b.GetId(), b.GetState())
	}
	for _, want := range []string{"no connected target matched for 2s", "endian=big: 1 of 1 connected targets do not match"} {
		if !strings.Contains(b.GetFailure(), want) {
			t.Errorf("failure %q lacks %q", b.GetFailure(), want)
		}
	}
	if len(f.waiting) != 1 || f.waiting[0] != "waiter@example.org" {
		t.Errorf("waiters told %v, want [waiter@example.org]", f.waiting)
	}
	// The hook runs inside the transaction that ends the build.
	eventually(t, 5*time.Second, "build 1 stored expired", func() bool {
		return ts.build(1).GetState() == kilnv1.BuildState_BUILD_STATE_EXPIRED
	})
	if v := ts.build(3); v.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED {
		t.Fatalf("build 3, matched but waiting for a slot, is %v; want still queued", v.GetState())
	}
}

func TestAnAttemptRestoredAfterARestartKeepsTheDeadlineOfItsStart(t *testing.T) {
	// Running when the previous metaserver stopped, started an hour ago
	// with a 1s time limit: the new process takes it back at once, not a
	// lease (30s) or a whole time limit later.
	rec := queuedBuild(1, "hello", 1)
	rec.Build.State = kilnv1.BuildState_BUILD_STATE_RUNNING
	rec.Build.Attempts = []*kilnv1.Attempt{{Id: attemptID(1, 1), BuildServer: "gone", TargetId: "native",
		Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RUNNING, StartedAt: timestamppb.New(time.Now().Add(-time.Hour))}}
	ts := startTestServer(t, withFakeClock(Config{}), rec)
	fresh := ts.connect("fresh", nil)
	ts.advance(0) // the first lease round, no time later
	a := fresh.next(10 * time.Second).GetAssignment()
	if a.GetBuildId() != 1 || a.GetAttemptId() != attemptID(1, 2) {
		t.Fatalf("got %v; want attempt 2 of build 1", a)
	}
	first := ts.build(1).GetAttempts()[0]
	if first.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_LOST || !strings.Contains(first.GetReason(), "past its time limit of 1s plus 5m0s grace") {
		t.Fatalf("restored attempt ended %v (%q); want lost past its time limit", first.GetOutcome(), first.GetReason())
	}
}

func TestAPutAsideSurvivesARestartAndAReconnect(t *testing.T) {
	dir := t.TempDir()
	if err := DataDirReady(dir); err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(dir, "kiln.db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	err = st.Update(func(tx store.Tx) error {
		return tx.CreateBuildServer(&store.BuildServer{Name: "flaky", TokenHash: "h", ConsecutiveLosses: 3,
			AttemptsLost: 9, PutAsideUntil: timestamppb.New(until), PutAsideReason: "3 attempts lost in a row; the last: lease lapsed"})
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Open(Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	srv.connect(&session{name: "flaky", ctx: ctx, cancel: cancel}, hello())
	if got := srv.sched.Server("flaky").PutAsideUntil; !got.Equal(until) {
		t.Fatalf("connected after a restart with PutAsideUntil %v, want %v", got, until)
	}
	resp, err := srv.ListBuildServers(context.Background(), &kilnv1.ListBuildServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bs := resp.GetBuildServers()[0]
	if !bs.GetPutAsideUntil().AsTime().Equal(until) || bs.GetConsecutiveLosses() != 3 || bs.GetAttemptsLost() != 9 || bs.GetPutAsideReason() == "" {
		t.Fatalf("listed %v; want put aside until %v after 3 losses in a row, 9 in all, with the reason", bs, until)
	}
}

func TestAVolunteerHandingABuildBackAgainIsExcludedFromItAndCannotBurnItsAttempts(t *testing.T) {
	// Handing back costs neither the budget nor a loss; doing it twice
	// excludes the server from the build, so it cannot spin through the
	// build's attempt numbers until "too many attempts".
	ts := startTestServer(t, Config{ExcludeFor: time.Minute}, queuedBuild(1, "hello", 60))
	spinner := ts.connect("spinner", nil)
	for i := 1; i <= 2; i++ {
		a := spinner.assignment()
		spinner.report(&kilnv1.AttemptResult{AttemptId: a.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RETURNED, Reason: "all 1 slots are busy"})
	}
	b := ts.build(1)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED || len(b.GetAttempts()) != 2 {
		t.Fatalf("after 2 hand-backs: %v with %d attempts; want queued after 2", b.GetState(), len(b.GetAttempts()))
	}
	if got := strings.Join(b.GetWaitingReasons(), "\n"); !strings.Contains(got, "excluded") {
		t.Fatalf("reasons %q; want the spinner excluded", got)
	}
	other := ts.connect("other", nil)
	if a := other.assignment(); a.GetBuildId() != 1 {
		t.Fatalf("other got build %d, want 1", a.GetBuildId())
	}
}
