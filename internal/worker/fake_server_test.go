package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const testToken = "s3cret-token"

// fakeMeta is a metaserver's WorkerService reduced to what a build server
// sees, served on a loopback listener so requests cross a real connection.
// It records what arrives, assembles logs by offset exactly as the protocol
// says (ignore what it has, refuse gaps) and stores uploads by sha256.
type fakeMeta struct {
	kilnv1.UnimplementedWorkerServiceServer
	addr string

	mu          sync.Mutex
	changed     chan struct{}
	hbInterval  uint32
	noAck       bool            // do not acknowledge results
	inlineMax   uint64          // Welcome.max_inline_artifact_bytes
	dropIDs     map[uint64]bool // answer these in Welcome.drop_attempt_ids
	revoked     bool            // every call fails UNAUTHENTICATED
	hellos      []*kilnv1.Hello
	heartbeats  []*kilnv1.Heartbeat
	phases      map[uint64][]kilnv1.Phase
	logs        map[uint64][]byte
	logGaps     []string
	results     []*kilnv1.AttemptResult
	blobs       map[string][]byte
	uploadCalls int
	// cutUploads ends this many uploads, after their first data message,
	// with cutCode (a lost connection is UNAVAILABLE at the client).
	cutUploads int
	cutCode    codes.Code
	cuts       int
	session    *fakeSession
	sessions   int
}

// fakeSession is one live session: messages to push, and a way to break it.
type fakeSession struct {
	out  chan *kilnv1.SessionResponse
	kill chan error
}

func startFake(t testing.TB) *fakeMeta {
	t.Helper()
	f := &fakeMeta{
		changed:    make(chan struct{}),
		hbInterval: 20,
		dropIDs:    map[uint64]bool{},
		phases:     map[uint64][]kilnv1.Phase{},
		logs:       map[uint64][]byte{},
		blobs:      map[string][]byte{},
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	kilnv1.RegisterWorkerServiceServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	f.addr = lis.Addr().String()
	return f
}

// notifyLocked wakes waiters; f.mu must be held.
func (f *fakeMeta) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// waitFor waits until cond (called with f.mu held) holds, failing the test
// after a deadline.
func (f *fakeMeta) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		ok, ch := cond(), f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (f *fakeMeta) authorize(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	revoked := f.revoked
	f.mu.Unlock()
	if revoked || !slices.Equal(md.Get("authorization"), []string{"Bearer " + testToken}) {
		return status.Error(codes.Unauthenticated, "credential revoked")
	}
	return nil
}

func (f *fakeMeta) Session(stream kilnv1.WorkerService_SessionServer) error {
	if err := f.authorize(stream.Context()); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "Hello first")
	}
	ss := &fakeSession{out: make(chan *kilnv1.SessionResponse, 64), kill: make(chan error, 1)}
	f.mu.Lock()
	w := &kilnv1.Welcome{BuildServer: "fake", HeartbeatIntervalMs: f.hbInterval, LeaseMs: 10 * f.hbInterval, MaxInlineArtifactBytes: f.inlineMax}
	for _, id := range hello.GetRunningAttemptIds() {
		if f.dropIDs[id] {
			w.DropAttemptIds = append(w.DropAttemptIds, id)
		} else {
			w.KeepAttemptIds = append(w.KeepAttemptIds, id)
		}
	}
	f.hellos = append(f.hellos, hello)
	f.session = ss
	f.sessions++
	f.notifyLocked()
	f.mu.Unlock()
	if err := stream.Send(&kilnv1.SessionResponse{Msg: &kilnv1.SessionResponse_Welcome{Welcome: w}}); err != nil {
		return err
	}
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			f.handle(ss, m)
		}
	}()
	for {
		select {
		case m := <-ss.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case err := <-ss.kill:
			return err
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func (f *fakeMeta) handle(ss *fakeSession, m *kilnv1.SessionRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.notifyLocked()
	switch m := m.GetMsg().(type) {
	case *kilnv1.SessionRequest_Heartbeat:
		f.heartbeats = append(f.heartbeats, m.Heartbeat)
	case *kilnv1.SessionRequest_Progress:
		f.phases[m.Progress.GetAttemptId()] = append(f.phases[m.Progress.GetAttemptId()], m.Progress.GetPhase())
	case *kilnv1.SessionRequest_Log:
		c := m.Log
		have := uint64(len(f.logs[c.GetAttemptId()]))
		if len(c.GetData()) > logChunkMax {
			f.logGaps = append(f.logGaps, fmt.Sprintf("chunk of %d bytes", len(c.GetData())))
		}
		switch end := c.GetOffset() + uint64(len(c.GetData())); {
		case c.GetOffset() > have:
			f.logGaps = append(f.logGaps, fmt.Sprintf("attempt %d: chunk at %d after %d bytes", c.GetAttemptId(), c.GetOffset(), have))
		case end > have:
			f.logs[c.GetAttemptId()] = append(f.logs[c.GetAttemptId()], c.GetData()[have-c.GetOffset():]...)
		}
	case *kilnv1.SessionRequest_Result:
		r := m.Result
		if uint64(len(f.logs[r.GetAttemptId()])) != r.GetLogSize() {
			f.logGaps = append(f.logGaps, fmt.Sprintf("attempt %d: result says %d log bytes, have %d", r.GetAttemptId(), r.GetLogSize(), len(f.logs[r.GetAttemptId()])))
		}
		f.results = append(f.results, r)
		if !f.noAck {
			ss.out <- &kilnv1.SessionResponse{Msg: &kilnv1.SessionResponse_ResultAck{ResultAck: &kilnv1.ResultAck{AttemptId: r.GetAttemptId(), Accepted: true}}}
		}
	}
}

func (f *fakeMeta) UploadArtifact(stream kilnv1.WorkerService_UploadArtifactServer) error {
	if err := f.authorize(stream.Context()); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "header first")
	}
	var data []byte
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if len(m.GetData()) > uploadChunk {
			return status.Errorf(codes.InvalidArgument, "chunk of %d bytes", len(m.GetData()))
		}
		data = append(data, m.GetData()...)
		f.mu.Lock()
		cut := f.cutUploads > 0
		if cut {
			f.cutUploads--
			f.cuts++
		}
		f.mu.Unlock()
		if cut {
			return status.Error(f.cutCode, "cut by the test")
		}
	}
	sum := sha256.Sum256(data)
	got := hex.EncodeToString(sum[:])
	if got != h.GetSha256() || uint64(len(data)) != h.GetSize() {
		return status.Errorf(codes.DataLoss, "got %s (%d bytes), header says %s (%d)", got, len(data), h.GetSha256(), h.GetSize())
	}
	f.mu.Lock()
	f.blobs[got] = data
	f.uploadCalls++
	f.notifyLocked()
	f.mu.Unlock()
	return stream.SendAndClose(&kilnv1.UploadArtifactResponse{Sha256: got, Size: uint64(len(data))})
}

// push sends m on the current session, waiting for the client to open
// one if it has not yet.
func (f *fakeMeta) push(t testing.TB, m *kilnv1.SessionResponse) {
	t.Helper()
	var ss *fakeSession
	f.waitFor(t, "a session to push to", func() bool {
		ss = f.session
		return ss != nil
	})
	ss.out <- m
}

// breakSession ends the current session with an UNAVAILABLE error.
func (f *fakeMeta) breakSession(t testing.TB) {
	t.Helper()
	f.mu.Lock()
	ss := f.session
	f.session = nil
	f.mu.Unlock()
	if ss == nil {
		t.Fatal("no session to break")
	}
	ss.kill <- status.Error(codes.Unavailable, "fake metaserver restarting")
}

// resultFor returns the last result received for attempt id, or nil.
func (f *fakeMeta) resultForLocked(id uint64) *kilnv1.AttemptResult {
	for i := len(f.results) - 1; i >= 0; i-- {
		if f.results[i].GetAttemptId() == id {
			return f.results[i]
		}
	}
	return nil
}

// waitResult waits for a result of attempt id and returns it.
func (f *fakeMeta) waitResult(t testing.TB, id uint64) *kilnv1.AttemptResult {
	t.Helper()
	var r *kilnv1.AttemptResult
	f.waitFor(t, fmt.Sprintf("result of attempt %d", id), func() bool {
		r = f.resultForLocked(id)
		return r != nil
	})
	return r
}

// log returns what the fake holds of attempt id's log.
func (f *fakeMeta) log(id uint64) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return string(f.logs[id])
}

// assign builds an Assignment message.
func assign(a *kilnv1.Assignment) *kilnv1.SessionResponse {
	return &kilnv1.SessionResponse{Msg: &kilnv1.SessionResponse_Assignment{Assignment: a}}
}
