package server

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/auth"
	"github.com/kilnbuild/kiln/internal/provenance"
	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// testServer is a real metaserver (store, scheduler, committer) served over
// gRPC on a loopback port, for tests that speak the protocol as build
// servers and requesters do.
type testServer struct {
	t    testing.TB
	srv  *Server
	st   store.Store
	conn *grpc.ClientConn
	addr string
}

// startTestServer opens a metaserver on a fresh data directory whose store
// first receives the seed builds (queued builds are queued on start).
func startTestServer(t testing.TB, cfg Config, seed ...*store.Build) *testServer {
	t.Helper()
	return startSeededServer(t, cfg, func(tx store.Tx) error {
		for _, b := range seed {
			if err := tx.PutBuild(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// startSeededServer is startTestServer with the store first written by
// seed, as an earlier process would have left it.
func startSeededServer(t testing.TB, cfg Config, seed func(store.Tx) error) *testServer {
	t.Helper()
	cfg.DataDir = t.TempDir()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := DataDirReady(cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(cfg.DataDir, "kiln.db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(seed); err != nil {
		t.Fatal(err)
	}
	srv, err := Open(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unary, stream := auth.Interceptors(srv.LookupToken, "/kiln.v1.WorkerService/")
	gs := grpc.NewServer(grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream),
		grpc.MaxRecvMsgSize(MaxMessageBytes))
	kilnv1.RegisterWorkerServiceServer(gs, srv)
	kilnv1.RegisterCompileServiceServer(gs, srv)
	kilnv1.RegisterStatusServiceServer(gs, srv)
	srv.Start()
	go func() { _ = gs.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Drain()
		gs.Stop()
		srv.Stop()
		st.Close()
	})
	return &testServer{t: t, srv: srv, st: st, conn: conn, addr: ln.Addr().String()}
}

// queuedBuild is a queued build record as Submit would store it, with the
// given id, project and manifest timeout.
func queuedBuild(id uint64, project string, timeoutSeconds uint32) *store.Build {
	return &store.Build{
		Build: &kilnv1.Build{Id: id, Project: project, Commit: "0123456789abcdef0123456789abcdef01234567",
			State: kilnv1.BuildState_BUILD_STATE_QUEUED, Constraints: &kilnv1.PlatformConstraints{},
			CreatedAt: timestamppb.Now()},
		Recipe:    &kilnv1.Recipe{BuildSteps: []string{"true"}, TimeoutSeconds: timeoutSeconds},
		SourceKey: "source-" + project, GitUrl: "file:///nonexistent",
	}
}

// testSession is one build server's live session.
type testSession struct {
	t      testing.TB
	name   string
	stream kilnv1.WorkerService_SessionClient
	msgs   chan *kilnv1.SessionResponse
	// conn carries the build server's credential, for its other calls
	// (UploadArtifact).
	conn *grpc.ClientConn
	// end is why the session's stream ended; set before msgs is closed.
	end error
	// token is the build server's credential, for reopen.
	token string
}

var testSystem = &kilnv1.SystemInfo{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", CharBit: 8,
	Libc: "glibc", LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0", Tools: map[string]string{"make": "4.3"}}

// connect registers build server name with the store and opens its session
// with one native target, one slot and the given policy; it returns after
// the Welcome.
func (ts *testServer) connect(name string, policy *kilnv1.BuildServerPolicy) *testSession {
	ts.t.Helper()
	return ts.connectHello(name, &kilnv1.Hello{
		Version: "test", Slots: 1, Policy: policy,
		Targets: []*kilnv1.Target{{Id: "native", System: testSystem}},
	})
}

// connectHello is connect with the given Hello; it returns after the Welcome.
func (ts *testServer) connectHello(name string, hello *kilnv1.Hello) *testSession {
	ts.t.Helper()
	ss := ts.open(name, hello)
	if ss.next(5*time.Second).GetWelcome() == nil {
		ts.t.Fatalf("%s: the first message is not a Welcome", name)
	}
	return ss
}

// open registers build server name with the store, opens its session and
// sends hello; it does not wait for the answer.
func (ts *testServer) open(name string, hello *kilnv1.Hello) *testSession {
	t := ts.t
	t.Helper()
	token, hash := auth.NewToken()
	err := ts.st.Update(func(tx store.Tx) error {
		return tx.CreateBuildServer(&store.BuildServer{Name: name, TokenHash: hash, CreatedAt: timestamppb.Now()})
	})
	if err != nil {
		t.Fatal(err)
	}
	return ts.dial(name, token, hello)
}

// reopen opens a new session for the build server of ss (registered
// already), as its process would after a restart, and returns after the
// Welcome; the old session is replaced.
func (ts *testServer) reopen(ss *testSession, hello *kilnv1.Hello) *testSession {
	ts.t.Helper()
	next := ts.dial(ss.name, ss.token, hello)
	if next.next(5*time.Second).GetWelcome() == nil {
		ts.t.Fatalf("%s: the first message is not a Welcome", ss.name)
	}
	return next
}

// dial opens a session for build server name with token and sends hello.
func (ts *testServer) dial(name, token string, hello *kilnv1.Hello) *testSession {
	t := ts.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Bearer{Token: token}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := kilnv1.NewWorkerServiceClient(conn).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key := testKey(name)
	if hello.GetPublicKey() == nil {
		hello = proto.Clone(hello).(*kilnv1.Hello)
		hello.PublicKey = key.Public().(ed25519.PublicKey)
	}
	signing := &signingStream{WorkerService_SessionClient: stream, name: name, key: key, asg: map[uint64]*kilnv1.Assignment{}}
	err = signing.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Hello{Hello: hello}})
	if err != nil {
		t.Fatal(err)
	}
	ss := &testSession{t: t, name: name, stream: signing, msgs: make(chan *kilnv1.SessionResponse, 64), conn: conn, token: token}
	go func() {
		defer close(ss.msgs)
		for {
			msg, err := stream.Recv()
			if err != nil {
				ss.end = err
				return
			}
			if asg := msg.GetAssignment(); asg != nil {
				signing.mu.Lock()
				signing.asg[asg.GetAttemptId()] = asg
				signing.mu.Unlock()
			}
			ss.msgs <- msg
		}
	}()
	return ss
}

// next returns the session's next message, failing the test after timeout.
func (ss *testSession) next(timeout time.Duration) *kilnv1.SessionResponse {
	ss.t.Helper()
	select {
	case msg, ok := <-ss.msgs:
		if !ok {
			ss.t.Fatalf("%s: session ended", ss.name)
		}
		return msg
	case <-time.After(timeout):
		ss.t.Fatalf("%s: no message within %s", ss.name, timeout)
		return nil
	}
}

// assignment waits for the session's next message and requires an Assignment.
func (ss *testSession) assignment() *kilnv1.Assignment {
	ss.t.Helper()
	msg := ss.next(5 * time.Second)
	if msg.GetAssignment() == nil {
		ss.t.Fatalf("%s: got %v, want an assignment", ss.name, msg)
	}
	return msg.GetAssignment()
}

// report sends the result of an attempt and waits for its acknowledgement.
func (ss *testSession) report(r *kilnv1.AttemptResult) {
	ss.t.Helper()
	if err := ss.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{Result: r}}); err != nil {
		ss.t.Fatal(err)
	}
	for {
		msg := ss.next(5 * time.Second)
		if ack := msg.GetResultAck(); ack != nil && ack.GetAttemptId() == r.GetAttemptId() {
			if !ack.GetAccepted() {
				ss.t.Fatalf("%s: result of attempt %d refused: %s", ss.name, r.GetAttemptId(), ack.GetReason())
			}
			return
		}
	}
}

// build returns the current view of build id.
func (ts *testServer) build(id uint64) *kilnv1.Build {
	ts.t.Helper()
	b, err := kilnv1.NewCompileServiceClient(ts.conn).GetBuild(context.Background(), &kilnv1.GetBuildRequest{BuildId: id})
	if err != nil {
		ts.t.Fatal(err)
	}
	return b.GetBuild()
}

// testKey is build server name's signing key in these tests: the same for
// every session of the name, as a build server's key file is.
func testKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("test key of " + name))
	return ed25519.NewKeyFromSeed(seed[:])
}

// signingStream is a test build server's session stream that signs the
// statement of every successful result sent without one, as the real
// build server does (internal/worker/provenance.go).
type signingStream struct {
	kilnv1.WorkerService_SessionClient
	name string
	key  ed25519.PrivateKey
	mu   sync.Mutex
	asg  map[uint64]*kilnv1.Assignment
}

func (s *signingStream) Send(req *kilnv1.SessionRequest) error {
	r := req.GetResult()
	if r == nil || r.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED || r.GetStatement() != nil {
		return s.WorkerService_SessionClient.Send(req)
	}
	s.mu.Lock()
	asg := s.asg[r.GetAttemptId()]
	s.mu.Unlock()
	r = proto.Clone(r).(*kilnv1.AttemptResult)
	r.Statement = signStatement(s.key, s.name, asg, r)
	return s.WorkerService_SessionClient.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{Result: r}})
}

// signStatement is the envelope a build server named name sends for r.
func signStatement(key ed25519.PrivateKey, name string, asg *kilnv1.Assignment, r *kilnv1.AttemptResult) []byte {
	st, err := provenance.NewStatement(provenance.Facts{
		ArtifactSHA256: r.GetArtifact().GetSha256(), Project: asg.GetProject(), GitURL: asg.GetGitUrl(),
		Commit: asg.GetCommit(), Options: asg.GetOptions(), BuildServer: name, AttemptID: r.GetAttemptId(),
		Started: time.Now(), Ended: time.Now(), LogSHA256: strings.Repeat("0", 64),
	})
	if err != nil {
		panic(err)
	}
	env, err := provenance.Seal(key, st)
	if err != nil {
		panic(err)
	}
	return env
}
