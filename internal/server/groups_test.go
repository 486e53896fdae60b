package server

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// groupBox is a mailbox that also records request groups' summaries.
type groupBox struct {
	*mailbox
	gmu    sync.Mutex
	groups map[string][][]uint64 // group id -> the build ids of each summary
}

func newGroupBox() *groupBox {
	return &groupBox{mailbox: newMailbox(), groups: map[string][][]uint64{}}
}

// GroupFinished implements GroupHook.
func (g *groupBox) GroupFinished(_ store.Tx, grp *store.RequestGroup, builds []*kilnv1.Build) error {
	g.gmu.Lock()
	defer g.gmu.Unlock()
	var ids []uint64
	for _, b := range builds {
		if !b.GetState().Final() {
			panic("a summary of a build not final")
		}
		ids = append(ids, b.GetId())
	}
	g.groups[grp.GetId()] = append(g.groups[grp.GetId()], ids)
	return nil
}

func (g *groupBox) summaries(id string) [][]uint64 {
	g.gmu.Lock()
	defer g.gmu.Unlock()
	return append([][]uint64(nil), g.groups[id]...)
}

const (
	groupA = "groupAAAAAAAAAAAAAAAAA"
	ada    = "ada@example.org"
	eve    = "eve@example.net"
)

func startGroupServer(t *testing.T) (*testServer, *groupBox) {
	t.Helper()
	dir, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	gb := newGroupBox()
	ts := startTestServer(t, Config{Notifier: gb, RequestsPerMinute: -1, RequestsPerMinutePerAddress: -1})
	ts.addProject("hello", "file://"+dir)
	return ts, gb
}

func (ts *testServer) submitIn(email, group string, mail kilnv1.MailMode, level string) (*kilnv1.SubmitResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return kilnv1.NewCompileServiceClient(ts.conn).Submit(ctx, &kilnv1.SubmitRequest{
		Project: "hello", Revision: "main", Email: email, Options: map[string]string{"level": level}, Group: group, Mail: mail})
}

func (ts *testServer) seal(email, group string) (*kilnv1.SealGroupResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return kilnv1.NewCompileServiceClient(ts.conn).SealGroup(ctx, &kilnv1.SealGroupRequest{Group: group, Email: email})
}

func (ts *testServer) adminCancel(id uint64) {
	ts.t.Helper()
	admin := &Admin{Store: ts.st, Cancel: ts.srv.AdminCancel}
	if _, err := admin.CancelBuild(context.Background(), &kilnv1.CancelBuildRequest{BuildId: id, Reason: "test"}); err != nil {
		ts.t.Fatal(err)
	}
}

// waitSummaries polls until group has n summaries or fails at the deadline.
func waitSummaries(t *testing.T, gb *groupBox, group string, n int) [][]uint64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := gb.summaries(group)
		if len(s) >= n {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s: %d summaries, want %d", group, len(s), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServer_SealGroup_OneSummaryWhenTheLastBuildEnds(t *testing.T) {
	ts, gb := startGroupServer(t)
	r1, err := ts.submitIn(ada, groupA, kilnv1.MailMode_MAIL_MODE_UNSPECIFIED, "1")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := ts.submitIn(ada, groupA, kilnv1.MailMode_MAIL_MODE_SUMMARY, "2")
	if err != nil {
		t.Fatal(err)
	}
	b1, b2 := r1.GetBuild().GetId(), r2.GetBuild().GetId()
	if resp, err := ts.seal(ada, groupA); err != nil || resp.GetRequests() != 2 {
		t.Fatalf("seal: %v %v", resp, err)
	}
	if resp, err := ts.seal(ada, groupA); err != nil || resp.GetRequests() != 2 {
		t.Fatalf("a second seal: %v %v; want the same answer", resp, err)
	}
	ts.adminCancel(b1)
	if to, ok := ts.waitRecipients(b1); !ok || len(to) != 0 {
		t.Fatalf("build %d mailed %v on its own; a summary request waits for its group", b1, to)
	}
	if s := gb.summaries(groupA); len(s) != 0 {
		t.Fatalf("summary %v before the last build ended", s)
	}
	ts.adminCancel(b2)
	s := waitSummaries(t, gb, groupA, 1)
	if len(s) != 1 || len(s[0]) != 2 || s[0][0] != b1 || s[0][1] != b2 {
		t.Fatalf("summaries %v, want one listing builds %d and %d", s, b1, b2)
	}
	// A sealed group takes no more requests.
	_, err = ts.submitIn(ada, groupA, kilnv1.MailMode_MAIL_MODE_SUMMARY, "3")
	expectCode(t, "joining a sealed group", err, codes.FailedPrecondition)
}

// waitRecipients polls until build id finished in the mailbox.
func (ts *testServer) waitRecipients(id uint64) ([]string, bool) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if gb, ok := ts.srv.cfg.Notifier.(*groupBox); ok {
			if to, done := gb.recipients(id); done {
				return to, true
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil, false
}

func TestServer_Submit_NobodyJoinsAnothersGroup(t *testing.T) {
	ts, gb := startGroupServer(t)
	if _, err := ts.submitIn(ada, groupA, kilnv1.MailMode_MAIL_MODE_SUMMARY, "1"); err != nil {
		t.Fatal(err)
	}
	before := groupRecord(t, ts, groupA)
	_, err := ts.submitIn(eve, groupA, kilnv1.MailMode_MAIL_MODE_SUMMARY, "2")
	expectCode(t, "eve joining ada's group", err, codes.PermissionDenied)
	_, err = ts.seal(eve, groupA)
	expectCode(t, "eve sealing ada's group", err, codes.PermissionDenied)
	_, err = ts.submitIn(ada, groupA, kilnv1.MailMode_MAIL_MODE_EACH, "2")
	expectCode(t, "ada joining with another mail mode", err, codes.InvalidArgument)
	if after := groupRecord(t, ts, groupA); !proto.Equal(before, after) {
		t.Fatalf("refused requests changed the group: %v, was %v", after, before)
	}
	var n int
	_ = ts.st.View(func(tx store.Tx) error {
		for id := uint64(1); id < 10; id++ {
			if _, err := tx.Request(id); err == nil {
				n++
			}
		}
		return nil
	})
	if n != 1 {
		t.Fatalf("%d requests stored, want ada's one", n)
	}
	for _, tt := range []struct {
		group string
		mail  kilnv1.MailMode
		what  string
	}{
		{"", kilnv1.MailMode_MAIL_MODE_SUMMARY, "a summary without a group"},
		{"short", kilnv1.MailMode_MAIL_MODE_SUMMARY, "a group id too short to be unguessable"},
		{groupA + "<script>", kilnv1.MailMode_MAIL_MODE_SUMMARY, "a group id with markup"},
		{groupA, kilnv1.MailMode(42), "an unknown mail mode"},
	} {
		_, err := ts.submitIn(ada, tt.group, tt.mail, "1")
		expectCode(t, tt.what, err, codes.InvalidArgument)
	}
	_, err = ts.seal(ada, "nosuchgroupXXXXXXXXXX")
	expectCode(t, "sealing an unknown group", err, codes.NotFound)
	if s := gb.summaries(groupA); len(s) != 0 {
		t.Fatalf("summaries %v", s)
	}
}

func groupRecord(t *testing.T, ts *testServer, id string) *store.RequestGroup {
	t.Helper()
	var g *store.RequestGroup
	if err := ts.st.View(func(tx store.Tx) error { var err error; g, err = tx.RequestGroup(id); return err }); err != nil {
		t.Fatal(err)
	}
	return g
}

func TestServer_Open_AGroupSealedBeforeARestartIsSummedUpAfterIt(t *testing.T) {
	// The store as a metaserver left it: ada's group of two requests, one
	// answered from the cache (build 2), one waiting on queued build 1,
	// sealed; then the process stopped.
	gb := newGroupBox()
	ts := startSeededServer(t, Config{Notifier: gb}, func(tx store.Tx) error {
		done := queuedBuild(2, "hello", 60)
		done.GetBuild().State = kilnv1.BuildState_BUILD_STATE_SUCCEEDED
		done.GetBuild().FinishedAt = timestamppb.Now()
		for _, b := range []*store.Build{queuedBuild(1, "hello", 60), done} {
			if err := tx.PutBuild(b); err != nil {
				return err
			}
		}
		for _, r := range []*store.Request{
			{Id: 1, BuildId: 1, Email: ada, Group: groupA, Mail: kilnv1.MailMode_MAIL_MODE_SUMMARY, CreatedAt: timestamppb.Now()},
			{Id: 2, BuildId: 2, Email: ada, Group: groupA, Mail: kilnv1.MailMode_MAIL_MODE_SUMMARY, CreatedAt: timestamppb.Now(), Cached: true, Notified: true},
		} {
			if err := tx.PutRequest(r); err != nil {
				return err
			}
		}
		return tx.PutRequestGroup(&store.RequestGroup{Id: groupA, Email: ada, Mail: kilnv1.MailMode_MAIL_MODE_SUMMARY,
			RequestIds: []uint64{1, 2}, Sealed: true, CreatedAt: timestamppb.Now()})
	})
	ts.adminCancel(1)
	s := waitSummaries(t, gb, groupA, 1)
	if len(s[0]) != 2 || s[0][0] != 1 || s[0][1] != 2 {
		t.Fatalf("summary lists %v, want builds 1 and 2", s[0])
	}
	if g := groupRecord(t, ts, groupA); g.GetDoneAt() == nil {
		t.Fatal("the group is not marked done with its summary")
	}
}

func TestServer_SweepGroups_SealsAForgottenGroupAndSumsItUp(t *testing.T) {
	gb := newGroupBox()
	cfg := withFakeClock(Config{Notifier: gb, SampleInterval: time.Minute})
	start := cfg.Clock.Now()
	old := timestamppb.New(start.Add(-2 * time.Hour))
	ts := startSeededServer(t, cfg, func(tx store.Tx) error {
		done := queuedBuild(1, "hello", 60)
		done.GetBuild().State = kilnv1.BuildState_BUILD_STATE_FAILED
		if err := tx.PutBuild(done); err != nil {
			return err
		}
		if err := tx.PutRequest(&store.Request{Id: 1, BuildId: 1, Email: ada, Group: groupA, Mail: kilnv1.MailMode_MAIL_MODE_SUMMARY, Notified: true, CreatedAt: old}); err != nil {
			return err
		}
		// Its client died before sealing it, two hours ago; a younger
		// unsealed group is left alone.
		if err := tx.PutRequestGroup(&store.RequestGroup{Id: groupA, Email: ada, Mail: kilnv1.MailMode_MAIL_MODE_SUMMARY, RequestIds: []uint64{1}, CreatedAt: old}); err != nil {
			return err
		}
		// A group done eight days ago is deleted.
		if err := tx.PutRequestGroup(&store.RequestGroup{Id: "doneCCCCCCCCCCCCCCCCC", Email: ada, Mail: kilnv1.MailMode_MAIL_MODE_SUMMARY,
			RequestIds: []uint64{1}, Sealed: true, CreatedAt: old, DoneAt: timestamppb.New(start.Add(-8 * 24 * time.Hour))}); err != nil {
			return err
		}
		return tx.PutRequestGroup(&store.RequestGroup{Id: "youngBBBBBBBBBBBBBBBB", Email: ada, Mail: kilnv1.MailMode_MAIL_MODE_SUMMARY, RequestIds: []uint64{1}, CreatedAt: timestamppb.New(start)})
	})
	ts.sampleAt(time.Minute) // the first sweep
	s := waitSummaries(t, gb, groupA, 1)
	if len(s[0]) != 1 || s[0][0] != 1 {
		t.Fatalf("summary %v", s)
	}
	for range 5 {
		ts.sampleAt(time.Minute) // five more sweeps
	}
	if s := gb.summaries(groupA); len(s) != 1 {
		t.Fatalf("%d summaries after more sweeps, want exactly one", len(s))
	}
	// The young group is sealed by the first sweep after it is an hour
	// old, not at the hour itself.
	ts.sampleAt(groupSealAfter - 6*time.Minute)
	if g := groupRecord(t, ts, "youngBBBBBBBBBBBBBBBB"); g.GetSealed() {
		t.Fatal("a group just an hour old was sealed")
	}
	ts.sampleAt(time.Minute)
	if g := groupRecord(t, ts, "youngBBBBBBBBBBBBBBBB"); !g.GetSealed() {
		t.Fatal("a group an hour and a minute old was not sealed by the sweep")
	}
	if err := ts.st.View(func(tx store.Tx) error { _, err := tx.RequestGroup("doneCCCCCCCCCCCCCCCCC"); return err }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a group done eight days ago: %v, want deleted", err)
	}
	if g := groupRecord(t, ts, groupA); g.GetDoneAt() == nil {
		t.Fatal("the group just summed up is not kept as done")
	}
}
