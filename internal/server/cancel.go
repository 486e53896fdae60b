package server

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/mail"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Cancelling. A requester withdraws only its own wait; a build is
// cancelled when nobody waits on it any more, or by an administrator:
//
//	Cancel(email) ──▶ its requests: notified, withdrawn_at (one commit); waiters -= n
//	                    ├── waiters > 0 ──▶ the build goes on, the others are mailed as usual
//	                    └── waiters = 0 ──▶ cancelLocked(withdrawnReason): mailed to nobody
//	AdminCancel(reason) ───────────────────▶ cancelLocked(reason): every waiter mailed
//
// Neither path records who cancelled. A build's failure and its attempts'
// reasons are public (pages, JSON, the other requesters' mail, the hooks,
// the build server's CancelAttempt), so they never hold an email address.

// withdrawnReason is the failure of a build whose last waiter withdrew.
const withdrawnReason = "withdrawn by its last requester"

// Cancel implements kilnv1.CompileServiceServer.
func (s *Server) Cancel(ctx context.Context, req *kilnv1.CancelRequest) (*kilnv1.CancelResponse, error) {
	email, err := mail.ValidateAddress(req.GetEmail())
	if err != nil {
		return nil, invalid("email", "invalid email address: %v", err)
	}
	// Each call confirms or denies that an address waits on a build:
	// bounded like Submit, so guessing addresses is slow.
	if addr := peerKey(ctx); !s.addrLimiter.allow(addr, s.now()) {
		return nil, status.Errorf(codes.ResourceExhausted, "too many requests from address %s; try again in a minute", addr)
	}
	id := req.GetBuildId()
	n, err := s.withdraw(id, email)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	ab := s.active[id]
	if ab == nil {
		// Ended meanwhile; the withdrawn requests were not mailed.
		s.mu.Unlock()
		return s.cancelResponse(id)
	}
	ab.waiters = max(ab.waiters-n, 0)
	if ab.waiters > 0 {
		left := ab.waiters
		s.mu.Unlock()
		s.log.Info("wait withdrawn", "build_id", id, "requests", n, "waiters", left)
		return s.cancelResponse(id)
	}
	done := make(chan error, 1)
	s.cancelLocked(ab, withdrawnReason, func(err error) { done <- err })
	s.mu.Unlock()
	if err := <-done; err != nil {
		return nil, status.Errorf(codes.Unavailable, "storing cancellation: %v", err)
	}
	return s.cancelResponse(id)
}

// withdraw marks every request of email on build id that still waits as
// notified and withdrawn, in one commit, and returns how many it marked
// (at least one). A refusal (a gRPC status error) changes nothing:
// NOT_FOUND for an unknown build, PERMISSION_DENIED when email never
// asked for it, FAILED_PRECONDITION when nothing of email's waits any more.
func (s *Server) withdraw(id uint64, email string) (int, error) {
	var refusal error
	marked := 0
	now := timestamppb.New(s.now())
	check := func(tx store.Tx, mark bool) error {
		refusal, marked = nil, 0
		rec, err := tx.Build(id)
		if errors.Is(err, store.ErrNotFound) {
			refusal = status.Errorf(codes.NotFound, "no build %d", id)
			return nil
		}
		if err != nil {
			return err
		}
		reqs, err := tx.RequestsForBuild(id)
		if err != nil {
			return err
		}
		asked := false
		var open []*store.Request
		for _, r := range reqs {
			if r.GetEmail() != email {
				continue
			}
			asked = true
			if !r.GetNotified() {
				open = append(open, r)
			}
		}
		switch {
		case !asked:
			refusal = status.Errorf(codes.PermissionDenied, "%s has no wait on build %d: a requester may withdraw only its own wait", email, id)
		case len(open) == 0 && rec.GetBuild().GetState().Final():
			refusal = status.Errorf(codes.FailedPrecondition, "build %d is already %s", id, rec.GetBuild().GetState().Word())
		case len(open) == 0:
			refusal = status.Errorf(codes.FailedPrecondition, "the wait of %s on build %d is already withdrawn", email, id)
		}
		if refusal != nil || !mark {
			return nil
		}
		for _, r := range open {
			r = proto.Clone(r).(*store.Request)
			r.Notified = true
			r.WithdrawnAt = now
			if err := tx.PutRequest(r); err != nil {
				return err
			}
		}
		marked = len(open)
		return nil
	}
	// A read first: a refused call (a stranger's, say) writes nothing.
	if err := s.st.View(func(tx store.Tx) error { return check(tx, false) }); err != nil {
		return 0, status.Errorf(codes.Unavailable, "reading build %d: %v", id, err)
	}
	if refusal != nil {
		return 0, refusal
	}
	// Then the commit, which decides: it follows every change enqueued
	// before it (a finish that already mailed these requests, say).
	if err := s.commits.wait(func(tx store.Tx) error { return check(tx, true) }); err != nil {
		return 0, status.Errorf(codes.Unavailable, "storing the withdrawal: %v", err)
	}
	if refusal != nil {
		return 0, refusal
	}
	return marked, nil
}

// cancel stops a queued or running build on an administrator's authority.
func (s *Server) cancel(id uint64, reason string) (*kilnv1.CancelResponse, error) {
	done := make(chan error, 1)
	s.mu.Lock()
	ab := s.active[id]
	if ab == nil {
		s.mu.Unlock()
		b, err := s.build(id)
		if err != nil {
			return nil, buildError(id, err)
		}
		return nil, status.Errorf(codes.FailedPrecondition, "build %d is already %s", id, b.GetState().Word())
	}
	s.cancelLocked(ab, reason, func(err error) { done <- err })
	s.mu.Unlock()
	if err := <-done; err != nil {
		return nil, status.Errorf(codes.Unavailable, "storing cancellation: %v", err)
	}
	return s.cancelResponse(id)
}

// cancelLocked ends ab CANCELLED with reason, which is public: it tells
// ab's build server to stop the attempt, and ab's requests still waiting
// are notified. after runs once that is committed.
func (s *Server) cancelLocked(ab *activeBuild, reason string, after func(error)) {
	if a := ab.sb.Attempt; a != nil {
		if sess := s.sessions[a.Server.Name]; sess != nil {
			sess.send(&kilnv1.SessionResponse{Msg: &kilnv1.SessionResponse_Cancel{Cancel: &kilnv1.CancelAttempt{AttemptId: a.ID, Reason: reason}}})
		}
	}
	s.finishLocked(ab, kilnv1.BuildState_BUILD_STATE_CANCELLED, reason, "", after)
	s.dispatchLocked()
}

// cancelResponse answers Cancel with the build as it is now.
func (s *Server) cancelResponse(id uint64) (*kilnv1.CancelResponse, error) {
	b, err := s.build(id)
	if err != nil {
		return nil, buildError(id, err)
	}
	return &kilnv1.CancelResponse{Build: b}, nil
}

// legacyCancelPrefix began the failure of a build a requester cancelled
// before waits were withdrawn one by one: "cancelled by ada@example.org".
// Stores written then still hold such builds; their address is never
// served (redactLegacy).
const legacyCancelPrefix = "cancelled by "

// redactLegacy returns b, or a copy of it without the requester's address
// when b is a build cancelled that way (its failure and the reason of the
// attempt it stopped). b itself is not changed.
func redactLegacy(b *kilnv1.Build) *kilnv1.Build {
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_CANCELLED {
		return b
	}
	dirty := legacyReason(b.GetFailure())
	for _, a := range b.GetAttempts() {
		dirty = dirty || legacyReason(a.GetReason())
	}
	if !dirty {
		return b
	}
	b = proto.Clone(b).(*kilnv1.Build)
	if legacyReason(b.GetFailure()) {
		b.Failure = legacyCancelPrefix + "a requester"
	}
	for _, a := range b.GetAttempts() {
		if legacyReason(a.GetReason()) {
			a.Reason = legacyCancelPrefix + "a requester"
		}
	}
	return b
}

// legacyReason reports whether reason is "cancelled by " and an address.
func legacyReason(reason string) bool {
	rest, ok := strings.CutPrefix(reason, legacyCancelPrefix)
	return ok && strings.Contains(rest, "@")
}
