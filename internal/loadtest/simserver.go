package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/kilnbuild/kiln/internal/provenance"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// simServer is a simulated build server: it speaks the real WorkerService
// protocol over its own gRPC connection (its own TCP connection), with its
// own credential, but runs nothing. On an Assignment it calls onAssignment
// (by default: report SUCCEEDED with a tiny artifact naming the build, sent
// with the result as a real build server does when Welcome allows, else
// uploaded first); on an accepted ResultAck it tells the tracker the build is done.
type simServer struct {
	name, token string
	target      *kilnv1.Target
	slots       uint32
	tracker     *tracker
	// onAssignment replaces the default behaviour when set; it runs on its
	// own goroutine.
	onAssignment func(s *simServer, a *kilnv1.Assignment)

	conn   *grpc.ClientConn
	client kilnv1.WorkerServiceClient
	ctx    context.Context // carries the credential
	stream kilnv1.WorkerService_SessionClient
	// inlineMax is Welcome.max_inline_artifact_bytes.
	inlineMax uint64
	// draining is sent with every heartbeat (see setDraining); hbMu
	// orders reading it with sending, so the last flag set is the last sent.
	draining atomic.Bool
	hbMu     sync.Mutex

	sendMu  sync.Mutex
	mu      sync.Mutex
	running map[uint64]uint64 // attempt id -> build id
	errs    chan error
	// key signs the statements of its successes, as a build server's does.
	key ed25519.PrivateKey
}

func newSimServer(name, token string, target *kilnv1.Target, slots uint32, tr *tracker) *simServer {
	seed := sha256.Sum256([]byte("loadtest simulated build server " + name))
	return &simServer{name: name, token: token, target: target, slots: slots, tracker: tr,
		running: map[uint64]uint64{}, errs: make(chan error, 1), key: ed25519.NewKeyFromSeed(seed[:])}
}

// connect dials addr, opens the session, sends Hello and waits for Welcome;
// then it serves the session until ctx ends.
func (s *simServer) connect(ctx context.Context, addr string) error {
	conn, err := dialLoopback(addr)
	if err != nil {
		return err
	}
	s.conn = conn
	s.client = kilnv1.NewWorkerServiceClient(conn)
	s.ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.token)
	s.stream, err = s.client.Session(s.ctx)
	if err != nil {
		return fmt.Errorf("%s: session: %w", s.name, err)
	}
	hello := &kilnv1.Hello{Version: "loadtest-sim", Targets: []*kilnv1.Target{s.target}, Slots: s.slots,
		PublicKey: s.key.Public().(ed25519.PublicKey)}
	if err := s.send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Hello{Hello: hello}}); err != nil {
		return fmt.Errorf("%s: hello: %w", s.name, err)
	}
	msg, err := s.stream.Recv()
	if err != nil {
		return fmt.Errorf("%s: waiting for welcome: %w", s.name, err)
	}
	w := msg.GetWelcome()
	if w == nil {
		return fmt.Errorf("%s: first message is not Welcome: %v", s.name, msg)
	}
	s.inlineMax = w.GetMaxInlineArtifactBytes()
	interval := time.Duration(w.GetHeartbeatIntervalMs()) * time.Millisecond
	if interval <= 0 {
		interval = 5 * time.Second
	}
	go s.recvLoop()
	go s.heartbeatLoop(ctx, interval)
	return nil
}

// close ends the session and the connection.
func (s *simServer) close() {
	if s.stream != nil {
		s.sendMu.Lock()
		_ = s.stream.CloseSend()
		s.sendMu.Unlock()
	}
	if s.conn != nil {
		s.conn.Close()
	}
}

func (s *simServer) send(m *kilnv1.SessionRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.stream.Send(m)
}

func (s *simServer) fail(err error) {
	select {
	case s.errs <- err:
	default:
	}
}

func (s *simServer) recvLoop() {
	for {
		msg, err := s.stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) && s.ctx.Err() == nil {
				s.fail(fmt.Errorf("%s: session: %w", s.name, err))
			}
			return
		}
		switch m := msg.GetMsg().(type) {
		case *kilnv1.SessionResponse_Assignment:
			a := m.Assignment
			s.mu.Lock()
			s.running[a.GetAttemptId()] = a.GetBuildId()
			s.mu.Unlock()
			h := s.onAssignment
			if h == nil {
				h = (*simServer).succeed
			}
			go h(s, a)
		case *kilnv1.SessionResponse_ResultAck:
			s.mu.Lock()
			build, ok := s.running[m.ResultAck.GetAttemptId()]
			delete(s.running, m.ResultAck.GetAttemptId())
			s.mu.Unlock()
			if !ok {
				continue
			}
			if !m.ResultAck.GetAccepted() {
				s.fail(fmt.Errorf("%s: result of attempt %d refused: %s", s.name, m.ResultAck.GetAttemptId(), m.ResultAck.GetReason()))
				continue
			}
			if s.tracker != nil {
				s.tracker.finish(build)
			}
		case *kilnv1.SessionResponse_Cancel:
			s.mu.Lock()
			delete(s.running, m.Cancel.GetAttemptId())
			s.mu.Unlock()
		}
	}
}

func (s *simServer) heartbeatLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.heartbeat(); err != nil {
			return
		}
	}
}

// heartbeat sends a Heartbeat with the running attempts and the draining flag.
func (s *simServer) heartbeat() error {
	s.hbMu.Lock()
	defer s.hbMu.Unlock()
	s.mu.Lock()
	ids := make([]uint64, 0, len(s.running))
	for id := range s.running {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	return s.send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Heartbeat{Heartbeat: &kilnv1.Heartbeat{
		RunningAttemptIds: ids, Draining: s.draining.Load()}}})
}

// setDraining tells the metaserver at once whether the server takes new
// work, as a real build server does when it drains (and when it stops).
func (s *simServer) setDraining(v bool) error {
	s.hbMu.Lock()
	s.draining.Store(v)
	s.hbMu.Unlock()
	return s.heartbeat()
}

// succeed reports SUCCEEDED with a tiny artifact unique to the build: sent
// with the result when Welcome allows, as a real build server does, else
// uploaded first.
func (s *simServer) succeed(a *kilnv1.Assignment) {
	blob := []byte(fmt.Sprintf("loadtest artifact of build %d attempt %d\n", a.GetBuildId(), a.GetAttemptId()))
	if uint64(len(blob)) <= s.inlineMax {
		sum := sha256.Sum256(blob)
		art := &kilnv1.Artifact{Sha256: hex.EncodeToString(sum[:]), Size: uint64(len(blob)), Files: []string{"out.txt"}}
		if err := s.send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{Result: &kilnv1.AttemptResult{
			AttemptId: a.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED, Artifact: art, ArtifactData: blob,
			Statement: s.statement(a, art.GetSha256())}}}); err != nil {
			s.fail(err)
		}
		return
	}
	art, err := s.upload(a.GetAttemptId(), blobSource{block: blob, count: 1})
	if err != nil {
		s.fail(err)
		return
	}
	art.Files = []string{"out.txt"}
	if err := s.report(a, art); err != nil {
		s.fail(err)
	}
}

// report sends a SUCCEEDED AttemptResult of a for art, with its signed statement.
func (s *simServer) report(a *kilnv1.Assignment, art *kilnv1.Artifact) error {
	return s.send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{Result: &kilnv1.AttemptResult{
		AttemptId: a.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED, Artifact: art,
		Statement: s.statement(a, art.GetSha256())}}})
}

// blobSource is an artifact made of block repeated count times, so a large
// upload needs no large buffer.
type blobSource struct {
	block []byte
	count int
}

func (b blobSource) size() int64 { return int64(len(b.block)) * int64(b.count) }

func (b blobSource) sha256() string {
	h := sha256.New()
	for range b.count {
		h.Write(b.block)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// maxChunk is the protocol's upload chunk limit.
const maxChunk = 1 << 20

// upload streams src as the artifact of attempt through UploadArtifact.
func (s *simServer) upload(attempt uint64, src blobSource) (*kilnv1.Artifact, error) {
	return s.uploadKnown(attempt, src, src.sha256())
}

// uploadKnown is upload with the digest computed by the caller.
func (s *simServer) uploadKnown(attempt uint64, src blobSource, sum string) (*kilnv1.Artifact, error) {
	up, err := s.client.UploadArtifact(s.ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: upload: %w", s.name, err)
	}
	hdr := &kilnv1.UploadHeader{AttemptId: attempt, Sha256: sum, Size: uint64(src.size())}
	if err := up.Send(&kilnv1.UploadArtifactRequest{Msg: &kilnv1.UploadArtifactRequest_Header{Header: hdr}}); err != nil {
		return nil, fmt.Errorf("%s: upload header: %w", s.name, err)
	}
	for range src.count {
		for off := 0; off < len(src.block); off += maxChunk {
			chunk := src.block[off:min(off+maxChunk, len(src.block))]
			if err := up.Send(&kilnv1.UploadArtifactRequest{Msg: &kilnv1.UploadArtifactRequest_Data{Data: chunk}}); err != nil {
				_, rerr := up.CloseAndRecv()
				return nil, fmt.Errorf("%s: upload data: %w (%v)", s.name, err, rerr)
			}
		}
	}
	resp, err := up.CloseAndRecv()
	if err != nil {
		return nil, fmt.Errorf("%s: upload: %w", s.name, err)
	}
	return &kilnv1.Artifact{Sha256: resp.GetSha256(), Size: resp.GetSize()}, nil
}

// statement is the signed statement of a's success with artifact sha256
// (nil if it cannot be made: the metaserver then refuses the result, and
// the run fails loudly).
func (s *simServer) statement(a *kilnv1.Assignment, sha256 string) []byte {
	f := provenance.AssignmentFacts(a, s.name, sha256)
	f.Started, f.Ended, f.LogSHA256 = time.Now(), time.Now(), emptySHA256
	env, err := provenance.SignFacts(s.key, f)
	if err != nil {
		s.fail(err)
	}
	return env
}

// emptySHA256 is the sha256 of an empty log.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
