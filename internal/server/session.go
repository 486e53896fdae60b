package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/auth"
	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/sched"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Limits on what a build server may claim in its Hello.
const (
	maxTargets  = 64
	maxSlots    = 1024
	maxLogChunk = kilnv1.MaxLogChunkBytes
	// sendBuffer holds messages for a build server whose stream is slow; it
	// is small because every connected server pays for it even when idle.
	sendBuffer     = 32
	helloTimeout   = 10 * time.Second
	maxLabelLength = 64
	// Limits on Hello.rejected_targets (see worker.proto): a Hello over
	// them is refused with INVALID_ARGUMENT, not truncated.
	maxRejectedTargets   = 32
	maxRejectedIDBytes   = 128
	maxRejectReasonBytes = 512
	// maxReasonBytes bounds a result's reason and failing step as stored.
	maxReasonBytes = 1024
	// maxUploadsPerServer bounds concurrent UploadArtifact streams of one
	// build server, so one volunteer cannot tie up the metaserver's disk.
	maxUploadsPerServer = 4
)

// session is one live WorkerService.Session stream.
//
// An idle session costs one goroutine of ours (the handler, blocked in
// Recv); messages to the build server are queued and sent by a goroutine
// that exists only while the queue is not empty. A cancelled session (replaced,
// revoked, drained) ends at its build server's next message, at most one
// heartbeat interval later, or when keepalive finds the connection dead.
type session struct {
	name string
	// operator is the operator behind the credential, read at the start.
	operator    string
	stream      kilnv1.WorkerService_SessionServer
	ctx         context.Context
	cancel      context.CancelCauseFunc
	unsandboxed bool
	// rejected are the targets whose probe failed, as this session's Hello
	// reported them; shown by ListBuildServers. Never modified.
	rejected []*kilnv1.RejectedTarget
	// targets are the targets this session's Hello offered: shown by
	// ListBuildServers while connected (the record's copy is committed
	// after the Welcome). Never modified.
	targets []*kilnv1.Target
	// key is the build server's pinned signing key (Hello.public_key).
	key ed25519.PublicKey

	mu      sync.Mutex
	queue   []*kilnv1.SessionResponse
	sending bool
}

// send queues msg for the build server without blocking; a session that
// cannot keep up (more than sendBuffer messages waiting) is closed, and its
// build server reconnects and reports.
func (ss *session) send(msg *kilnv1.SessionResponse) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.queue) >= sendBuffer {
		ss.cancel(errors.New("session send queue full"))
		return
	}
	ss.queue = append(ss.queue, msg)
	if !ss.sending {
		ss.sending = true
		go ss.drain()
	}
}

// drain sends queued messages in order until the queue is empty.
func (ss *session) drain() {
	for {
		ss.mu.Lock()
		batch := ss.queue
		ss.queue = nil
		if len(batch) == 0 || ss.ctx.Err() != nil {
			ss.sending = false
			ss.mu.Unlock()
			return
		}
		ss.mu.Unlock()
		for _, msg := range batch {
			if err := ss.stream.Send(msg); err != nil {
				ss.cancel(err)
				break
			}
		}
	}
}

// Session implements kilnv1.WorkerServiceServer.
func (s *Server) Session(stream kilnv1.WorkerService_SessionServer) error {
	name, ok := auth.BuildServer(stream.Context())
	if !ok {
		return status.Error(codes.Unauthenticated, "no build server identity")
	}
	hello, err := recvHello(stream, s.clock)
	if err != nil {
		return err
	}
	if err := validateHello(hello); err != nil {
		return status.Errorf(codes.InvalidArgument, "hello: %v", err)
	}
	op := implicitOperator(name)
	if err := s.st.View(func(tx store.Tx) error {
		rec, err := tx.BuildServer(name)
		if err == nil {
			op = operatorName(rec)
		}
		return nil
	}); err != nil {
		return status.Errorf(codes.Unavailable, "reading the build server's record: %v", err)
	}
	if err := s.pinKey(name, hello.GetPublicKey()); err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	ss := &session{name: name, operator: op, stream: stream, ctx: ctx, cancel: cancel, unsandboxed: hello.GetUnsandboxed(),
		rejected: hello.GetRejectedTargets(), targets: hello.GetTargets(), key: ed25519.PublicKey(bytes.Clone(hello.GetPublicKey()))}
	// Hold the queue until the Welcome is out: connect may already queue
	// assignments, which must follow it.
	ss.mu.Lock()
	ss.sending = true
	welcome, err := s.connect(ss, hello)
	if err != nil {
		ss.sending = false
		ss.mu.Unlock()
		return err
	}
	err = stream.Send(&kilnv1.SessionResponse{Msg: &kilnv1.SessionResponse_Welcome{Welcome: welcome}})
	ss.sending = false
	if len(ss.queue) > 0 && err == nil {
		ss.sending = true
		go ss.drain()
	}
	ss.mu.Unlock()
	if err != nil {
		s.disconnect(ss)
		return err
	}
	s.log.Info("build server connected", "build_server", name, "targets", len(hello.GetTargets()), "slots", hello.GetSlots(),
		"kept_attempts", len(welcome.GetKeepAttemptIds()), "dropped_attempts", len(welcome.GetDropAttemptIds()), "unsandboxed", hello.GetUnsandboxed())
	if hello.GetUnsandboxed() {
		s.log.Warn("build server runs builds WITHOUT a sandbox", "build_server", name)
	}
	for _, r := range hello.GetRejectedTargets() {
		s.log.Info("build server does not offer a target: its probe failed", "build_server", name,
			"target", r.GetTargetId(), "reason", r.GetReason())
	}
	defer s.disconnect(ss)

	// Messages are received on their own goroutine so that a session
	// replaced, revoked or drained while idle ends at once rather than
	// at its next heartbeat: a graceful stop (Drain) then hands the build
	// servers to the next metaserver in milliseconds, not a heartbeat
	// interval later.
	msgs, recvErr := make(chan *kilnv1.SessionRequest), make(chan error, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()
	for err == nil {
		select {
		case msg := <-msgs:
			if ctx.Err() != nil {
				err = context.Cause(ctx)
			} else {
				err = s.handle(ss, msg)
			}
		case err = <-recvErr:
		case <-ctx.Done():
			err = context.Cause(ctx) // replaced, revoked or drained
		}
	}
	cancel(err)
	if errors.Is(err, io.EOF) {
		return nil
	}
	s.log.Info("build server session ended", "build_server", name, "err", err)
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return err
	}
	return status.Error(codes.Unavailable, err.Error())
}

func recvHello(stream kilnv1.WorkerService_SessionServer, clock clockwork.Clock) (*kilnv1.Hello, error) {
	type result struct {
		msg *kilnv1.SessionRequest
		err error
	}
	ch := make(chan result, 1)
	go func() {
		msg, err := stream.Recv()
		ch <- result{msg, err}
	}()
	select {
	case r := <-ch:
		if r.err == io.EOF {
			return nil, status.Error(codes.Canceled, "session closed before Hello")
		}
		if r.err != nil {
			return nil, r.err
		}
		if r.msg.GetHello() == nil {
			return nil, status.Error(codes.InvalidArgument, "the first session message must be Hello")
		}
		return r.msg.GetHello(), nil
	case <-clock.After(helloTimeout):
		return nil, status.Error(codes.DeadlineExceeded, "no Hello within "+helloTimeout.String())
	}
}

func validateHello(h *kilnv1.Hello) error {
	if len(h.GetTargets()) == 0 || len(h.GetTargets()) > maxTargets {
		return fmt.Errorf("between 1 and %d targets required, got %d", maxTargets, len(h.GetTargets()))
	}
	if h.GetSlots() == 0 || h.GetSlots() > maxSlots {
		return fmt.Errorf("slots must be 1..%d, got %d", maxSlots, h.GetSlots())
	}
	if len(h.GetRejectedTargets()) > maxRejectedTargets {
		return fmt.Errorf("at most %d rejected targets, got %d", maxRejectedTargets, len(h.GetRejectedTargets()))
	}
	for _, r := range h.GetRejectedTargets() {
		if r.GetTargetId() == "" || len(r.GetTargetId()) > maxRejectedIDBytes {
			return fmt.Errorf("rejected target ids must be non-empty and at most %d bytes: %q", maxRejectedIDBytes, r.GetTargetId())
		}
		if len(r.GetReason()) > maxRejectReasonBytes {
			return fmt.Errorf("rejected target %s: reason longer than %d bytes", r.GetTargetId(), maxRejectReasonBytes)
		}
	}
	seen := map[string]bool{}
	for _, t := range h.GetTargets() {
		if t.GetId() == "" || len(t.GetId()) > 128 || seen[t.GetId()] {
			return fmt.Errorf("target ids must be unique, non-empty and short: %q", t.GetId())
		}
		seen[t.GetId()] = true
		si := t.GetSystem()
		if si.GetOs() == "" || si.GetArch() == "" {
			return fmt.Errorf("target %s: system info lacks os or arch", t.GetId())
		}
		for _, l := range si.GetLabels() {
			if len(l) > maxLabelLength {
				return fmt.Errorf("target %s: label longer than %d bytes", t.GetId(), maxLabelLength)
			}
		}
	}
	return nil
}

// connect registers the session, reconciles what the build server still
// runs, and returns the Welcome. Once Drain has begun it registers nothing
// and refuses: Drain ends only the sessions it finds, and one that came
// after would hold a graceful stop for its whole grace.
func (s *Server) connect(ss *session, h *kilnv1.Hello) (*kilnv1.Welcome, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closing:
		return nil, status.Error(codes.Unavailable, errStopped.Error())
	default:
	}
	if old := s.sessions[ss.name]; old != nil {
		old.cancel(errors.New("replaced by a newer session"))
	}
	s.sessions[ss.name] = ss
	s.standingLocked(ss.name).operator = ss.operator
	srv := &sched.Server{Name: ss.name, Slots: int(h.GetSlots()), Policy: h.GetPolicy(), Draining: h.GetDraining()}
	for _, t := range h.GetTargets() {
		srv.Targets = append(srv.Targets, &sched.Target{ID: t.GetId(), Info: t.GetSystem()})
	}
	s.applyStandingLocked(srv)
	s.sched.Connect(srv)
	s.updateTargetMetricsLocked()

	w := &kilnv1.Welcome{
		BuildServer:            ss.name,
		HeartbeatIntervalMs:    uint32(s.cfg.HeartbeatInterval.Milliseconds()),
		LeaseMs:                uint32(s.cfg.Lease.Milliseconds()),
		MaxInlineArtifactBytes: uint64(s.maxInlineResult()),
	}
	reported := map[uint64]bool{}
	for _, id := range h.GetRunningAttemptIds() {
		reported[id] = true
		a := s.sched.Attempt(id)
		if a != nil && a.Server.Name == ss.name && !now.After(a.LeaseUntil) {
			s.sched.Adopt(a, srv, now.Add(s.cfg.Lease))
			w.KeepAttemptIds = append(w.KeepAttemptIds, id)
		} else {
			w.DropAttemptIds = append(w.DropAttemptIds, id)
		}
	}
	// Attempts this server held but no longer reports were lost with its
	// previous process: queue them again now rather than at lease expiry.
	for _, a := range s.attemptsOfLocked(ss.name) {
		if !reported[a.ID] {
			s.endAttemptLocked(a, &kilnv1.AttemptResult{AttemptId: a.ID, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_LOST,
				Reason: "build server " + ss.name + " reconnected without it"}, nil)
		}
	}
	targets := make([]*kilnv1.Target, len(h.GetTargets()))
	copy(targets, h.GetTargets())
	s.commits.enqueue(func(tx store.Tx) error {
		rec, err := tx.BuildServer(ss.name)
		if err != nil {
			return nil
		}
		rec.Targets = targets
		rec.LastSeen = timestamppb.New(now)
		if len(rec.GetPublicKey()) == 0 {
			rec.PublicKey = ss.key // pinned on first sight (pinKey)
		}
		return tx.PutBuildServer(rec)
	}, nil)
	s.dispatchLocked()
	return w, nil
}

// attemptsOfLocked lists the attempts held by build server name.
func (s *Server) attemptsOfLocked(name string) []*sched.Attempt {
	var out []*sched.Attempt
	for _, ab := range s.active {
		if a := ab.sb.Attempt; a != nil && a.Server.Name == name {
			out = append(out, a)
		}
	}
	return out
}

func (s *Server) disconnect(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ss.name] != ss {
		return
	}
	delete(s.sessions, ss.name)
	now := s.now()
	s.reconnectGraceLocked(ss.name, now)
	s.sched.Disconnect(ss.name)
	s.updateTargetMetricsLocked()
	s.commits.enqueue(func(tx store.Tx) error {
		rec, err := tx.BuildServer(ss.name)
		if err != nil {
			return nil
		}
		rec.LastSeen = timestamppb.New(now)
		return tx.PutBuildServer(rec)
	}, nil)
	s.log.Info("build server disconnected", "build_server", ss.name)
}

// reconnectGraceLocked gives the attempts of build server name, whose
// session just ended, ReconnectGrace to be reported by a new session before
// they are lost and their builds queued elsewhere (sched.LapseBy), and
// expires them as soon as it has passed. Not while the metaserver stops:
// Drain ended the sessions, and the next process waits a lease for them.
func (s *Server) reconnectGraceLocked(name string, now time.Time) {
	select {
	case <-s.closing:
		return
	default:
	}
	grace := s.cfg.ReconnectGrace
	if n := s.sched.LapseBy(name, now.Add(grace)); n > 0 {
		s.log.Info("build server's connection closed; its attempts wait for it to reconnect",
			"build_server", name, "attempts", n, "reconnect_grace", grace)
		// Just past the grace: Expired takes leases that ended before now.
		s.clock.AfterFunc(grace+time.Millisecond, s.expireLeases)
	}
}

func (s *Server) updateTargetMetricsLocked() {
	s.metrics.targets.Reset()
	for _, srv := range s.sched.Servers() {
		for _, t := range srv.Targets {
			s.metrics.targets.WithLabelValues(targetLabels(t.Info)...).Inc()
		}
	}
}

// handle processes one message of a session.
func (s *Server) handle(ss *session, msg *kilnv1.SessionRequest) error {
	switch m := msg.GetMsg().(type) {
	case *kilnv1.SessionRequest_Heartbeat:
		s.heartbeat(ss, m.Heartbeat)
	case *kilnv1.SessionRequest_Progress:
		s.progress(ss, m.Progress)
	case *kilnv1.SessionRequest_Log:
		return s.logChunk(ss, m.Log)
	case *kilnv1.SessionRequest_Result:
		s.result(ss, m.Result)
	case *kilnv1.SessionRequest_Hello:
		return status.Error(codes.InvalidArgument, "Hello only opens a session")
	default:
		return status.Error(codes.InvalidArgument, "unknown session message")
	}
	return nil
}

func (s *Server) heartbeat(ss *session, hb *kilnv1.Heartbeat) {
	s.mu.Lock()
	defer s.mu.Unlock()
	srv := s.sched.Server(ss.name)
	if srv == nil || s.sessions[ss.name] != ss {
		return
	}
	s.sched.Renew(srv, hb.GetRunningAttemptIds(), s.now().Add(s.cfg.Lease))
	if srv.Draining != hb.GetDraining() || srv.Busy != hb.GetBusy() {
		srv.Draining, srv.Busy = hb.GetDraining(), hb.GetBusy()
		s.sched.Refresh(srv)
		s.dispatchLocked()
	}
}

// ownAttemptLocked returns the attempt if it is current and held by ss's server.
func (s *Server) ownAttemptLocked(ss *session, id uint64) *sched.Attempt {
	a := s.sched.Attempt(id)
	if a == nil || a.Server.Name != ss.name {
		return nil
	}
	return a
}

func (s *Server) progress(ss *session, p *kilnv1.AttemptProgress) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.ownAttemptLocked(ss, p.GetAttemptId())
	if a == nil {
		return
	}
	if ab := s.active[a.Build.ID]; ab != nil {
		atts := ab.rec.GetBuild().GetAttempts()
		atts[len(atts)-1].Phase = p.GetPhase()
		s.changes.notify(a.Build.ID)
	}
}

func (s *Server) logChunk(ss *session, c *kilnv1.LogChunk) error {
	if len(c.GetData()) > maxLogChunk {
		return status.Errorf(codes.InvalidArgument, "log chunk of %d bytes exceeds %d", len(c.GetData()), maxLogChunk)
	}
	s.mu.Lock()
	a := s.ownAttemptLocked(ss, c.GetAttemptId())
	s.mu.Unlock()
	if a == nil {
		return nil // fenced: a stale attempt's log is dropped
	}
	if _, err := s.logs.append(a.Build.ID, attemptNumber(a.ID), c.GetOffset(), c.GetData()); err != nil {
		s.log.Warn("log chunk refused", "attempt_id", a.ID, "err", err)
		return nil
	}
	s.changes.notify(a.Build.ID)
	return nil
}

func (s *Server) result(ss *session, r *kilnv1.AttemptResult) {
	ack := func(ok bool, reason string) {
		ss.send(&kilnv1.SessionResponse{Msg: &kilnv1.SessionResponse_ResultAck{ResultAck: &kilnv1.ResultAck{
			AttemptId: r.GetAttemptId(), Accepted: ok, Reason: reason}}})
	}
	// An artifact sent with its result is verified before taking s.mu (it
	// is hashed) and kept, like a small upload, once the attempt is known
	// to be this server's.
	inline, badInline := r.GetArtifactData(), ""
	if len(inline) > 0 {
		art := r.GetArtifact()
		switch {
		case r.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED:
			// Nothing to store; the data is dropped below.
		case int64(len(inline)) > s.maxInlineResult():
			badInline = fmt.Sprintf("artifact of %d bytes sent with its result, more than the %d allowed", len(inline), s.maxInlineResult())
		default:
			if err := checkData(art.GetSha256(), art.GetSize(), inline); err != nil {
				badInline = "artifact sent with the result does not match it: " + err.Error()
			}
		}
		r = proto.Clone(r).(*kilnv1.AttemptResult)
		r.ArtifactData = nil // never stored with the attempt
	}
	// The artifact is checked against the target's claimed platform
	// before taking s.mu: it is read whole (artifactcheck.go).
	mismatch := ""
	var signed *signedStatement
	if r.GetOutcome() == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED && badInline == "" {
		signed, mismatch = openStatement(ss, r)
	}
	if r.GetOutcome() == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED && badInline == "" && mismatch == "" {
		var err error
		mismatch, err = s.inspectArtifact(ss, r, inline)
		if err != nil && ss.ctx.Err() != nil {
			return // the session ended: its build server sends the result again
		}
		if err != nil {
			s.log.Error("checking an artifact against its target failed", "build_server", ss.name, "attempt_id", r.GetAttemptId(), "err", err)
			badInline = "the metaserver could not check the artifact: " + err.Error()
		}
	}
	// A result that differs from its build's first one is compared with
	// it file by file (replicadiff.go), also before taking s.mu.
	var differing []string
	if r.GetOutcome() == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED && badInline == "" && mismatch == "" {
		differing = s.resultDiff(context.WithoutCancel(ss.ctx), r.GetAttemptId(), r.GetArtifact().GetSha256(), inline)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, revoked := s.revoked.Load(ss.name); revoked {
		ack(false, "credential revoked")
		return
	}
	// The result and the dispatch of the slot it frees share a transaction
	// (held under s.mu only: holds never overlap).
	defer s.commits.hold()()
	a := s.ownAttemptLocked(ss, r.GetAttemptId())
	if a == nil {
		if holder := s.heldAttemptLocked(r.GetAttemptId()); holder != "" && holder != ss.name {
			s.log.Warn("result refused: attempt of another build server", "build_server", ss.name,
				"attempt_id", r.GetAttemptId(), "holder", holder)
			ack(false, "attempt belongs to another build server")
			return
		}
		s.log.Info("result refused: attempt not current", "build_server", ss.name, "attempt_id", r.GetAttemptId())
		ack(false, "attempt is not current (lease lapsed, cancelled or unknown)")
		return
	}
	switch r.GetOutcome() {
	case kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED:
		art := r.GetArtifact()
		if badInline != "" {
			r.Outcome = kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED
			r.Reason = badInline
			break
		}
		if mismatch == "" && signed != nil {
			if mismatch = s.checkStatementLocked(signed, a, r); mismatch != "" {
				signed = nil
			}
		}
		if mismatch != "" {
			r = proto.Clone(r).(*kilnv1.AttemptResult)
			r.Outcome = kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_REJECTED
			r.Reason = mismatch
			if signed != nil { // the statement checked: the artifact did not
				s.distrustLocked(ss, a, mismatch)
			} else {
				s.log.Warn("result refused: bad provenance statement", "build_server", ss.name,
					"attempt_id", a.ID, "build_id", a.Build.ID, "reason", mismatch)
			}
			break
		}
		if len(inline) > 0 {
			_ = s.blobs.keep(art.GetSha256(), inline, true) // forced: never errPendingFull
			s.metrics.uploadBytes.Add(float64(len(inline)))
		}
		// Not cancelled with the session: a result received is judged.
		size, err := s.blobs.stat(context.WithoutCancel(ss.ctx), art.GetSha256())
		if err != nil || uint64(size) != art.GetSize() {
			r = proto.Clone(r).(*kilnv1.AttemptResult)
			r.Outcome = kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED
			r.Reason = fmt.Sprintf("artifact %s (%d bytes) was not uploaded", art.GetSha256(), art.GetSize())
		}
	}
	switch o := r.GetOutcome(); {
	case !o.Known():
		ack(false, "unknown outcome")
		return
	case !o.Ended():
		ack(false, "not a final outcome")
		return
	}
	if len(r.GetReason()) > maxReasonBytes || len(r.GetFailingStep()) > maxReasonBytes {
		r = proto.Clone(r).(*kilnv1.AttemptResult)
		r.Reason = truncate(r.GetReason(), maxReasonBytes)
		r.FailingStep = truncate(r.GetFailingStep(), maxReasonBytes)
	}
	if ab := s.active[a.Build.ID]; ab != nil && r.GetOutcome() == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		ab.differing = differing
		if signed != nil {
			ab.statement = signed
		}
	}
	s.endAttemptLocked(a, r, func(err error) {
		if err == nil {
			// A rejected result is recorded, but refused: its build
			// server learns why.
			ack(mismatch == "", mismatch)
		}
	})
}

// UploadArtifact implements kilnv1.WorkerServiceServer.
func (s *Server) UploadArtifact(stream kilnv1.WorkerService_UploadArtifactServer) error {
	name, _ := auth.BuildServer(stream.Context())
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "the first upload message must be the header")
	}
	if !cas.ValidDigest(h.GetSha256()) {
		return status.Error(codes.InvalidArgument, "header sha256 is not 64 lowercase hex digits")
	}
	if h.GetSize() > uint64(s.cfg.MaxArtifactBytes) {
		return status.Errorf(codes.InvalidArgument, "artifact of %d bytes exceeds the limit of %d", h.GetSize(), s.cfg.MaxArtifactBytes)
	}
	s.mu.Lock()
	a := s.sched.Attempt(h.GetAttemptId())
	own := a != nil && a.Server != nil && a.Server.Name == name
	busy := s.uploads[name] >= maxUploadsPerServer
	if own && !busy {
		s.uploads[name]++
	}
	s.mu.Unlock()
	if !own {
		return s.refuseAttempt(name, h.GetAttemptId())
	}
	if busy {
		return status.Errorf(codes.ResourceExhausted, "at most %d concurrent uploads per build server", maxUploadsPerServer)
	}
	defer func() {
		s.mu.Lock()
		s.uploads[name]--
		s.mu.Unlock()
	}()
	sha, size, err := s.receiveUpload(stream, h)
	if errors.Is(err, cas.ErrMismatch) {
		return status.Errorf(codes.DataLoss, "upload does not match its header: %v", err)
	}
	if err != nil {
		return err
	}
	s.metrics.uploadBytes.Add(float64(size))
	return stream.SendAndClose(&kilnv1.UploadArtifactResponse{Sha256: sha, Size: uint64(size)})
}

// receiveUpload reads an upload's data messages: into memory for a small
// artifact (kept until its result commits), else streamed into a file.
func (s *Server) receiveUpload(stream kilnv1.WorkerService_UploadArtifactServer, h *kilnv1.UploadHeader) (string, int64, error) {
	var got uint64
	next := func() ([]byte, error) {
		msg, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		data := msg.GetData()
		got += uint64(len(data))
		if got > h.GetSize() {
			return nil, status.Errorf(codes.InvalidArgument, "upload exceeds its declared size of %d bytes", h.GetSize())
		}
		return data, nil
	}
	if s.blobs.inline(h.GetSize()) {
		buf := make([]byte, 0, h.GetSize())
		for {
			data, err := next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return "", 0, err
			}
			buf = append(buf, data...)
		}
		if err := s.blobs.receive(h.GetSha256(), h.GetSize(), buf); err != nil {
			if errors.Is(err, errPendingFull) {
				return "", 0, status.Error(codes.ResourceExhausted, err.Error())
			}
			return "", 0, err
		}
		return h.GetSha256(), int64(len(buf)), nil
	}
	w, err := s.blobs.createFile(stream.Context())
	if err != nil {
		return "", 0, status.Errorf(codes.Internal, "creating blob: %v", err)
	}
	defer w.Abort()
	for {
		data, err := next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", 0, err
		}
		if _, err := w.Write(data); err != nil {
			return "", 0, status.Errorf(codes.Internal, "writing blob: %v", err)
		}
	}
	sha, size, err := s.blobs.commitFile(stream.Context(), w, h.GetSha256(), int64(h.GetSize()))
	if err != nil && !errors.Is(err, cas.ErrMismatch) {
		return "", 0, status.Errorf(codes.Internal, "storing blob: %v", err)
	}
	return sha, size, err
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
