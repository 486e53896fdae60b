package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// addProject registers a project with the store.
func (ts *testServer) addProject(name, gitURL string) {
	ts.t.Helper()
	err := ts.st.Update(func(tx store.Tx) error {
		return tx.CreateProject(&store.Project{Project: &kilnv1.Project{Name: name, GitUrl: gitURL}, CreatedAt: timestamppb.Now()})
	})
	if err != nil {
		ts.t.Fatal(err)
	}
}

// listBuilds returns every build the StatusService lists.
func (ts *testServer) listBuilds() []*kilnv1.Build {
	ts.t.Helper()
	resp, err := kilnv1.NewStatusServiceClient(ts.conn).ListBuilds(context.Background(), &kilnv1.ListBuildsRequest{PageSize: 500})
	if err != nil {
		ts.t.Fatal(err)
	}
	return resp.GetBuilds()
}

// badField returns the field a BadRequest detail of err names, or "".
func badField(err error) string {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

// longRevision is a branch name of exactly n bytes, in components short
// enough for any file system (n%101 != 1, so no component is empty).
func longRevision(n int) string {
	var b strings.Builder
	b.WriteString("b")
	for b.Len() < n {
		b.WriteString("/")
		b.WriteString(strings.Repeat("x", min(100, n-b.Len())))
	}
	return b.String()
}

func TestARevisionOverTheLengthLimitIsRefusedAndStoresNothingWhereOneAtTheLimitBuilds(t *testing.T) {
	dir, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	over, at := longRevision(maxRevisionLength+1), longRevision(maxRevisionLength)
	if len(over) != maxRevisionLength+1 || len(at) != maxRevisionLength {
		t.Fatalf("revision lengths %d and %d", len(over), len(at))
	}
	// Both are real branches, so only a limit tells them apart (the
	// mirror has its own; the next test shows that Submit's comes first).
	for _, rev := range []string{over, at} {
		if out, err := exec.Command("git", "-C", dir, "branch", rev, "main").CombinedOutput(); err != nil {
			t.Fatalf("git branch: %v\n%s", err, out)
		}
	}
	ts := startTestServer(t, Config{})
	ts.addProject("hello", "file://"+dir)
	c := kilnv1.NewCompileServiceClient(ts.conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	_, err := c.Submit(ctx, &kilnv1.SubmitRequest{Project: "hello", Revision: over, Email: "r@example.com"})
	expectCode(t, "a revision of maxRevisionLength+1 bytes", err, codes.InvalidArgument)
	if f := badField(err); f != "revision" {
		t.Fatalf("the refusal names field %q; want revision", f)
	}
	if builds := ts.listBuilds(); len(builds) != 0 {
		t.Fatalf("after the refusal %d builds are stored; want none", len(builds))
	}

	// Control: a revision of exactly the limit builds.
	resp, err := c.Submit(ctx, &kilnv1.SubmitRequest{Project: "hello", Revision: at, Email: "r@example.com"})
	if err != nil {
		t.Fatalf("a revision of exactly maxRevisionLength bytes: %v", err)
	}
	if builds := ts.listBuilds(); len(builds) != 1 || builds[0].GetRevision() != at {
		t.Fatalf("stored builds %v; want the one of the accepted request", builds)
	}
	_ = resp
}

func TestSubmitRefusesALongRevisionOrTooManyOptionsBeforeTouchingTheRepository(t *testing.T) {
	// The project's repository does not exist: a request that gets past the
	// edge checks fails on its mirror (Unavailable), so the code says which
	// check refused it.
	ts := startTestServer(t, Config{})
	ts.addProject("gone", "file:///nonexistent/kiln-test-repository")
	c := kilnv1.NewCompileServiceClient(ts.conn)
	options := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("o%d", i)] = "1"
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		revision string
		options  int
		want     codes.Code
		field    string
	}{
		{"a revision one byte over the limit is refused at the edge", longRevision(maxRevisionLength + 1), 0, codes.InvalidArgument, "revision"},
		{"a revision of exactly the limit reaches the repository", longRevision(maxRevisionLength), 0, codes.Unavailable, ""},
		{"one option more than the limit is refused at the edge", "main", maxOptions + 1, codes.InvalidArgument, "options"},
		{"exactly the limit of options reaches the repository", "main", maxOptions, codes.Unavailable, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := c.Submit(ctx, &kilnv1.SubmitRequest{Project: "gone", Revision: tc.revision, Email: "r@example.com", Options: options(tc.options)})
			expectCode(t, fmt.Sprintf("revision of %d bytes, %d options", len(tc.revision), tc.options), err, tc.want)
			if f := badField(err); f != tc.field {
				t.Fatalf("the refusal names field %q; want %q", f, tc.field)
			}
			if builds := ts.listBuilds(); len(builds) != 0 {
				t.Fatalf("%d builds are stored; want none", len(builds))
			}
		})
	}
}

func TestAMessageOverTheSizeLimitIsRefusedAndTheServerGoesOn(t *testing.T) {
	ts := startTestServer(t, Config{}, queuedBuild(1, "hello", 60))
	c := kilnv1.NewCompileServiceClient(ts.conn)
	// A bound, not a timing: messages of MaxMessageBytes under the race
	// detector on two loaded cores have taken 30 s.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// An email field of MaxMessageBytes makes the message larger than the
	// limit; one a little shorter reaches the handler, which refuses the
	// address.
	_, err := c.Submit(ctx, &kilnv1.SubmitRequest{Project: "hello", Email: strings.Repeat("a", MaxMessageBytes)})
	expectCode(t, "a Submit over MaxMessageBytes", err, codes.ResourceExhausted)
	_, err = c.Submit(ctx, &kilnv1.SubmitRequest{Project: "hello", Email: strings.Repeat("a", MaxMessageBytes-64)})
	expectCode(t, "a Submit just under MaxMessageBytes", err, codes.InvalidArgument)

	// On a build server's session: the stream ends, nothing of it is
	// stored, and the metaserver goes on serving.
	ss := ts.connect("bs", nil)
	attempt := ss.assignment().GetAttemptId()
	err = ss.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Log{Log: &kilnv1.LogChunk{
		AttemptId: attempt, Data: bytes.Repeat([]byte("x"), MaxMessageBytes)}}})
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	ss.waitEnd()
	expectCode(t, "a session message over MaxMessageBytes", ss.end, codes.ResourceExhausted)
	if n := ts.srv.logs.size(1, attemptNumber(attempt)); n != 0 {
		t.Fatalf("the log holds %d bytes of the refused message", n)
	}
	if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_RUNNING {
		t.Fatalf("build %s after the refused message; want still running on its lease", b.GetState())
	}
	ts.connect("next", nil) // fails the test unless welcomed
}

func TestTheMetaserverCapsAnAttemptsLogWhateverTheBuildServerSends(t *testing.T) {
	const limit = 100
	ts := startTestServer(t, Config{MaxLogBytes: limit}, queuedBuild(1, "hello", 60))
	ss := ts.connect("bs", nil)
	attempt := ss.assignment().GetAttemptId()
	sent := payload(3*60, 'a')
	for off := 0; off < len(sent); off += 60 {
		err := ss.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Log{Log: &kilnv1.LogChunk{
			AttemptId: attempt, Offset: uint64(off), Data: sent[off : off+60]}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	want := string(sent[:limit]) + truncatedNote
	if got := ts.readLog(1, len(want)); got != want {
		t.Fatalf("stored log %q; want the first %d bytes and the truncation note", got, limit)
	}
	if n := ts.srv.logs.size(1, attemptNumber(attempt)); n != int64(len(want)) {
		t.Fatalf("log file of %d bytes; want %d", n, len(want))
	}

	// A chunk over maxLogChunk ends the session.
	err := ss.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Log{Log: &kilnv1.LogChunk{
		AttemptId: attempt, Offset: uint64(len(sent)), Data: make([]byte, maxLogChunk+1)}}})
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	ss.waitEnd()
	expectCode(t, "a log chunk over maxLogChunk", ss.end, codes.InvalidArgument)
}

// waitEnd waits until the session's stream has ended.
func (ss *testSession) waitEnd() {
	ss.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ss.msgs:
			if !ok {
				return
			}
		case <-timeout:
			ss.t.Fatalf("%s: the session did not end", ss.name)
		}
	}
}

// readLog polls build id's log until it holds at least n bytes (or the
// deadline passes) and returns it.
func (ts *testServer) readLog(id uint64, n int) string {
	ts.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		stream, err := kilnv1.NewCompileServiceClient(ts.conn).GetLog(ctx, &kilnv1.GetLogRequest{BuildId: id})
		if err != nil {
			cancel()
			ts.t.Fatal(err)
		}
		var got []byte
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				cancel()
				ts.t.Fatal(err)
			}
			got = append(got, msg.GetData()...)
		}
		cancel()
		if len(got) >= n || time.Now().After(deadline) {
			return string(got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
