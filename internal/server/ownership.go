package server

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/store"
)

// Why two codes for an attempt a build server may not speak for: an
// attempt given to ANOTHER build server is a question of who the caller is
// (PermissionDenied: authenticated, but not yours), while the caller's own
// attempt that is no longer current, or an id nobody was ever given, is a
// question of state (FailedPrecondition: the lease lapsed, the build was
// cancelled or retried elsewhere; an honest build server meets it after a
// reconnect and must not treat it as a credential problem).

// refuseAttempt is the status for an upload by build server name naming
// attempt id, which is not a current attempt of name: PermissionDenied
// when the attempt was given to another build server (current or past),
// FailedPrecondition otherwise. Called without s.mu: it may read the store.
func (s *Server) refuseAttempt(name string, id uint64) error {
	holder := s.attemptHolder(id)
	if holder != "" && holder != name {
		s.log.Warn("upload refused: attempt of another build server", "build_server", name,
			"attempt_id", id, "holder", holder)
		return status.Error(codes.PermissionDenied, "attempt belongs to another build server")
	}
	return status.Error(codes.FailedPrecondition, "attempt is not a current attempt of this build server")
}

// attemptHolder returns the build server attempt id was given to, current
// or past, or "" when no such attempt is known. It takes s.mu itself and
// reads the store for builds no longer in memory.
func (s *Server) attemptHolder(id uint64) string {
	s.mu.Lock()
	holder := s.heldAttemptLocked(id)
	s.mu.Unlock()
	if holder != "" {
		return holder
	}
	var rec *store.Build
	err := s.st.View(func(tx store.Tx) error {
		var err error
		rec, err = tx.Build(attemptBuild(id))
		return err
	})
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("looking up an attempt's build server", "attempt_id", id, "err", err)
		}
		return ""
	}
	for _, at := range rec.GetBuild().GetAttempts() {
		if at.GetId() == id {
			return at.GetBuildServer()
		}
	}
	return ""
}

// heldAttemptLocked returns the build server attempt id was given to as
// far as memory knows (a current attempt, or any attempt of a build still
// active), or "". The caller holds s.mu.
func (s *Server) heldAttemptLocked(id uint64) string {
	if a := s.sched.Attempt(id); a != nil && a.Server != nil {
		return a.Server.Name
	}
	if ab := s.active[attemptBuild(id)]; ab != nil {
		for _, at := range ab.rec.GetBuild().GetAttempts() {
			if at.GetId() == id {
				return at.GetBuildServer()
			}
		}
	}
	return ""
}

// attemptBuild returns the build id encoded in attempt id (see attemptID).
func attemptBuild(id uint64) uint64 { return id >> 8 }
