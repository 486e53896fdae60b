package server

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/auth"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func rep(server, operator, sha string) *kilnv1.Replica {
	r := &kilnv1.Replica{BuildServer: server, Operator: operator}
	if sha != "" {
		r.Artifact = &kilnv1.Artifact{Sha256: sha}
	}
	return r
}

func TestDecide(t *testing.T) {
	discounted := rep("c1", "opc", "bad")
	discounted.Discounted = "marked"
	for _, tc := range []struct {
		name     string
		reps     []*kilnv1.Replica
		quorum   int
		want     kilnv1.Verification
		leader   string
		agreeing []string
	}{
		{"one result is unverified under a quorum of 2", []*kilnv1.Replica{rep("a1", "opa", "x")}, 2,
			kilnv1.Verification_VERIFICATION_UNVERIFIED, "x", []string{"a1"}},
		{"one result is verified under a quorum of 1", []*kilnv1.Replica{rep("a1", "opa", "x")}, 1,
			kilnv1.Verification_VERIFICATION_VERIFIED, "x", []string{"a1"}},
		{"two servers of one operator never count twice", []*kilnv1.Replica{rep("a1", "opa", "x"), rep("a2", "opa", "x")}, 2,
			kilnv1.Verification_VERIFICATION_UNVERIFIED, "x", []string{"a1"}},
		{"two operators agreeing verify", []*kilnv1.Replica{rep("a1", "opa", "x"), rep("b1", "opb", "x")}, 2,
			kilnv1.Verification_VERIFICATION_VERIFIED, "x", []string{"a1", "b1"}},
		{"two operators differing dispute", []*kilnv1.Replica{rep("a1", "opa", "x"), rep("c1", "opc", "y")}, 2,
			kilnv1.Verification_VERIFICATION_DISPUTED, "x", []string{"a1"}},
		{"the majority of operators wins a dispute, whoever came first", []*kilnv1.Replica{rep("c1", "opc", "y"), rep("a1", "opa", "x"), rep("b1", "opb", "x")}, 2,
			kilnv1.Verification_VERIFICATION_VERIFIED, "x", []string{"a1", "b1"}},
		{"three different results at the cap are not reproducible", []*kilnv1.Replica{rep("a1", "opa", "x"), rep("b1", "opb", "y"), rep("c1", "opc", "z")}, 2,
			kilnv1.Verification_VERIFICATION_NOT_REPRODUCIBLE, "x", []string{"a1"}},
		{"a discounted result counts for nothing", []*kilnv1.Replica{discounted, rep("a1", "opa", "x")}, 2,
			kilnv1.Verification_VERIFICATION_UNVERIFIED, "x", []string{"a1"}},
		{"a failure agreed by a majority is verified as a failure", []*kilnv1.Replica{rep("a1", "opa", "x"), rep("b1", "opb", ""), rep("c1", "opc", "")}, 2,
			kilnv1.Verification_VERIFICATION_VERIFIED, "", []string{"b1", "c1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := decide(tc.reps, tc.quorum, tc.quorum+1)
			if v.state != tc.want || v.leader.GetSha256() != tc.leader || !slices.Equal(v.agreeing, tc.agreeing) {
				t.Fatalf("decide = %s, leader %q, agreeing %v; want %s, %q, %v", v.state.Word(), v.leader.GetSha256(), v.agreeing,
					tc.want.Word(), tc.leader, tc.agreeing)
			}
		})
	}
}

func TestReputationQuorumNeverVerifiesOneResult(t *testing.T) {
	inRow := func(n uint32) func(string) uint32 { return func(string) uint32 { return n } }
	for _, tc := range []struct {
		name     string
		quorum   int
		agreeing []string
		runs     uint32
		want     int
	}{
		{"a quorum of 3 needs 2 among long-agreeing servers", 3, []string{"a", "b"}, 50, 2},
		{"a quorum of 2 is never lowered", 2, []string{"a", "b"}, 1000, 2},
		{"one long-agreeing result alone lowers nothing", 3, []string{"a"}, 1000, 3},
		{"servers short of the run lower nothing", 3, []string{"a", "b"}, 9, 3},
		{"a quorum of 5 is lowered by one only", 5, []string{"a", "b"}, 1000, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := reputationQuorum(tc.quorum, tc.agreeing, inRow(tc.runs), 10); got != tc.want {
				t.Fatalf("reputationQuorum = %d, want %d", got, tc.want)
			}
		})
	}
}

// connectOf registers build server name of operator (created when new)
// and opens its session with the test target.
func (ts *testServer) connectOf(operator, name string) *testSession {
	ts.t.Helper()
	token, hash := auth.NewToken()
	err := ts.st.Update(func(tx store.Tx) error {
		if _, err := tx.Operator(operator); errors.Is(err, store.ErrNotFound) {
			if err := tx.CreateOperator(&store.Operator{Name: operator}); err != nil {
				return err
			}
		}
		return tx.CreateBuildServer(&store.BuildServer{Name: name, TokenHash: hash, CreatedAt: timestamppb.Now(), Operator: operator})
	})
	if err != nil {
		ts.t.Fatal(err)
	}
	ss := ts.dial(name, token, &kilnv1.Hello{Version: "test", Slots: 1, Targets: []*kilnv1.Target{{Id: "native", System: testSystem}}})
	if ss.next(5*time.Second).GetWelcome() == nil {
		ts.t.Fatalf("%s: the first message is not a Welcome", name)
	}
	return ss
}

// waitBuild polls build id until ok holds, for at most 5s.
func (ts *testServer) waitBuild(id uint64, what string, ok func(*kilnv1.Build) bool) *kilnv1.Build {
	ts.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b := ts.build(id)
		if ok(b) {
			return b
		}
		if time.Now().After(deadline) {
			ts.t.Fatalf("build %d: %s not reached; last %v", id, what, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runOn gives the next assignment of ss the artifact data as its result.
func runOn(ss *testSession, data []byte) {
	ss.t.Helper()
	ss.report(inlineResult(ss.assignment().GetAttemptId(), data, data))
}

// downloadErr downloads build id's artifact and returns its bytes or the error.
func (ts *testServer) download(id uint64, accept bool) ([]byte, error) {
	stream, err := kilnv1.NewCompileServiceClient(ts.conn).DownloadArtifact(context.Background(),
		&kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_BuildId{BuildId: id}, AcceptUnverified: accept})
	if err != nil {
		return nil, err
	}
	var out []byte
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m.GetData()...)
	}
}

func TestQuorum_TwoOperatorsAgree_TheBuildIsVerifiedAndNoOperatorCountsTwice(t *testing.T) {
	ts := startTestServer(t, Config{Quorum: 2}, queuedBuild(1, "hello", 60))
	honest := tarGz(t, file{"bin/hello", []byte("hello, world\n")})
	a1 := ts.connectOf("alice", "a1")
	runOn(a1, honest)

	b := ts.waitBuild(1, "unverified and queued for a replica", func(b *kilnv1.Build) bool {
		return b.GetVerification() == kilnv1.Verification_VERIFICATION_UNVERIFIED && b.GetState() == kilnv1.BuildState_BUILD_STATE_QUEUED
	})
	if !slices.Contains(b.GetWaitingReasons(), "verification: 1 of 2 operators have a matching target") {
		t.Fatalf("waiting reasons %q do not say why the build waits", b.GetWaitingReasons())
	}
	if _, err := ts.download(1, false); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("default download of an unverified artifact: %v, want FAILED_PRECONDITION", err)
	}
	if got, err := ts.download(1, true); err != nil || string(got) != string(honest) {
		t.Fatalf("download with accept_unverified: %d bytes, %v", len(got), err)
	}
	admin := &Admin{Store: ts.st, DataDir: t.TempDir()}
	if _, err := admin.Pin(context.Background(), &kilnv1.PinRequest{Name: "early", BuildId: 1}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("pinning an unverified build: %v, want FAILED_PRECONDITION", err)
	}

	// A second credential of the same operator must not be its replica.
	a2 := ts.connectOf("alice", "a2")
	select {
	case msg := <-a2.msgs:
		if msg.GetAssignment() != nil {
			t.Fatalf("a second build server of the operator that built it got the replica: %v", msg)
		}
	case <-time.After(300 * time.Millisecond):
	}
	b1 := ts.connectOf("bob", "b1")
	runOn(b1, honest)
	b = ts.waitBuild(1, "verified", func(b *kilnv1.Build) bool { return b.GetState().Final() })
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || b.GetVerification() != kilnv1.Verification_VERIFICATION_VERIFIED ||
		!slices.Equal(b.GetAgreeingBuildServers(), []string{"a1", "b1"}) || b.GetArtifact().GetSha256() != digest(honest) {
		t.Fatalf("build after two operators agreed: %s %s agreeing %v sha %s", b.GetState().Word(), b.GetVerification().Word(),
			b.GetAgreeingBuildServers(), b.GetArtifact().GetSha256())
	}
	if got, err := ts.download(1, false); err != nil || string(got) != string(honest) {
		t.Fatalf("default download of the verified artifact: %d bytes, %v", len(got), err)
	}
	if _, err := admin.Pin(context.Background(), &kilnv1.PinRequest{Name: "release", BuildId: 1}); err != nil {
		t.Fatalf("pinning the verified build: %v", err)
	}
	// Revoking one of the two that agreed withdraws nothing: the other
	// produced the same bytes.
	resp, err := admin.RevokeBuildServer(context.Background(), &kilnv1.RevokeBuildServerRequest{Name: "a1", Purge: true})
	if err != nil || len(resp.GetWithdrawn()) != 0 || len(resp.GetKept()) != 1 || !slices.Equal(resp.GetKept()[0].GetAlsoBuiltBy(), []string{"b1"}) {
		t.Fatalf("purging a1: %v, %v; want build 1 kept, also built by b1", resp, err)
	}
}

func TestDispute_TheMajorityOfOperatorsWinsAndTheCheaterIsMarked(t *testing.T) {
	ts := startTestServer(t, Config{Quorum: 2}, queuedBuild(1, "hello", 60))
	honest := tarGz(t, file{"bin/hello", []byte("hello, world\n")}, file{"share/doc", []byte("same")})
	tampered := tarGz(t, file{"bin/hello", []byte("hellp, world\n")}, file{"share/doc", []byte("same")})
	cheat := ts.connectOf("mallory", "cheat")
	runOn(cheat, tampered)
	ts.waitBuild(1, "unverified", func(b *kilnv1.Build) bool { return b.GetState() == kilnv1.BuildState_BUILD_STATE_QUEUED })
	cheat.stream.CloseSend() // it takes no replica of its own build anyway

	a1 := ts.connectOf("alice", "a1")
	runOn(a1, honest)
	b := ts.waitBuild(1, "disputed", func(b *kilnv1.Build) bool {
		return b.GetVerification() == kilnv1.Verification_VERIFICATION_DISPUTED
	})
	if !slices.Equal(b.GetDifferingFiles(), []string{"bin/hello"}) {
		t.Fatalf("differing files %q, want [bin/hello]", b.GetDifferingFiles())
	}
	if _, err := ts.download(1, false); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("default download of a disputed artifact: %v, want FAILED_PRECONDITION", err)
	}
	b1 := ts.connectOf("bob", "b1")
	runOn(b1, honest)
	b = ts.waitBuild(1, "final", func(b *kilnv1.Build) bool { return b.GetState().Final() })
	if b.GetVerification() != kilnv1.Verification_VERIFICATION_VERIFIED || b.GetArtifact().GetSha256() != digest(honest) ||
		!slices.Equal(b.GetAgreeingBuildServers(), []string{"a1", "b1"}) {
		t.Fatalf("build after the dispute: %s sha %s agreeing %v", b.GetVerification().Word(), b.GetArtifact().GetSha256(), b.GetAgreeingBuildServers())
	}
	if d := b.GetReplicas()[0].GetDiscounted(); !strings.Contains(d, "lost the dispute") {
		t.Fatalf("the cheater's result is not discounted: %q", d)
	}
	if got, err := ts.download(1, false); err != nil || string(got) != string(honest) {
		t.Fatalf("default download after the dispute: %d bytes, %v; want the honest artifact", len(got), err)
	}
	list, err := ts.srv.ListBuildServers(context.Background(), &kilnv1.ListBuildServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, bs := range list.GetBuildServers() {
		marked := bs.GetMarked() != ""
		if marked != (bs.GetName() == "cheat") {
			t.Errorf("%s (operator %s): marked %q", bs.GetName(), bs.GetOperator(), bs.GetMarked())
		}
		if bs.GetName() == "a1" && bs.GetAgreeingInRow()[identityText(testSystem)] != 1 {
			t.Errorf("a1 agreeing in a row: %v, want 1 on %s", bs.GetAgreeingInRow(), identityText(testSystem))
		}
	}
}

func TestDispute_ResultsThatNeverConvergeEndNotReproducibleWithTheDifferingFiles(t *testing.T) {
	settled := make(chan *kilnv1.Build, 4)
	ts := startTestServer(t, Config{Quorum: 2, OnSettled: func(b *kilnv1.Build) { settled <- b }}, queuedBuild(1, "clock", 60))
	for i, name := range []string{"a1", "b1", "c1"} {
		ss := ts.connectOf("op-"+name, name)
		runOn(ss, tarGz(t, file{"bin/tool", []byte("same")}, file{"share/stamp", []byte(strings.Repeat("t", i+1))}))
		ss.stream.CloseSend()
	}
	b := ts.waitBuild(1, "final", func(b *kilnv1.Build) bool { return b.GetState().Final() })
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED || b.GetVerification() != kilnv1.Verification_VERIFICATION_NOT_REPRODUCIBLE {
		t.Fatalf("build: %s %s, want failed not_reproducible", b.GetState().Word(), b.GetVerification().Word())
	}
	if !slices.Equal(b.GetDifferingFiles(), []string{"share/stamp"}) || !strings.Contains(b.GetFailure(), "share/stamp") {
		t.Fatalf("differing files %q, failure %q; want share/stamp named", b.GetDifferingFiles(), b.GetFailure())
	}
	// The settled event fired once, with the final verification.
	if len(settled) != 1 {
		t.Fatalf("OnSettled called %d times, want once", len(settled))
	}
	if e := <-settled; e.GetId() != 1 || e.GetVerification() != kilnv1.Verification_VERIFICATION_NOT_REPRODUCIBLE {
		t.Fatalf("OnSettled got build %d %s", e.GetId(), e.GetVerification().Word())
	}
	// Nobody is marked: a build that never converges is the project's fault.
	list, err := ts.srv.ListBuildServers(context.Background(), &kilnv1.ListBuildServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, bs := range list.GetBuildServers() {
		if bs.GetMarked() != "" {
			t.Errorf("%s marked for a not-reproducible build: %q", bs.GetName(), bs.GetMarked())
		}
	}
	// Every result's artifact is kept with the cache entry.
	err = ts.st.View(func(tx store.Tx) error {
		e, err := tx.Artifact(b.GetCacheKey())
		if err != nil {
			return err
		}
		if e.GetVerification() != kilnv1.Verification_VERIFICATION_NOT_REPRODUCIBLE || len(e.GetKeptSha256()) != 2 {
			t.Errorf("cache entry: %s, kept %v; want not_reproducible keeping 2 more", e.GetVerification().Word(), e.GetKeptSha256())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAdmin_Operators_BadNamesAndUnknownOperatorsChangeNothing(t *testing.T) {
	ts := startTestServer(t, Config{})
	admin := &Admin{Store: ts.st, DataDir: t.TempDir()}
	ctx := context.Background()
	for _, bad := range []string{"", "Has Space", "server:x", strings.Repeat("a", 65), "../etc"} {
		if _, err := admin.AddOperator(ctx, &kilnv1.AddOperatorRequest{Name: bad}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("AddOperator(%q): %v, want INVALID_ARGUMENT", bad, err)
		}
	}
	if _, err := admin.AddOperator(ctx, &kilnv1.AddOperatorRequest{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddOperator(ctx, &kilnv1.AddOperatorRequest{Name: "acme"}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("AddOperator twice: %v, want ALREADY_EXISTS", err)
	}
	if _, err := admin.AddBuildServer(ctx, &kilnv1.AddBuildServerRequest{Name: "b1", Operator: "nobody"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("AddBuildServer of an unknown operator: %v, want FAILED_PRECONDITION", err)
	}
	if _, err := admin.CreateEnrollToken(ctx, &kilnv1.CreateEnrollTokenRequest{Operator: "Bad Name"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("CreateEnrollToken of a bad operator: %v, want INVALID_ARGUMENT", err)
	}
	err := ts.st.View(func(tx store.Tx) error {
		ops, err := tx.Operators()
		if err != nil || len(ops) != 1 || ops[0].GetName() != "acme" {
			t.Errorf("operators after the refusals: %v, %v; want [acme]", ops, err)
		}
		if _, err := tx.BuildServer("b1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a refused build server was stored: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddBuildServer(ctx, &kilnv1.AddBuildServerRequest{Name: "b1", Operator: "acme"}); err != nil {
		t.Fatalf("AddBuildServer of acme: %v", err)
	}
	tok, err := admin.CreateEnrollToken(ctx, &kilnv1.CreateEnrollTokenRequest{Operator: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&Enroller{Store: ts.st}).Enroll(ctx, &kilnv1.EnrollRequest{Name: "b2", EnrollToken: tok.GetToken()}); err != nil {
		t.Fatal(err)
	}
	err = ts.st.View(func(tx store.Tx) error {
		for _, name := range []string{"b1", "b2"} {
			rec, err := tx.BuildServer(name)
			if err != nil || rec.GetOperator() != "acme" {
				t.Errorf("%s: operator %q, %v; want acme", name, rec.GetOperator(), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestQuorum_AnUnverifiedBuildKeepsWaitingForAnotherOperatorAcrossARestart(t *testing.T) {
	honest := tarGz(t, file{"bin/hello", []byte("hello, world\n")})
	rec := queuedBuild(1, "hello", 60)
	b := rec.GetBuild()
	b.Platform, b.Quorum = testSystem, 2
	b.Verification = kilnv1.Verification_VERIFICATION_UNVERIFIED
	b.Artifact = &kilnv1.Artifact{Sha256: digest(honest), Size: uint64(len(honest))}
	b.Replicas = []*kilnv1.Replica{{AttemptId: attemptID(1, 1), BuildServer: "a1", Operator: "alice", Artifact: b.Artifact}}
	b.Attempts = []*kilnv1.Attempt{{Id: attemptID(1, 1), BuildServer: "a1", Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED}}
	ts := startTestServer(t, Config{Quorum: 2}, rec)

	a2 := ts.connectOf("alice", "a2")
	select {
	case msg := <-a2.msgs:
		if msg.GetAssignment() != nil {
			t.Fatalf("after a restart, the operator that built it got the replica: %v", msg)
		}
	case <-time.After(300 * time.Millisecond):
	}
	runOn(ts.connectOf("bob", "b1"), honest)
	got := ts.waitBuild(1, "verified", func(b *kilnv1.Build) bool { return b.GetState().Final() })
	if got.GetVerification() != kilnv1.Verification_VERIFICATION_VERIFIED || !slices.Equal(got.GetAgreeingBuildServers(), []string{"a1", "b1"}) {
		t.Fatalf("build: %s agreeing %v, want verified by a1 and b1", got.GetVerification().Word(), got.GetAgreeingBuildServers())
	}
}

func TestAnswers_ACacheEntryAnswersByVerificationAndPolicy(t *testing.T) {
	art := &kilnv1.Artifact{Sha256: "ab"}
	for _, tc := range []struct {
		name    string
		entry   kilnv1.Verification
		state   kilnv1.BuildState
		accept  bool
		answers bool
	}{
		{"verified answers a default request", kilnv1.Verification_VERIFICATION_VERIFIED, kilnv1.BuildState_BUILD_STATE_SUCCEEDED, false, true},
		{"unverified does not answer a default request", kilnv1.Verification_VERIFICATION_UNVERIFIED, kilnv1.BuildState_BUILD_STATE_QUEUED, false, false},
		{"unverified answers a request accepting it", kilnv1.Verification_VERIFICATION_UNVERIFIED, kilnv1.BuildState_BUILD_STATE_RUNNING, true, true},
		{"disputed answers a request accepting it", kilnv1.Verification_VERIFICATION_DISPUTED, kilnv1.BuildState_BUILD_STATE_QUEUED, true, true},
		{"an unverified build that was cancelled answers nobody", kilnv1.Verification_VERIFICATION_UNVERIFIED, kilnv1.BuildState_BUILD_STATE_CANCELLED, true, false},
		{"not reproducible answers nobody", kilnv1.Verification_VERIFICATION_NOT_REPRODUCIBLE, kilnv1.BuildState_BUILD_STATE_FAILED, true, false},
		{"an entry from before verification does not answer a default request", kilnv1.Verification_VERIFICATION_UNSPECIFIED, kilnv1.BuildState_BUILD_STATE_SUCCEEDED, false, false},
		{"an entry from before verification answers a request accepting unverified", kilnv1.Verification_VERIFICATION_UNSPECIFIED, kilnv1.BuildState_BUILD_STATE_SUCCEEDED, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &kilnv1.Build{State: tc.state, Verification: tc.entry, Artifact: art}
			if got := answers(&store.Artifact{Verification: tc.entry}, b, tc.accept); got != tc.answers {
				t.Fatalf("answers = %v, want %v", got, tc.answers)
			}
		})
	}
}

func TestDispute_AMarkedServersOtherResultsAreCheckedAgain(t *testing.T) {
	// Build 1 gets the cheater's result first and waits; build 2 is
	// settled against it, which marks the cheater: its result of build 1
	// stops counting, and build 1 needs two other operators.
	ts := startTestServer(t, Config{Quorum: 2}, queuedBuild(1, "one", 60), queuedBuild(2, "two", 60))
	honest := func(id int) []byte { return tarGz(t, file{"bin/out", []byte{byte('0' + id)}}) }
	tampered := func(id int) []byte { return tarGz(t, file{"bin/out", []byte{byte('0' + id), '!'}}) }
	cheat := ts.connectOf("mallory", "cheat")
	for range 2 {
		a := cheat.assignment()
		data := tampered(int(a.GetBuildId()))
		cheat.report(inlineResult(a.GetAttemptId(), data, data))
	}
	cheat.stream.CloseSend()
	for _, id := range []uint64{1, 2} {
		ts.waitBuild(id, "unverified", func(b *kilnv1.Build) bool {
			return len(b.GetReplicas()) == 1 && b.GetState() == kilnv1.BuildState_BUILD_STATE_QUEUED
		})
	}
	// alice and bob settle build 1 against the cheater (2 of 3).
	for _, name := range []string{"alice", "bob"} {
		ss := ts.connectOf(name, name+"-1")
		a := ss.assignment()
		data := honest(int(a.GetBuildId()))
		ss.report(inlineResult(a.GetAttemptId(), data, data))
		ss.stream.CloseSend()
	}
	settled, other := uint64(0), uint64(0)
	farmDeadline := time.Now().Add(5 * time.Second)
	for settled == 0 && time.Now().Before(farmDeadline) {
		for _, id := range []uint64{1, 2} {
			if ts.build(id).GetState().Final() {
				settled, other = id, 3-id
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if settled == 0 {
		t.Fatalf("no build settled: %v / %v", ts.build(1), ts.build(2))
	}
	b := ts.waitBuild(other, "re-checked", func(b *kilnv1.Build) bool {
		return strings.HasPrefix(b.GetReplicas()[0].GetDiscounted(), "checked again")
	})
	if b.GetState().Final() || b.GetVerification() == kilnv1.Verification_VERIFICATION_VERIFIED {
		t.Fatalf("build %d after its only counted result was discounted: %s %s", other, b.GetState().Word(), b.GetVerification().Word())
	}
}

// A result drawn from a warm compiler cache can be the project's own doing
// (an earlier build of it on that volunteer may plant cache entries): when
// it loses a dispute it is discounted, and its build server is not marked.
func TestDispute_ALoserServedByItsCompilerCacheIsNotMarked(t *testing.T) {
	ts := startTestServer(t, Config{Quorum: 2}, queuedBuild(1, "hello", 60))
	honest := tarGz(t, file{"bin/hello", []byte("hello, world\n")})
	poisoned := tarGz(t, file{"bin/hello", []byte("hellp, world\n")})
	warm := ts.connectOf("carol", "warm")
	r := inlineResult(warm.assignment().GetAttemptId(), poisoned, poisoned)
	r.CompilerCache = &kilnv1.CompilerCacheStats{Hits: 7, Misses: 1}
	warm.report(r)
	ts.waitBuild(1, "unverified", func(b *kilnv1.Build) bool { return b.GetState() == kilnv1.BuildState_BUILD_STATE_QUEUED })
	warm.stream.CloseSend()
	runOn(ts.connectOf("alice", "a1"), honest)
	ts.waitBuild(1, "disputed", func(b *kilnv1.Build) bool {
		return b.GetVerification() == kilnv1.Verification_VERIFICATION_DISPUTED
	})
	runOn(ts.connectOf("bob", "b1"), honest)
	b := ts.waitBuild(1, "final", func(b *kilnv1.Build) bool { return b.GetState().Final() })
	if b.GetVerification() != kilnv1.Verification_VERIFICATION_VERIFIED || b.GetArtifact().GetSha256() != digest(honest) {
		t.Fatalf("build after the dispute: %s sha %s", b.GetVerification().Word(), b.GetArtifact().GetSha256())
	}
	if d := b.GetReplicas()[0].GetDiscounted(); !strings.Contains(d, "lost the dispute") || !strings.Contains(d, "compiler cache served 7") {
		t.Fatalf("the cache-served loser's result: discounted %q", d)
	}
	list, err := ts.srv.ListBuildServers(context.Background(), &kilnv1.ListBuildServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, bs := range list.GetBuildServers() {
		if bs.GetMarked() != "" {
			t.Errorf("%s is marked (%q); a loss served by the compiler cache marks nobody", bs.GetName(), bs.GetMarked())
		}
	}
}
