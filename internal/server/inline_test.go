package server

import (
	"io"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// welcome opens a session of name and returns its Welcome.
func (ts *testServer) welcome(name string) (*testSession, *kilnv1.Welcome) {
	ts.t.Helper()
	ss := ts.open(name, &kilnv1.Hello{Version: "test", Slots: 1, Targets: []*kilnv1.Target{{Id: "native", System: testSystem}}})
	w := ss.next(5 * time.Second).GetWelcome()
	if w == nil {
		ts.t.Fatalf("%s: the first message is not a Welcome", name)
	}
	return ss, w
}

// inlineResult is a SUCCEEDED result of attempt carrying data as its
// artifact, declared as declared.
func inlineResult(attempt uint64, declared, data []byte) *kilnv1.AttemptResult {
	return &kilnv1.AttemptResult{AttemptId: attempt, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED,
		Artifact:     &kilnv1.Artifact{Sha256: digest(declared), Size: uint64(len(declared)), Files: []string{"out"}},
		ArtifactData: data}
}

func TestWelcomeOffersInlineArtifactsUpToTheStoresInlineLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inline int64
		want   uint64
	}{
		{"the default store limit", 0, 256 << 10},
		{"a smaller store limit", 1000, 1000},
		{"a store limit beyond a quarter of the largest message", 8 << 20, MaxMessageBytes / 4},
		{"every artifact a file", -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startTestServer(t, Config{InlineArtifactBytes: tc.inline})
			_, w := ts.welcome("bs")
			if got := w.GetMaxInlineArtifactBytes(); got != tc.want {
				t.Fatalf("Welcome.max_inline_artifact_bytes = %d; want %d", got, tc.want)
			}
		})
	}
}

func TestAnArtifactSentWithItsResultIsStoredAndTheBuildSucceedsWithoutAnUpload(t *testing.T) {
	ts := startTestServer(t, Config{}, queuedBuild(1, "hello", 60))
	ss := ts.connect("bs", nil)
	attempt := ss.assignment().GetAttemptId()
	data := payload(5000, 3)

	ss.report(inlineResult(attempt, data, data))

	b := ts.build(1)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || b.GetArtifact().GetSha256() != digest(data) {
		t.Fatalf("build after an inline result: %v, artifact %v; want succeeded with %s", b.GetState(), b.GetArtifact(), digest(data))
	}
	r, size, err := ts.srv.blobs.open(t.Context(), digest(data))
	if err != nil {
		t.Fatalf("opening the inline artifact: %v", err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || size != int64(len(data)) || string(got) != string(data) {
		t.Fatalf("stored artifact: %d bytes (size %d), %v; want the %d bytes sent", len(got), size, err, len(data))
	}
	if ts.srv.blobs.pendingData(digest(data)) != nil {
		t.Fatal("the artifact is still held in memory after its result committed")
	}
	if a := b.GetAttempts(); len(a) != 1 || a[0].GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("attempts %v; want one succeeded", a)
	}
}

func TestAnInlineArtifactThatDoesNotMatchOrIsTooLargeEndsTheAttemptSetupFailedAndIsNotStored(t *testing.T) {
	const limit = 1024
	good := payload(limit, 1)
	for _, tc := range []struct {
		name           string
		declared, sent []byte
		reason         string
	}{
		{"other bytes than declared", good, payload(limit, 2), "does not match"},
		{"fewer bytes than declared", good, good[:limit-1], "does not match"},
		{"more bytes than Welcome allows", payload(limit+1, 1), payload(limit+1, 1), "more than the 1024 allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startTestServer(t, Config{InlineArtifactBytes: limit, MaxInfraAttempts: 1}, queuedBuild(1, "hello", 60))
			ss := ts.connect("bs", nil)
			attempt := ss.assignment().GetAttemptId()

			ss.report(inlineResult(attempt, tc.declared, tc.sent))

			b := ts.build(1)
			a := b.GetAttempts()
			if len(a) != 1 || a[0].GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED ||
				!strings.Contains(a[0].GetReason(), tc.reason) {
				t.Fatalf("attempts %v; want one SETUP_FAILED naming %q", a, tc.reason)
			}
			if b.GetState() == kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
				t.Fatal("the build succeeded")
			}
			ts.expectNotStored(digest(tc.declared))
			ts.expectNotStored(digest(tc.sent))
		})
	}
}

func TestAnInlineArtifactOfAnAttemptNotCurrentIsRefusedAndNotStored(t *testing.T) {
	ts := startTestServer(t, Config{}, queuedBuild(1, "hello", 60))
	holder := ts.connect("holder", nil)
	attempt := holder.assignment().GetAttemptId()
	other := ts.connect("other", nil)
	data := payload(100, 9)

	if err := other.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{Result: inlineResult(attempt, data, data)}}); err != nil {
		t.Fatal(err)
	}
	ack := other.next(5 * time.Second).GetResultAck()
	if ack == nil || ack.GetAccepted() {
		t.Fatalf("another server's result: ack %v; want refused", ack)
	}
	ts.expectNotStored(digest(data))
	if st := ts.build(1).GetState(); st != kilnv1.BuildState_BUILD_STATE_RUNNING {
		t.Fatalf("build %v; want still running with its holder", st)
	}
}
