package server

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/backoff"
	"github.com/kilnbuild/kiln/internal/manifest"
	"github.com/kilnbuild/kiln/internal/sched"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// What a volunteer may not do with a build it takes (the threat model: "a
// volunteer may stall or vanish, never hold a build past its time limit"),
// and what the metaserver does about it:
//
//   - Hold it: every attempt has a deadline, the build's time limit plus
//     TimeoutGrace from its start, heartbeats or not. Past it the build is
//     taken back (outcome LOST), the holder is cancelled and excluded from
//     the build for ExcludeFor.
//   - Take and lose it again and again: every lost attempt (setup failure,
//     lapsed lease, reconnect without it, held past its time) counts
//     against the build server; LossesBeforeAside in a row put it aside
//     (no new work) for AsideFor, doubling per further round, until a
//     final result. A build server losing the same build twice is
//     excluded from it for ExcludeFor.
//   - Exhaust the build's budget: a build's MaxInfraAttempts counts build
//     servers, not attempts; one volunteer's losses count once. Nor may it
//     burn the build's attempt numbers (maxAttemptsPerBuild) by handing
//     the build back as it gets it: a second RETURNED of one build by one
//     server excludes it from the build for ExcludeFor.
//
// Exclusions and put-aside times expire, so a build is never stuck behind
// its only matching volunteer; both survive a restart in the store.

// standing is what the metaserver holds in memory of one build server's
// lost attempts; each change is also committed to its record.
type standing struct {
	// losses counts attempts lost in a row since the last final result.
	losses     uint32
	asideUntil time.Time
	reason     string
	// operator is the operator behind the credential (operatorName), set
	// at restore and at each session's start.
	operator string
	// marked says why the server was marked for a lost dispute ("":
	// never); agreeing counts its agreeing results in a row per platform
	// identity (verify.go).
	marked   string
	agreeing map[string]uint32
}

// restoreStandings loads the build servers' standings at Open.
func (s *Server) restoreStandings(tx store.Tx) error {
	recs, err := tx.BuildServers()
	if err != nil {
		return err
	}
	for _, r := range recs {
		st := &standing{losses: r.GetConsecutiveLosses(), reason: r.GetPutAsideReason(),
			operator: operatorName(r), marked: r.GetMarked(), agreeing: r.GetAgreeingInRow()}
		if st.marked != "" {
			s.metrics.markedServers.Inc()
		}
		if r.GetPutAsideUntil() != nil {
			st.asideUntil = r.GetPutAsideUntil().AsTime()
		}
		s.standings[r.GetName()] = st
	}
	return nil
}

// standingLocked returns name's standing, created empty when unknown.
func (s *Server) standingLocked(name string) *standing {
	st := s.standings[name]
	if st == nil {
		st = &standing{}
		s.standings[name] = st
	}
	return st
}

// asideFor is how long a build server is put aside after losses attempts
// lost in a row, 0 when not now: every LossesBeforeAside-th loss, AsideFor
// doubled per earlier round, at most 16 times.
func (s *Server) asideFor(losses uint32) time.Duration {
	limit := uint32(s.cfg.LossesBeforeAside)
	if losses == 0 || losses%limit != 0 {
		return 0
	}
	return backoff.Exponential{Base: s.cfg.AsideFor, Max: 16 * s.cfg.AsideFor}.Delay(int(losses / limit))
}

// lossLocked counts an attempt lost by build server name and puts it aside
// when that makes too many in a row. The decision takes effect at once
// (the build just lost may be dispatched in the same critical section) and
// is committed to the server's record.
func (s *Server) lossLocked(name string, now time.Time, reason string) {
	st := s.standingLocked(name)
	st.losses++
	losses := st.losses
	d := s.asideFor(losses)
	if d > 0 {
		st.asideUntil = now.Add(d)
		st.reason = fmt.Sprintf("%d attempts lost in a row; the last: %s", losses, reason)
		if srv := s.sched.Server(name); srv != nil {
			srv.PutAsideUntil = st.asideUntil
			s.sched.Refresh(srv)
		}
		s.log.Warn("build server put aside after repeated lost attempts", "build_server", name,
			"consecutive_losses", losses, "aside_for", d, "last_reason", reason)
		s.clock.AfterFunc(d, s.kickDispatch)
	}
	until, why := st.asideUntil, st.reason
	s.commits.enqueue(func(tx store.Tx) error {
		rec, err := tx.BuildServer(name)
		if err != nil {
			return nil // deleted meanwhile: nothing to count
		}
		rec.ConsecutiveLosses = losses
		rec.AttemptsLost++
		if d > 0 {
			rec.PutAsideUntil = timestamppb.New(until)
			rec.PutAsideReason = why
		}
		return tx.PutBuildServer(rec)
	}, nil)
}

// upgradeExclusions returns rec's exclusions for the scheduler. Names an
// older metaserver excluded for good (excluded_build_servers) become
// exclusions that end at legacyUntil, moved into excluded_until so that
// the build's next commit completes the upgrade.
func upgradeExclusions(rec *store.Build, legacyUntil time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for name, until := range rec.GetExcludedUntil() {
		out[name] = until.AsTime()
	}
	for _, name := range rec.GetExcludedBuildServers() {
		if _, ok := out[name]; !ok {
			out[name] = legacyUntil
			if rec.ExcludedUntil == nil {
				rec.ExcludedUntil = map[string]*timestamppb.Timestamp{}
			}
			rec.ExcludedUntil[name] = timestamppb.New(legacyUntil)
		}
	}
	rec.ExcludedBuildServers = nil
	return out
}

// excludeLocked keeps build server name from getting ab for ExcludeFor
// (committed with the build's next record).
func (s *Server) excludeLocked(ab *activeBuild, name string, now time.Time) {
	ab.sb.Exclude(name, now, now.Add(s.cfg.ExcludeFor))
	m := make(map[string]*timestamppb.Timestamp, len(ab.sb.Excluded))
	for n, until := range ab.sb.Excluded {
		m[n] = timestamppb.New(until)
	}
	ab.rec.ExcludedUntil = m
}

// lostBefore reports whether build server name lost an earlier attempt of
// b (all but the last, the one ending now): one whose outcome counts as a
// loss in the outcome table.
func lostBefore(b *kilnv1.Build, name string) bool {
	return endedBefore(b, name, func(o kilnv1.AttemptOutcome) bool { return o.Rule().Loss })
}

// repeatedBefore reports whether build server name lost an earlier attempt
// of b or ended one with outcome o (kilnv1.ExcludeOnRepeat).
func repeatedBefore(b *kilnv1.Build, name string, o kilnv1.AttemptOutcome) bool {
	return endedBefore(b, name, func(earlier kilnv1.AttemptOutcome) bool {
		return earlier == o || earlier.Rule().Loss
	})
}

// endedBefore reports whether an earlier attempt of b (all but the last)
// on build server name ended with an outcome that match accepts.
func endedBefore(b *kilnv1.Build, name string, match func(kilnv1.AttemptOutcome) bool) bool {
	atts := b.GetAttempts()
	for _, a := range atts[:max(len(atts)-1, 0)] {
		if a.GetBuildServer() == name && match(a.GetOutcome()) {
			return true
		}
	}
	return false
}

// timeLimit is rec's time limit, the manifest's timeout.
func timeLimit(rec *store.Build) time.Duration {
	if t := rec.GetRecipe().GetTimeoutSeconds(); t > 0 {
		return time.Duration(t) * time.Second
	}
	return manifest.DefaultTimeout
}

// attemptLimit is how long one attempt of rec may hold it: its time limit
// plus TimeoutGrace.
func (s *Server) attemptLimit(rec *store.Build) time.Duration {
	return timeLimit(rec) + s.cfg.TimeoutGrace
}

// takeBackOverdueLocked ends the attempts held past their deadline and
// queues their builds again, away from their holders.
func (s *Server) takeBackOverdueLocked(now time.Time) {
	for _, a := range s.sched.Overdue(now) {
		ab := s.active[a.Build.ID]
		limit := "its time limit"
		if ab != nil {
			limit = fmt.Sprintf("its time limit of %s plus %s grace", timeLimit(ab.rec), s.cfg.TimeoutGrace)
			s.excludeLocked(ab, a.Server.Name, now)
		}
		reason := fmt.Sprintf("held by %s past %s without a result", a.Server.Name, limit)
		s.log.Warn("attempt held past its deadline: build taken back", "attempt_id", a.ID, "build_id", a.Build.ID,
			"build_server", a.Server.Name, "deadline", a.Deadline)
		if sess := s.sessions[a.Server.Name]; sess != nil {
			sess.send(&kilnv1.SessionResponse{Msg: &kilnv1.SessionResponse_Cancel{Cancel: &kilnv1.CancelAttempt{AttemptId: a.ID, Reason: reason}}})
		}
		s.endAttemptLocked(a, &kilnv1.AttemptResult{AttemptId: a.ID, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_LOST, Reason: reason}, nil)
	}
}

// expireUnmatchedLocked ends EXPIRED the queued builds that no connected
// target could take for ExpireUnmatchedAfter; their waiters are mailed why.
func (s *Server) expireUnmatchedLocked(now time.Time) {
	after := s.cfg.ExpireUnmatchedAfter
	if after < 0 {
		return
	}
	for _, b := range s.sched.Unmatched(now, after) {
		ab := s.active[b.ID]
		if ab == nil {
			continue
		}
		reasons := s.sched.WaitingReasons(b, now)
		failure := fmt.Sprintf("expired: no connected target matched for %s (%s)", after, strings.Join(reasons, "; "))
		s.finishLocked(ab, kilnv1.BuildState_BUILD_STATE_EXPIRED, failure, "")
	}
}

// expiryCheckInterval is how often the queue is checked for unmatched
// builds: a twentieth of ExpireUnmatchedAfter, at most 30s (each check
// tests every queued build against every class of targets).
func (s *Server) expiryCheckInterval() time.Duration {
	return min(s.cfg.ExpireUnmatchedAfter/20, 30*time.Second)
}

// applyStandingLocked gives a newly connected server its put-aside time:
// reconnecting does not end it.
func (s *Server) applyStandingLocked(srv *sched.Server) {
	st := s.standingLocked(srv.Name)
	srv.PutAsideUntil = st.asideUntil
	srv.Operator = s.operatorLocked(srv.Name)
	srv.Marked = st.marked != ""
}
