package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// holdManifest builds the C project within a short time limit.
const holdManifest = `build:
  - make
artifacts:
  - hello
timeout: 10s
`

// holdGrace is the metaserver's --timeout-grace in these tests.
const holdGrace = 2 * time.Second

// heartbeatAttempts sends heartbeats for ids on s every 200ms (at most
// 600), as a build server that holds a build without ever finishing it
// would, until stop is called (or the test ends); once stop returns the
// stream is free for other sends.
func heartbeatAttempts(t *testing.T, s *authSession, ids ...uint64) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 600; i++ {
			hb := &kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Heartbeat{Heartbeat: &kilnv1.Heartbeat{RunningAttemptIds: ids}}}
			if s.stream.Send(hb) != nil {
				return
			}
			select {
			case <-quit:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(quit); <-done }) }
	t.Cleanup(stop)
	return stop
}

func TestAHeldBuildIsTakenBackWithinItsTimeLimitPlusGraceAndBuiltByAnother(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "60s", "--inline-artifact-bytes", "0",
		"--timeout-grace", holdGrace.String(), "--exclude-for", "10m")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Name: "auth", ManifestText: holdManifest})
	f.AddProject("auth", repo)

	// The hostile volunteer speaks the WorkerService itself: it takes the
	// build and heartbeats for it, and never reports anything.
	holder := authOpen(t, f, f.AddBuildServer("holder"))
	buildID := authSubmit(t, f)
	asg := holder.assignment(t)
	if asg.GetBuildId() != buildID {
		t.Fatalf("the holder got build %d, want %d", asg.GetBuildId(), buildID)
	}
	stopHeartbeats := heartbeatAttempts(t, holder, asg.GetAttemptId())
	// An honest buildserver joins once the build is held.
	f.StartBuildserver(f.AddBuildServer("honest"))
	f.WaitBuildServers(2)

	cancel := holder.next(t, "CancelAttempt", func(m *kilnv1.SessionResponse) bool { return m.GetCancel() != nil }).GetCancel()
	if cancel.GetAttemptId() != asg.GetAttemptId() || !strings.Contains(cancel.GetReason(), "past its time limit of 10s plus 2s grace") {
		t.Fatalf("cancel %v; want the holder's attempt %d taken back for its time limit", cancel, asg.GetAttemptId())
	}

	var b *kilnv1.Build
	farmtest.Eventually(t, farmtest.WaitTimeout, func() error {
		b = f.GetBuild(t, buildID)
		if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
			return fmt.Errorf("build %d is %s (%s)", buildID, b.GetState(), b.GetFailure())
		}
		return nil
	})
	atts := b.GetAttempts()
	if len(atts) != 2 {
		t.Fatalf("attempts %v; want the holder's, then the honest one's", atts)
	}
	held, built := atts[0], atts[1]
	if held.GetBuildServer() != "holder" || held.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_LOST {
		t.Fatalf("first attempt %v; want lost on holder", held)
	}
	if built.GetBuildServer() != "honest" || built.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("second attempt %v; want succeeded on honest", built)
	}
	// Re-dispatched within the time limit plus grace, allowing for the
	// lease checker's period (half the heartbeat) and loaded machines.
	limit := 10*time.Second + holdGrace
	after := built.GetStartedAt().AsTime().Sub(held.GetStartedAt().AsTime())
	if after < limit || after > limit+5*time.Second {
		t.Fatalf("re-dispatched %s after the holder's start; want between %s and %s", after, limit, limit+5*time.Second)
	}

	// The holder's late result is refused, and the artifact stays honest's.
	stopHeartbeats()
	ack := holder.result(t, &kilnv1.AttemptResult{AttemptId: asg.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "sabotage"})
	if ack.GetAccepted() {
		t.Fatalf("the holder's late result was accepted: %v", ack)
	}
	if got := f.GetBuild(t, buildID); got.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
		t.Fatalf("after the late result the build is %s", got.GetState())
	}

	// The status JSON counts the holder's lost attempt.
	ctx, cancelCtx := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelCtx()
	resp, err := kilnv1.NewStatusServiceClient(f.Conn()).ListBuildServers(ctx, &kilnv1.ListBuildServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, bs := range resp.GetBuildServers() {
		if bs.GetName() == "holder" && bs.GetAttemptsLost() != 1 {
			t.Fatalf("holder: %d attempts lost, want 1", bs.GetAttemptsLost())
		}
	}
}

func TestAnUnmatchedRequestExpiresAndItsRequesterIsMailedWhy(t *testing.T) {
	port := farmtest.FreePort(t)
	sink := mailStartSink(t, port)
	f := mailFarm(t, port, farmtest.CProjectOptions{Manifest: true}, "--expire-unmatched", "2s")
	mailStartBuilder(t, f) // native only: nothing big-endian
	const ada = "ada@example.org"

	r := f.Startcompile("--project", "hello", "--revision", "main", "--endian", "big", "--wait", "--json", ada)
	expectExit(t, r, 3)
	res := parseResult(t, r)
	if res.State != "expired" {
		t.Fatalf("build: %+v, want state expired", res)
	}
	b := f.GetBuild(t, res.BuildID)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_EXPIRED || len(b.GetAttempts()) != 0 {
		t.Fatalf("build %d: %s with %d attempts; want expired, never dispatched", b.GetId(), b.GetState(), len(b.GetAttempts()))
	}
	for _, want := range []string{"no connected target matched for 2s", "endian=big: 1 of 1 connected targets do not match"} {
		if !strings.Contains(b.GetFailure(), want) {
			t.Fatalf("failure %q lacks %q", b.GetFailure(), want)
		}
	}
	msgs := mailWaitSettled(t, f, sink, 1, mailDeliveryTimeout)
	got := mailFor(msgs, ada)
	if len(got) != 1 {
		t.Fatalf("%s received %d mails, want 1", ada, len(got))
	}
	if s := got[0].Subject(); !strings.HasSuffix(s, ": expired") {
		t.Errorf("subject %q does not say expired", s)
	}
	if text := mailNorm(got[0].Text); !strings.Contains(text, "no connected target matched for 2s") {
		t.Errorf("the mail does not say why:\n%s", got[0].Text)
	}
}

func TestABuildLongerThanAVolunteersMaxBuildTimeWaitsForAnother(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s")
	// The manifest allows 20 minutes; the volunteer caps builds at 10.
	manifest := strings.Replace(farmtest.DefaultManifest, "timeout: 5m", "timeout: 20m", 1)
	if !strings.Contains(manifest, "timeout: 20m") {
		t.Fatalf("farmtest.DefaultManifest no longer sets timeout: 5m:\n%s", farmtest.DefaultManifest)
	}
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{ManifestText: manifest})
	f.AddProject("hello", repo)
	f.StartBuildserver(f.AddBuildServer("capped"), "--max-build-time", "10m")
	f.WaitBuildServers(1)

	r := f.Startcompile("--project", "hello", "--json", "dev@example.com")
	expectExit(t, r, 0)
	res := parseResult(t, r)
	id := strconv.FormatUint(res.BuildID, 10)
	want := "policy: time limit 1200s exceeds the maximum of 600s"
	// The metaserver refuses to dispatch, so the reason is there from the
	// start and stays (no attempt ever runs on the capped server).
	st := f.Startcompile("status", "--json", id)
	got := parseResult(t, st)
	if got.State != "queued" {
		t.Fatalf("with only a capped volunteer the build is %q, want queued", got.State)
	}
	var full struct {
		WaitingReasons []string `json:"waiting_reasons"`
	}
	if err := json.Unmarshal([]byte(st.Stdout), &full); err != nil {
		t.Fatal(err)
	}
	reasons := strings.Join(full.WaitingReasons, "\n")
	if !strings.Contains(reasons, want) {
		t.Fatalf("waiting reasons %q lack %q", reasons, want)
	}
	if b := f.GetBuild(t, res.BuildID); len(b.GetAttempts()) != 0 {
		t.Fatalf("the capped volunteer got attempts: %v", b.GetAttempts())
	}

	f.StartBuildserver(f.AddBuildServer("uncapped"))
	done := f.Startcompile("status", "--wait", "--json", id)
	if got := parseResult(t, done); got.State != "succeeded" {
		t.Fatalf("after an uncapped volunteer joined: %+v\n%s", got, done.Stderr)
	}
	b := f.GetBuild(t, res.BuildID)
	if n := len(b.GetAttempts()); n != 1 || b.GetAttempts()[0].GetBuildServer() != "uncapped" {
		t.Fatalf("attempts %v, want exactly one, on uncapped", b.GetAttempts())
	}
}
