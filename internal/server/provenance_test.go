package server

import (
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/provenance"
	"github.com/kilnbuild/kiln/internal/translog"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// refusal sends r and returns the reason of its refusal, failing when it
// is accepted.
func (ss *testSession) refusal(r *kilnv1.AttemptResult) string {
	ss.t.Helper()
	if err := ss.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{Result: r}}); err != nil {
		ss.t.Fatal(err)
	}
	for {
		msg := ss.next(5 * time.Second)
		if ack := msg.GetResultAck(); ack != nil && ack.GetAttemptId() == r.GetAttemptId() {
			if ack.GetAccepted() {
				ss.t.Fatalf("%s: result of attempt %d accepted, want refused", ss.name, r.GetAttemptId())
			}
			return ack.GetReason()
		}
	}
}

func TestProvenance_SuccessIsLoggedWithStatementAndSummary(t *testing.T) {
	ts := startTestServer(t, Config{}, queuedBuild(1, "hello", 60))
	ss := ts.connect("bs", nil)
	attempt := ss.assignment().GetAttemptId()
	data := payload(3000, 1)
	ss.report(inlineResult(attempt, data, data))

	refs := ts.build(1).GetProvenance()
	if len(refs) != 2 || refs[0].GetKind() != provenance.KindStatement || refs[1].GetKind() != provenance.KindSummary ||
		refs[0].GetSigner() != "bs" || refs[0].GetAttemptId() != attempt {
		t.Fatalf("provenance refs %v, want bs's statement then the summary", refs)
	}
	resp, err := kilnv1.NewCompileServiceClient(ts.conn).GetProvenance(t.Context(), &kilnv1.GetProvenanceRequest{BuildId: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := resp.GetProvenance()
	tree, err := translog.OpenCheckpoint(p.GetCheckpoint(), p.GetVerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	tiles := &translog.Tiles{Data: map[string][]byte{}}
	for _, tl := range p.GetTiles() {
		tiles.Data[tl.GetPath()] = tl.GetData()
	}
	for _, e := range p.GetEntries() {
		if err := translog.CheckInclusion(tree, tiles, int64(e.GetRef().GetIndex()), e.GetData()); err != nil {
			t.Fatalf("entry %d: %v", e.GetRef().GetIndex(), err)
		}
		ent, err := provenance.ParseEntry(e.GetData())
		if err != nil {
			t.Fatal(err)
		}
		st, err := ent.Open()
		if err != nil {
			t.Fatalf("entry %d: %v", e.GetRef().GetIndex(), err)
		}
		if provenance.Subject(st) != digest(data) {
			t.Fatalf("entry %d is about %s, want the artifact %s", e.GetRef().GetIndex(), provenance.Subject(st), digest(data))
		}
	}
	if got := ed25519.PublicKey(ts.buildServerKey(t, "bs")); !got.Equal(testKey("bs").Public()) {
		t.Fatal("the build server's key is not pinned on its record")
	}
}

func (ts *testServer) buildServerKey(t *testing.T, name string) []byte {
	t.Helper()
	resp, err := kilnv1.NewStatusServiceClient(ts.conn).ListBuildServers(t.Context(), &kilnv1.ListBuildServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, bs := range resp.GetBuildServers() {
		if bs.GetName() == name {
			return bs.GetPublicKey()
		}
	}
	t.Fatalf("no build server %s", name)
	return nil
}

// A volunteer presenting a statement signed with another server's key, a
// statement replayed from another artifact, or none at all: refused, and
// the build goes to another attempt.
func TestProvenance_BadStatementsAreRefused(t *testing.T) {
	data := payload(2000, 2)
	for _, tc := range []struct {
		name string
		// statement returns the envelope to send for the attempt.
		statement func(asg *kilnv1.Assignment, r *kilnv1.AttemptResult) []byte
		want      string
	}{
		{"signed with another server's key", func(asg *kilnv1.Assignment, r *kilnv1.AttemptResult) []byte {
			return signStatement(testKey("other"), "bs", asg, r)
		}, "signature does not verify"},
		{"replayed from another artifact", func(asg *kilnv1.Assignment, r *kilnv1.AttemptResult) []byte {
			other := inlineResult(r.GetAttemptId(), payload(10, 9), nil)
			return signStatement(testKey("bs"), "bs", asg, other)
		}, "statement is about artifact"},
		{"naming another attempt", func(asg *kilnv1.Assignment, r *kilnv1.AttemptResult) []byte {
			other := inlineResult(r.GetAttemptId()+1, data, nil)
			return signStatement(testKey("bs"), "bs", asg, other)
		}, "statement is about attempt"},
		{"missing", func(*kilnv1.Assignment, *kilnv1.AttemptResult) []byte { return []byte{} }, "no signed provenance statement"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startTestServer(t, Config{}, queuedBuild(1, "hello", 60))
			ss := ts.connect("bs", nil)
			asg := ss.assignment()
			r := inlineResult(asg.GetAttemptId(), data, data)
			r.Statement = tc.statement(asg, r)
			// (an empty, non-nil statement: the test stream signs only a nil one)
			why := ss.refusal(r)
			if !strings.Contains(why, tc.want) {
				t.Fatalf("refusal %q, want it to say %q", why, tc.want)
			}
			b := ts.build(1)
			if b.GetState() == kilnv1.BuildState_BUILD_STATE_SUCCEEDED || len(b.GetProvenance()) != 0 {
				t.Fatalf("build %v with provenance %v after a refused statement", b.GetState(), b.GetProvenance())
			}
			if a := b.GetAttempts(); a[0].GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_REJECTED {
				t.Fatalf("attempt ended %v, want REJECTED", a[0].GetOutcome())
			}
		})
	}
}

// A build server's key is pinned at its first session: a later session of
// the same credential with another key is refused.
func TestProvenance_AnotherKeyForAPinnedCredentialIsRefused(t *testing.T) {
	ts := startTestServer(t, Config{})
	ss := ts.connect("bs", nil)
	hello := &kilnv1.Hello{Version: "test", Slots: 1, Targets: []*kilnv1.Target{{Id: "native", System: testSystem}},
		PublicKey: testKey("thief").Public().(ed25519.PublicKey)}
	next := ts.dial(ss.name, ss.token, hello)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-next.msgs:
			if ok {
				t.Fatal("a session with another key got a message")
			}
			if status.Code(next.end) != codes.PermissionDenied {
				t.Fatalf("session with another key ended %v, want PermissionDenied", next.end)
			}
			// The pinned key is unchanged and the first key still connects.
			if got := ed25519.PublicKey(ts.buildServerKey(t, "bs")); !got.Equal(testKey("bs").Public()) {
				t.Fatal("the pinned key changed")
			}
			ts.reopen(ss, &kilnv1.Hello{Version: "test", Slots: 1, Targets: []*kilnv1.Target{{Id: "native", System: testSystem}}})
			return
		case <-deadline:
			t.Fatal("session with another key still open")
		}
	}
}

func TestProvenance_HelloWithoutKeyIsRefused(t *testing.T) {
	ts := startTestServer(t, Config{})
	ss := ts.open("bs", &kilnv1.Hello{Version: "test", Slots: 1, Targets: []*kilnv1.Target{{Id: "native", System: testSystem}},
		PublicKey: []byte{}})
	for range ss.msgs {
		t.Fatal("a Hello without a key got an answer")
	}
	if status.Code(ss.end) != codes.InvalidArgument {
		t.Fatalf("Hello without a key ended %v, want InvalidArgument", ss.end)
	}
}

func TestGetLogTile_BadAndMissingPaths(t *testing.T) {
	ts := startTestServer(t, Config{})
	c := kilnv1.NewStatusServiceClient(ts.conn)
	if _, err := c.GetLogTile(t.Context(), &kilnv1.GetLogTileRequest{Path: "../../etc/passwd"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad path: %v, want InvalidArgument", err)
	}
	if _, err := c.GetLogTile(t.Context(), &kilnv1.GetLogTileRequest{Path: "tile/8/0/000.p/1"}); status.Code(err) != codes.NotFound {
		t.Fatalf("tile of an empty log: %v, want NotFound", err)
	}
	cp, err := c.GetLogCheckpoint(t.Context(), &kilnv1.GetLogCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tree, err := translog.OpenCheckpoint(cp.GetCheckpoint(), cp.GetVerifierKey())
	if err != nil || tree.N != 0 {
		t.Fatalf("checkpoint of an empty log: %v, %v", tree, err)
	}
}
