package server

import (
	"context"
	"errors"
	"regexp"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/mail"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Request groups: requests one requester submitted together (startcompile
// check) and is mailed about once.
//
//	Submit(group G) ──▶ G opened for the email (first request), or joined
//	      │              (same email, same mail mode, not sealed)
//	SealGroup(G), or an hour after G opened (sweepGroups)
//	      ▼
//	sealed ── every request's build final (or the request withdrawn) ──▶ done:
//	          the summary mail queued in the transaction that saw it
//
// Everything is in the store and decided inside the transaction that
// changes it (the request's, the build's last, the seal's), so a restart
// loses nothing and never mails twice: done_at is set with the mail.

// groupIDRE is what a group id looks like: long enough to be unguessable
// when drawn at random, short enough to key a record.
var groupIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)

// groupSealAfter seals a group its client never sealed (it died after
// submitting): its summary then goes once the builds it holds end.
const groupSealAfter = time.Hour

// groupKeepDone is how long a done group is kept before the sweep deletes
// it, so the groups the sweep reads stay about those of the last week. A
// deleted group's id could open a new group; check draws a new one every
// time, so nobody's summary is touched.
const groupKeepDone = 7 * 24 * time.Hour

// maxGroupRequests bounds the requests of one group (a check over every
// platform of a large farm stays far below).
const maxGroupRequests = 1000

// groupFields checks and defaults the group and mail fields of req before
// anything else is looked at.
func groupFields(req *kilnv1.SubmitRequest) (string, kilnv1.MailMode, error) {
	g, m := req.GetGroup(), req.GetMail()
	if _, ok := kilnv1.MailMode_name[int32(m)]; !ok {
		return "", 0, invalid("mail", "unknown mail mode %d", m)
	}
	if g == "" {
		if m == kilnv1.MailMode_MAIL_MODE_SUMMARY {
			return "", 0, invalid("mail", "a summary mail needs a request group: the builds it sums up")
		}
		if m == kilnv1.MailMode_MAIL_MODE_UNSPECIFIED {
			m = kilnv1.MailMode_MAIL_MODE_EACH
		}
		return "", m, nil
	}
	if !groupIDRE.MatchString(g) {
		return "", 0, invalid("group", "a request group id is 16 to 64 characters of A-Z, a-z, 0-9, _ and -")
	}
	if m == kilnv1.MailMode_MAIL_MODE_UNSPECIFIED {
		m = kilnv1.MailMode_MAIL_MODE_SUMMARY
	}
	return g, m, nil
}

// checkGroup refuses r when its group belongs to another requester, is
// sealed, full, or mails another way. For a grouped request it returns
// holding groupMu, released by the returned func once the request is
// committed, so nobody else opens the group between the check and the
// commit.
func (s *Server) checkGroup(r *resolved) (func(), error) {
	if r.group == "" {
		return func() {}, nil
	}
	s.groupMu.Lock()
	var g *store.RequestGroup
	err := s.st.View(func(tx store.Tx) error {
		var err error
		g, err = tx.RequestGroup(r.group)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return s.groupMu.Unlock, nil
	}
	if err == nil {
		err = groupRefusal(g, r.email, r.mail)
	} else {
		err = status.Errorf(codes.Unavailable, "reading request group: %v", err)
	}
	if err != nil {
		s.groupMu.Unlock()
		return nil, err
	}
	return s.groupMu.Unlock, nil
}

// groupRefusal says why a request of email with mode may not join g.
func groupRefusal(g *store.RequestGroup, email string, mode kilnv1.MailMode) error {
	switch {
	case g.GetEmail() != email:
		return status.Error(codes.PermissionDenied, "request group belongs to another requester: draw a new group id")
	case g.GetSealed():
		return status.Error(codes.FailedPrecondition, "request group is sealed: no request joins it any more")
	case g.GetMail() != mode:
		return invalid("mail", "request group mails %s, not %s", mailWord(g.GetMail()), mailWord(mode))
	case len(g.GetRequestIds()) >= maxGroupRequests:
		return status.Errorf(codes.ResourceExhausted, "request group holds %d requests, the most one may", maxGroupRequests)
	}
	return nil
}

// mailWord is a mail mode as startcompile's --mail spells it.
func mailWord(m kilnv1.MailMode) string {
	switch m {
	case kilnv1.MailMode_MAIL_MODE_EACH:
		return "each"
	case kilnv1.MailMode_MAIL_MODE_SUMMARY:
		return "summary"
	case kilnv1.MailMode_MAIL_MODE_NONE:
		return "none"
	}
	return "unspecified"
}

// joinGroupTx adds request id to r's group inside the request's own
// transaction, opening the group with the first request. checkGroup ran
// under groupMu, which the caller still holds: nothing here refuses, as a
// change the committer runs must not fail.
func (s *Server) joinGroupTx(tx store.Tx, r *resolved, id uint64) error {
	if r.group == "" {
		return nil
	}
	g, err := tx.RequestGroup(r.group)
	switch {
	case errors.Is(err, store.ErrNotFound):
		g = &store.RequestGroup{Id: r.group, Email: r.email, Mail: r.mail, CreatedAt: timestamppb.New(s.now())}
	case err != nil:
		return err
	default:
		// checkGroup refused what may not join; groupMu kept it so.
		g = proto.Clone(g).(*store.RequestGroup)
	}
	g.RequestIds = append(g.RequestIds, id)
	return tx.PutRequestGroup(g)
}

// mailedEach keeps the requests mailed about their own build: those not
// asking for a summary or for no mail.
func mailedEach(reqs []*store.Request) []*store.Request {
	out := reqs[:0:0]
	for _, r := range reqs {
		if m := r.GetMail(); m == kilnv1.MailMode_MAIL_MODE_SUMMARY || m == kilnv1.MailMode_MAIL_MODE_NONE {
			continue
		}
		out = append(out, r)
	}
	return out
}

// groupsAfterFinalTx finishes, inside the transaction that ends build
// final, the groups of its waiting requests whose last build it was.
func (s *Server) groupsAfterFinalTx(tx store.Tx, final *kilnv1.Build, waiting []*store.Request) error {
	seen := map[string]bool{}
	for _, r := range waiting {
		if r.GetGroup() == "" || seen[r.GetGroup()] {
			continue
		}
		seen[r.GetGroup()] = true
		if err := s.finishGroupTx(tx, r.GetGroup(), final); err != nil {
			return err
		}
	}
	return nil
}

// finishGroupTx marks group id done and queues its summary when it is
// sealed and every build of it is final. final, when not nil, is a build
// ended in this same transaction (its record may not be written yet).
func (s *Server) finishGroupTx(tx store.Tx, id string, final *kilnv1.Build) error {
	g, err := tx.RequestGroup(id)
	if errors.Is(err, store.ErrNotFound) {
		return nil // done and deleted long ago: nothing waits on it
	}
	if err != nil {
		return err
	}
	if !g.GetSealed() || g.GetDoneAt() != nil {
		return nil
	}
	builds, complete, err := groupBuilds(tx, g, final)
	if err != nil || !complete {
		return err
	}
	g = proto.Clone(g).(*store.RequestGroup)
	g.DoneAt = timestamppb.New(s.now())
	if err := tx.PutRequestGroup(g); err != nil {
		return err
	}
	hook, ok := s.cfg.Notifier.(GroupHook)
	if !ok || g.GetMail() != kilnv1.MailMode_MAIL_MODE_SUMMARY || len(builds) == 0 {
		return nil
	}
	s.log.Info("request group done", "group", g.GetId(), "builds", len(builds))
	return hook.GroupFinished(tx, g, builds)
}

// groupBuilds returns the builds of g's requests not withdrawn, each once,
// and whether every one is final. final, when not nil, overrides the
// stored record of the same build.
func groupBuilds(tx store.Tx, g *store.RequestGroup, final *kilnv1.Build) ([]*kilnv1.Build, bool, error) {
	var builds []*kilnv1.Build
	listed := map[uint64]bool{}
	for _, rid := range g.GetRequestIds() {
		r, err := tx.Request(rid)
		if err != nil {
			return nil, false, err
		}
		if r.GetWithdrawnAt() != nil {
			continue
		}
		b := final
		if b == nil || b.GetId() != r.GetBuildId() {
			rec, err := tx.Build(r.GetBuildId())
			if err != nil {
				return nil, false, err
			}
			b = rec.GetBuild()
		}
		if !b.GetState().Final() {
			return nil, false, nil
		}
		if !listed[b.GetId()] {
			listed[b.GetId()] = true
			builds = append(builds, b)
		}
	}
	return builds, true, nil
}

// SealGroup implements kilnv1.CompileServiceServer.
func (s *Server) SealGroup(_ context.Context, req *kilnv1.SealGroupRequest) (*kilnv1.SealGroupResponse, error) {
	if !groupIDRE.MatchString(req.GetGroup()) {
		return nil, invalid("group", "a request group id is 16 to 64 characters of A-Z, a-z, 0-9, _ and -")
	}
	email, err := mail.ValidateAddress(req.GetEmail())
	if err != nil {
		return nil, invalid("email", "invalid email address %q: %v", req.GetEmail(), err)
	}
	// Checked first, committed after: a change the committer runs must
	// not fail (a failed commit stops the server), and groupMu keeps the
	// group as checked until it is.
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	var g *store.RequestGroup
	err = s.st.View(func(tx store.Tx) error {
		var err error
		g, err = tx.RequestGroup(req.GetGroup())
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Error(codes.NotFound, "no such request group")
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading request group: %v", err)
	}
	if g.GetEmail() != email {
		return nil, status.Error(codes.PermissionDenied, "request group belongs to another requester")
	}
	n := len(g.GetRequestIds())
	if g.GetSealed() {
		return &kilnv1.SealGroupResponse{Requests: uint32(n)}, nil
	}
	err = s.commits.wait(func(tx store.Tx) error {
		g, err := tx.RequestGroup(req.GetGroup())
		if err != nil {
			return err
		}
		g = proto.Clone(g).(*store.RequestGroup)
		g.Sealed = true
		if err := tx.PutRequestGroup(g); err != nil {
			return err
		}
		return s.finishGroupTx(tx, g.GetId(), nil)
	})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "sealing request group: %v", err)
	}
	return &kilnv1.SealGroupResponse{Requests: uint32(n)}, nil
}

// sweepGroups seals the groups opened more than groupSealAfter ago and
// finishes the sealed groups whose builds all ended without telling (a
// request withdrawn last). It reads every group (and the requests of the
// sealed ones not done) once a sampling interval and commits only the
// groups it changes.
func (s *Server) sweepGroups() {
	cutoff := s.now().Add(-groupSealAfter)
	old := s.now().Add(-groupKeepDone)
	var due, stale []string
	err := s.st.View(func(tx store.Tx) error {
		return tx.RequestGroups(func(g *store.RequestGroup) error {
			if g.GetDoneAt() != nil {
				if g.GetDoneAt().AsTime().Before(old) {
					stale = append(stale, g.GetId())
				}
				return nil
			}
			if !g.GetSealed() && g.GetCreatedAt().AsTime().Before(cutoff) {
				due = append(due, g.GetId())
				return nil
			}
			if g.GetSealed() {
				_, complete, err := groupBuilds(tx, g, nil)
				if err != nil {
					return err
				}
				if complete {
					due = append(due, g.GetId())
				}
			}
			return nil
		})
	})
	if err != nil {
		s.log.Warn("sweeping request groups", "err", err)
		return
	}
	// Under groupMu, like a submit: a group is never sealed (nor deleted)
	// between a submit's check and its commit.
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	if len(stale) > 0 {
		s.commits.enqueue(func(tx store.Tx) error {
			for _, id := range stale {
				if err := tx.DeleteRequestGroup(id); err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
			}
			return nil
		}, func(err error) {
			if err != nil {
				s.log.Warn("deleting old request groups", "groups", len(stale), "err", err)
			}
		})
	}
	for _, id := range due {
		ch := make(chan error, 1)
		s.commits.enqueue(func(tx store.Tx) error {
			g, err := tx.RequestGroup(id)
			if err != nil {
				return err
			}
			if !g.GetSealed() {
				g = proto.Clone(g).(*store.RequestGroup)
				g.Sealed = true
				if err := tx.PutRequestGroup(g); err != nil {
					return err
				}
			}
			return s.finishGroupTx(tx, id, nil)
		}, func(err error) { ch <- err })
		// The committer may have stopped (the server is stopping): then
		// nothing commits, and the next process sweeps again.
		select {
		case err := <-ch:
			if err != nil {
				s.log.Warn("sealing request group", "group", id, "err", err)
			}
		case <-s.commits.done:
			return
		}
	}
}
