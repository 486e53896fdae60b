package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// mailbox is a FinalHook that records, per build, the final build and the
// addresses its mail would go to.
type mailbox struct {
	mu    sync.Mutex
	to    map[uint64][]string
	final map[uint64]*kilnv1.Build
}

func newMailbox() *mailbox {
	return &mailbox{to: map[uint64][]string{}, final: map[uint64]*kilnv1.Build{}}
}

// BuildFinished implements FinalHook.
func (m *mailbox) BuildFinished(_ store.Tx, b *kilnv1.Build, waiting []*store.Request, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.final[b.GetId()] = proto.Clone(b).(*kilnv1.Build)
	m.to[b.GetId()] = []string{}
	for _, r := range waiting {
		m.to[b.GetId()] = append(m.to[b.GetId()], r.GetEmail())
	}
	return nil
}

// recipients returns the addresses build id's mail went to, and whether
// the build finished at all.
func (m *mailbox) recipients(id uint64) ([]string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	to, ok := m.to[id]
	return append([]string(nil), to...), ok
}

// finalBuild returns build id as it was when it finished, or nil.
func (m *mailbox) finalBuild(id uint64) *kilnv1.Build {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.final[id]
}

// startCancelServer is a metaserver with the farmtest C project registered
// as "hello", mailing into the returned mailbox.
func startCancelServer(t *testing.T) (*testServer, *mailbox) {
	t.Helper()
	dir, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	mb := newMailbox()
	ts := startTestServer(t, Config{Notifier: mb, RequestsPerMinute: -1, RequestsPerMinutePerAddress: -1})
	ts.addProject("hello", "file://"+dir)
	return ts, mb
}

// submit asks for hello at main with option level as email and returns the
// response.
func (ts *testServer) submit(email string, level int) *kilnv1.SubmitResponse {
	ts.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kilnv1.NewCompileServiceClient(ts.conn).Submit(ctx, &kilnv1.SubmitRequest{
		Project: "hello", Revision: "main", Email: email, Options: map[string]string{"level": strconv.Itoa(level)}})
	if err != nil {
		ts.t.Fatalf("Submit as %s: %v", email, err)
	}
	return resp
}

// cancel calls CompileService.Cancel as email.
func (ts *testServer) cancel(email string, id uint64) (*kilnv1.Build, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kilnv1.NewCompileServiceClient(ts.conn).Cancel(ctx, &kilnv1.CancelRequest{BuildId: id, Email: email})
	return resp.GetBuild(), err
}

// requests returns build id's stored requests.
func (ts *testServer) requests(id uint64) []*store.Request {
	ts.t.Helper()
	var reqs []*store.Request
	err := ts.st.View(func(tx store.Tx) error {
		var err error
		reqs, err = tx.RequestsForBuild(id)
		return err
	})
	if err != nil {
		ts.t.Fatal(err)
	}
	return reqs
}

// sameRequests fails the test when the stored requests differ from before.
func sameRequests(t *testing.T, what string, before, after []*store.Request) {
	t.Helper()
	if len(before) != len(after) {
		t.Fatalf("%s: %d requests, were %d", what, len(after), len(before))
	}
	for i := range before {
		if !proto.Equal(before[i], after[i]) {
			t.Fatalf("%s changed request %d: %v, was %v", what, before[i].GetId(), after[i], before[i])
		}
	}
}

// resultSeeingNoCancel reports r and fails the test if a CancelAttempt
// arrives before its acknowledgement.
func (ss *testSession) resultSeeingNoCancel(r *kilnv1.AttemptResult) {
	ss.t.Helper()
	if err := ss.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{Result: r}}); err != nil {
		ss.t.Fatal(err)
	}
	for {
		msg := ss.next(5 * time.Second)
		if c := msg.GetCancel(); c != nil {
			ss.t.Fatalf("%s: the build server was told to cancel attempt %d (%q)", ss.name, c.GetAttemptId(), c.GetReason())
		}
		if ack := msg.GetResultAck(); ack != nil && ack.GetAttemptId() == r.GetAttemptId() {
			if !ack.GetAccepted() {
				ss.t.Fatalf("%s: result refused: %s", ss.name, ack.GetReason())
			}
			return
		}
	}
}

func TestServer_Cancel_AJoinersCancelWithdrawsOnlyItsOwnWait(t *testing.T) {
	ts, mb := startCancelServer(t)
	const victim, attacker = "victim@example.org", "attacker@example.org"
	first := ts.submit(victim, 3)
	joined := ts.submit(attacker, 3)
	id := first.GetBuild().GetId()
	if !joined.GetJoined() || joined.GetBuild().GetId() != id {
		t.Fatalf("the attacker's request did not join build %d: %v", id, joined)
	}
	ss := ts.connect("bs", nil)
	a := ss.assignment()

	b, err := ts.cancel(attacker, id)
	if err != nil {
		t.Fatalf("the attacker withdrawing its own wait: %v", err)
	}
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_RUNNING || b.GetWaiters() != 1 || b.GetFailure() != "" {
		t.Fatalf("after the attacker's cancel: state %v, %d waiters, failure %q; want running for its 1 other waiter",
			b.GetState(), b.GetWaiters(), b.GetFailure())
	}
	data := payload(300, 1)
	ss.resultSeeingNoCancel(inlineResult(a.GetAttemptId(), data, data))

	if b := ts.build(id); b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || b.GetWaiters() != 1 {
		t.Fatalf("victim's build: %v with %d waiters; want succeeded, 1 waiter", b.GetState(), b.GetWaiters())
	}
	if to, _ := mb.recipients(id); len(to) != 1 || to[0] != victim {
		t.Fatalf("mail went to %q; want the victim only", to)
	}
	_, err = ts.cancel(attacker, id)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "already succeeded") {
		t.Fatalf("cancel after the end: %v; want FailedPrecondition saying it already succeeded", err)
	}
}

func TestServer_Cancel_AWaitNotHeldIsRefusedAndChangesNothing(t *testing.T) {
	ts, _ := startCancelServer(t)
	const ada, bob = "ada@example.org", "bob@example.net"
	id := ts.submit(ada, 4).GetBuild().GetId()
	ts.submit(bob, 4)
	before := ts.requests(id)

	_, err := ts.cancel("stranger@example.com", id)
	expectCode(t, "a stranger's cancel", err, codes.PermissionDenied)
	if msg := status.Convert(err).Message(); strings.Contains(msg, ada) || strings.Contains(msg, bob) {
		t.Fatalf("the refusal names a requester: %q", msg)
	}
	sameRequests(t, "a stranger's cancel", before, ts.requests(id))

	// Addresses compare in their canonical form: the domain's case does not matter.
	if _, err := ts.cancel("bob@EXAMPLE.net", id); err != nil {
		t.Fatalf("bob withdrawing: %v", err)
	}
	withdrawn := ts.requests(id)
	if r := withdrawn[1]; r.GetEmail() != bob || !r.GetNotified() || r.GetWithdrawnAt() == nil {
		t.Fatalf("bob's request after withdrawing: %v", r)
	}
	if r := withdrawn[0]; r.GetNotified() || r.GetWithdrawnAt() != nil {
		t.Fatalf("ada's request changed: %v", r)
	}
	_, err = ts.cancel(bob, id)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "already withdrawn") {
		t.Fatalf("a second withdrawal: %v; want FailedPrecondition saying it is already withdrawn", err)
	}
	sameRequests(t, "a second withdrawal", withdrawn, ts.requests(id))
	if b := ts.build(id); b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED || b.GetWaiters() != 1 {
		t.Fatalf("build after bob withdrew: %v, %d waiters; want queued for ada", b.GetState(), b.GetWaiters())
	}

	_, err = ts.cancel(ada, 999)
	expectCode(t, "cancel of an unknown build", err, codes.NotFound)
	_, err = ts.cancel("not an address", id)
	expectCode(t, "cancel with a malformed address", err, codes.InvalidArgument)
	sameRequests(t, "the refused calls", withdrawn, ts.requests(id))
}

func TestServer_Cancel_TheLastWaiterWithdrawingCancelsTheBuildAndMailsNobody(t *testing.T) {
	ts, mb := startCancelServer(t)
	const ada, bob = "ada@example.org", "bob@example.net"
	id := ts.submit(ada, 5).GetBuild().GetId()
	ts.submit(ada, 5) // twice: one withdrawal takes back both
	ts.submit(bob, 5)
	ss := ts.connect("bs", nil)
	a := ss.assignment()

	b, err := ts.cancel(ada, id)
	if err != nil || b.GetState() != kilnv1.BuildState_BUILD_STATE_RUNNING || b.GetWaiters() != 1 {
		t.Fatalf("ada withdrawing: %v, %v with %d waiters; want running for bob", err, b.GetState(), b.GetWaiters())
	}
	b, err = ts.cancel(bob, id)
	if err != nil {
		t.Fatalf("bob withdrawing last: %v", err)
	}
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_CANCELLED || b.GetFailure() != withdrawnReason {
		t.Fatalf("after the last withdrawal: %v, failure %q; want cancelled, %q", b.GetState(), b.GetFailure(), withdrawnReason)
	}
	c := ss.next(5 * time.Second).GetCancel()
	if c == nil || c.GetAttemptId() != a.GetAttemptId() || c.GetReason() != withdrawnReason {
		t.Fatalf("build server got %v; want a cancel of attempt %d saying %q", c, a.GetAttemptId(), withdrawnReason)
	}
	to, finished := mb.recipients(id)
	if !finished || len(to) != 0 {
		t.Fatalf("finished %v, mail to %q; want a final build mailed to nobody", finished, to)
	}
	if b := ts.build(id); b.GetWaiters() != 0 || b.GetAttempts()[0].GetReason() != withdrawnReason {
		t.Fatalf("final build: %d waiters, attempt reason %q", b.GetWaiters(), b.GetAttempts()[0].GetReason())
	}
}

func TestServer_AdminCancel_MailsTheWaitersButNotThoseWhoWithdrew(t *testing.T) {
	ts, mb := startCancelServer(t)
	const ada, bob = "ada@example.org", "bob@example.net"
	id := ts.submit(ada, 6).GetBuild().GetId()
	ts.submit(bob, 6)
	if _, err := ts.cancel(bob, id); err != nil {
		t.Fatal(err)
	}
	b, err := ts.srv.AdminCancel(id, "")
	if err != nil || b.GetFailure() != defaultAdminCancelReason {
		t.Fatalf("AdminCancel: %v, failure %q", err, b.GetFailure())
	}
	if to, _ := mb.recipients(id); len(to) != 1 || to[0] != ada {
		t.Fatalf("mail went to %q; want ada only", to)
	}
}

func TestServer_GetBuild_ALegacyCancellationDoesNotShowItsAddress(t *testing.T) {
	legacy := queuedBuild(1, "hello", 60)
	legacy.Build.State = kilnv1.BuildState_BUILD_STATE_CANCELLED
	legacy.Build.Failure = "cancelled by old@example.org"
	legacy.Build.Attempts = []*kilnv1.Attempt{{Id: attemptID(1, 1), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_CANCELLED,
		Reason: "cancelled by old@example.org"}}
	ts := startTestServer(t, Config{}, legacy)
	listed := ts.listBuilds()
	if len(listed) != 1 {
		t.Fatalf("%d builds listed", len(listed))
	}
	for what, b := range map[string]*kilnv1.Build{"GetBuild": ts.build(1), "ListBuilds": listed[0]} {
		if b.GetFailure() != "cancelled by a requester" || b.GetAttempts()[0].GetReason() != "cancelled by a requester" {
			t.Errorf("%s: failure %q, attempt reason %q; want the address replaced", what, b.GetFailure(), b.GetAttempts()[0].GetReason())
		}
	}
}

func TestServer_Open_AWithdrawnRequestIsNoWaiterAfterARestart(t *testing.T) {
	ts := startSeededServer(t, Config{}, func(tx store.Tx) error {
		if err := tx.PutBuild(queuedBuild(1, "hello", 60)); err != nil {
			return err
		}
		for _, r := range []*store.Request{
			{Id: 1, BuildId: 1, Email: "ada@example.org", CreatedAt: timestamppb.Now()},
			{Id: 2, BuildId: 1, Email: "bob@example.net", CreatedAt: timestamppb.Now(), Notified: true, WithdrawnAt: timestamppb.Now()},
		} {
			if err := tx.PutRequest(r); err != nil {
				return err
			}
		}
		return nil
	})
	if b := ts.build(1); b.GetWaiters() != 1 {
		t.Fatalf("restored build has %d waiters; want 1 (bob withdrew)", b.GetWaiters())
	}
	b, err := ts.cancel("ada@example.org", 1)
	if err != nil || b.GetState() != kilnv1.BuildState_BUILD_STATE_CANCELLED || b.GetFailure() != withdrawnReason {
		t.Fatalf("ada withdrawing after the restart: %v, %v %q; want the build cancelled as she was its last waiter", err, b.GetState(), b.GetFailure())
	}
}

func TestServer_Cancel_IsLimitedPerAddressLikeSubmit(t *testing.T) {
	ts := startTestServer(t, Config{RequestsPerMinutePerAddress: 3}, queuedBuild(1, "hello", 60))
	for i := range 3 {
		// Within the limit a guess is refused for what it is.
		_, err := ts.cancel(fmt.Sprintf("guess%d@example.org", i), 1)
		expectCode(t, "a guessed address within the limit", err, codes.PermissionDenied)
	}
	_, err := ts.cancel("guess3@example.org", 1)
	expectCode(t, "a fourth guess from the same address", err, codes.ResourceExhausted)
}
