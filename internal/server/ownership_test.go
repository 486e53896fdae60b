package server

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// resultAck sends r on ss's session and returns the ResultAck for it.
func (ss *testSession) resultAck(r *kilnv1.AttemptResult) *kilnv1.ResultAck {
	ss.t.Helper()
	if err := ss.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{Result: r}}); err != nil {
		ss.t.Fatal(err)
	}
	for {
		if ack := ss.next(5 * time.Second).GetResultAck(); ack != nil && ack.GetAttemptId() == r.GetAttemptId() {
			return ack
		}
	}
}

func TestAnUploadForAnotherBuildServersAttemptIsPermissionDeniedAndAStaleOneFailedPrecondition(t *testing.T) {
	ts := startTestServer(t, Config{}, queuedBuild(1, "hello", 60))
	holder := ts.connect("holder", nil)
	attempt := holder.assignment().GetAttemptId()
	intruder := ts.connect("intruder", nil)
	forged := payload(100, 3)

	for _, c := range []struct {
		name    string
		attempt uint64
		want    codes.Code
	}{
		{"another build server's current attempt is not the intruder's to speak for", attempt, codes.PermissionDenied},
		{"an attempt nobody was given is not current", attempt + 1000, codes.FailedPrecondition},
		{"an attempt of a build that does not exist is not current", 999 << 8, codes.FailedPrecondition},
	} {
		t.Run(c.name, func(t *testing.T) {
			expectCode(t, "intruder upload", intruder.upload(header(c.attempt, forged), forged), c.want)
			ts.expectNotStored(digest(forged))
		})
	}

	ack := intruder.resultAck(&kilnv1.AttemptResult{AttemptId: attempt, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "forged"})
	if ack.GetAccepted() || ack.GetReason() != "attempt belongs to another build server" {
		t.Fatalf("intruder's result for the holder's attempt: %v; want refused as another build server's", ack)
	}
	if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_RUNNING {
		t.Fatalf("after the intruder's result the build is %s; want still running", b.GetState())
	}

	// The holder ends its attempt; the attempt is no longer current, and
	// the build is no longer in memory, only in the store.
	holder.report(&kilnv1.AttemptResult{AttemptId: attempt, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "make exited with status 2"})
	if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED {
		t.Fatalf("build %s; want failed", b.GetState())
	}
	late := payload(120, 4)
	expectCode(t, "the holder's upload for its own ended attempt", holder.upload(header(attempt, late), late), codes.FailedPrecondition)
	expectCode(t, "the intruder's upload for the holder's ended attempt", intruder.upload(header(attempt, late), late), codes.PermissionDenied)
	ts.expectNotStored(digest(late))
	ack = holder.resultAck(&kilnv1.AttemptResult{AttemptId: attempt, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "again"})
	if ack.GetAccepted() || ack.GetReason() == "attempt belongs to another build server" {
		t.Fatalf("the holder's second result for its ended attempt: %v; want refused as not current", ack)
	}
}
