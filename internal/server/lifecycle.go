package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jonboulle/clockwork"

	"github.com/kilnbuild/kiln/internal/backoff"
	"github.com/kilnbuild/kiln/internal/cachekey"
	"github.com/kilnbuild/kiln/internal/sched"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// maxAttemptsPerBuild bounds attempt numbers: an attempt id is the build id
// shifted left by 8 bits plus the attempt's number (1..255), so ids are
// unique across restarts without a separate sequence.
const maxAttemptsPerBuild = 255

func attemptID(buildID uint64, n int) uint64 { return buildID<<8 | uint64(n) }

// attemptNumber returns the 1-based attempt number encoded in id.
func attemptNumber(id uint64) int { return int(id & 0xff) }

// putBuild enqueues a commit of ab's current record (a snapshot: later
// in-memory changes do not race with the encoder).
func (s *Server) putBuild(ab *activeBuild, extra func(store.Tx) error, after func(error)) {
	extra, after = s.withEndedLogsLocked(ab, extra, after)
	s.putRecord(proto.Clone(ab.rec).(*store.Build), extra, after)
}

// putFinalLocked enqueues the commit of ab's final record (finishLocked)
// with ab's ended logs.
func (s *Server) putFinalLocked(ab *activeBuild, extra func(store.Tx) error, after func(error)) {
	extra, after = s.withEndedLogsLocked(ab, extra, after)
	b := ab.rec.GetBuild()
	sts := s.agreeingStatementsLocked(b)
	if len(sts) == 0 || b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
		s.putRecord(ab.rec, extra, after)
		return
	}
	rec, at := ab.rec, b.GetFinishedAt().AsTime()
	s.commits.enqueue(func(tx store.Tx) error {
		logged, err := s.logProvenance(tx, rec, sts, at)
		if err != nil {
			return err
		}
		if err := tx.PutBuild(logged); err != nil {
			return err
		}
		if extra != nil {
			return extra(tx)
		}
		return nil
	}, after)
}

// endedLog is an ended attempt's log held in memory (see keepLogLocked).
type endedLog struct {
	build uint64
	n     int
	data  []byte
}

// withEndedLogsLocked makes extra also write ab's ended logs, in the same
// transaction as the record that ends their attempts, and after report them
// stored once committed.
func (s *Server) withEndedLogsLocked(ab *activeBuild, extra func(store.Tx) error, after func(error)) (func(store.Tx) error, func(error)) {
	logs := ab.endedLogs
	if len(logs) == 0 {
		return extra, after
	}
	ab.endedLogs = nil
	return func(tx store.Tx) error {
			for _, l := range logs {
				if err := tx.PutLog(l.build, l.n, l.data); err != nil {
					return err
				}
			}
			if extra != nil {
				return extra(tx)
			}
			return nil
		}, func(err error) {
			if err == nil {
				for _, l := range logs {
					s.logs.kept(l.build, l.n)
				}
			}
			if after != nil {
				after(err)
			}
		}
}

// putRecord enqueues a commit of rec, which nobody may change any more.
func (s *Server) putRecord(rec *store.Build, extra func(store.Tx) error, after func(error)) {
	s.commits.enqueue(func(tx store.Tx) error {
		if err := tx.PutBuild(rec); err != nil {
			return err
		}
		if extra != nil {
			return extra(tx)
		}
		return nil
	}, after)
}

// dispatchLocked hands queued builds to free targets. Called under s.mu
// after every event that may free a target or queue a build.
func (s *Server) dispatchLocked() {
	now := s.now()
	s.sched.Dispatch(now, func(b *sched.Build, t *sched.Target) bool {
		ab := s.active[b.ID]
		sess := s.sessions[t.Server.Name]
		if ab == nil || sess == nil {
			return false
		}
		if sess.ctx.Err() != nil {
			return true // closing: its build server reconnects and reports
		}
		rec := ab.rec
		build := rec.GetBuild()
		n := len(build.GetAttempts()) + 1
		if n > maxAttemptsPerBuild {
			s.finishLocked(ab, kilnv1.BuildState_BUILD_STATE_ERROR, "too many attempts", "")
			return true
		}
		id := attemptID(b.ID, n)
		sa := s.sched.Start(b, t, id, now.Add(s.cfg.Lease))
		sa.Deadline = now.Add(s.attemptLimit(rec))
		s.logs.started(b.ID, n)
		queuedSince := build.GetCreatedAt().AsTime()
		if k := len(build.GetAttempts()); k > 0 {
			queuedSince = build.GetAttempts()[k-1].GetFinishedAt().AsTime()
		}
		s.metrics.queueWait.Observe(now.Sub(queuedSince).Seconds())
		build.State = kilnv1.BuildState_BUILD_STATE_RUNNING
		if build.StartedAt == nil {
			build.StartedAt = timestamppb.New(now)
		}
		if len(build.GetReplicas()) == 0 {
			// A replica keeps the first result's platform: its target
			// has the same identity (verify.go), the cache key says so.
			build.Platform = t.Info
		}
		build.Attempts = append(build.Attempts, &kilnv1.Attempt{
			Id: id, BuildServer: t.Server.Name, TargetId: t.ID,
			Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RUNNING, StartedAt: timestamppb.New(now),
		})
		asg := &kilnv1.Assignment{
			AttemptId: id, BuildId: b.ID, TargetId: t.ID, Project: build.GetProject(),
			GitUrl: rec.GetGitUrl(), Commit: build.GetCommit(), Options: build.GetOptions(), Recipe: rec.GetRecipe(),
			Dependencies: assignmentDependencies(build), Constraints: build.GetConstraints(),
		}
		s.putBuild(ab, nil, func(err error) {
			if err == nil {
				sess.send(&kilnv1.SessionResponse{Msg: &kilnv1.SessionResponse_Assignment{Assignment: asg}})
				s.metrics.dispatchDelay.Observe(s.clock.Since(now).Seconds())
			}
		})
		s.log.Debug("dispatched", "build_id", b.ID, "attempt_id", id, "build_server", t.Server.Name, "target", t.ID, "jobs", t.Jobs())
		s.changes.notify(b.ID)
		return true
	})
}

// keepLogLocked ends an attempt's log (see logFiles.forget) and returns its
// size. A log held in memory is written to the store in the same
// transaction as the build's next record (putBuild, finishLocked), the one
// that ends the attempt: were it committed alone, a crash before the record
// would restore the attempt as running, its build server would resend the
// log into a file, and the stale copy in the store would hide it. Without
// an active build (ab nil) there is no such record and it is written alone.
func (s *Server) keepLogLocked(ab *activeBuild, buildID uint64, n int) int64 {
	size, inline := s.logs.forget(buildID, n)
	switch {
	case inline == nil:
	case len(inline) == 0:
		s.logs.kept(buildID, n) // nothing to keep
	case ab != nil:
		ab.endedLogs = append(ab.endedLogs, endedLog{build: buildID, n: n, data: inline})
	default:
		s.commits.enqueue(func(tx store.Tx) error { return tx.PutLog(buildID, n, inline) }, func(err error) {
			if err == nil {
				s.logs.kept(buildID, n)
			}
		})
	}
	return size
}

// kickDispatch runs a dispatch round from outside the lock (timers).
func (s *Server) kickDispatch() {
	s.mu.Lock()
	s.dispatchLocked()
	s.mu.Unlock()
}

// endAttemptLocked records how attempt a ended and decides what becomes of
// its build: final, or queued again. after runs once the change is on disk.
func (s *Server) endAttemptLocked(a *sched.Attempt, r *kilnv1.AttemptResult, after func(error)) {
	ab := s.active[a.Build.ID]
	s.sched.Finish(a)
	if ab == nil {
		s.keepLogLocked(nil, a.Build.ID, attemptNumber(a.ID))
		if after != nil {
			after(nil)
		}
		return
	}
	now := s.now()
	build := ab.rec.GetBuild()
	att := build.GetAttempts()[len(build.GetAttempts())-1]
	att.Outcome = r.GetOutcome()
	att.FinishedAt = timestamppb.New(now)
	att.Reason = r.GetReason()
	att.CompilerCache = r.GetCompilerCache()
	att.Phase = kilnv1.Phase_PHASE_UNSPECIFIED
	build.LogSize = uint64(s.keepLogLocked(ab, a.Build.ID, attemptNumber(a.ID)))
	s.metrics.attempts.WithLabelValues(r.GetOutcome().Word()).Inc()
	serverName := a.Server.Name

	// What the outcome does is its row in the outcome table
	// (proto/kiln/v1/outcomes.go); this applies it.
	o := r.GetOutcome()
	rule := o.Rule()
	if rule.Result {
		s.serverCountLocked(serverName, rule.Build == kilnv1.BuildState_BUILD_STATE_SUCCEEDED)
		// A result is verified before it is trusted (verify.go).
		differing := ab.differing
		ab.differing = nil
		if s.resultLocked(ab, a, r, differing, after) {
			s.dispatchLocked()
			return
		}
	}
	if rule.Build.Final() {
		failure, step := rule.Reason(r.GetReason()), ""
		switch rule.Build {
		case kilnv1.BuildState_BUILD_STATE_SUCCEEDED:
			build.Artifact = r.GetArtifact()
			build.CacheKey = cachekey.KeyWithDeps(ab.rec.GetSourceKey(), build.GetPlatform(), artifactDeps(build))
			failure = ""
		case kilnv1.BuildState_BUILD_STATE_FAILED:
			step = r.GetFailingStep()
		}
		s.finishLocked(ab, rule.Build, failure, step, after)
		s.dispatchLocked()
		return
	}
	s.retryLocked(ab, a, r, now, after)
	s.dispatchLocked()
}

// retryLocked applies an outcome that queues the build again (an
// infrastructure failure: SETUP_FAILED, LOST, REFUSED, RETURNED,
// REJECTED): the build server's standing, the build's budget, the
// exclusion and the delay its rule says.
func (s *Server) retryLocked(ab *activeBuild, a *sched.Attempt, r *kilnv1.AttemptResult, now time.Time, after func(error)) {
	build := ab.rec.GetBuild()
	serverName := a.Server.Name
	o := r.GetOutcome()
	rule := o.Rule()
	lostAgain := lostBefore(build, serverName)
	if rule.Loss {
		s.lossLocked(serverName, now, rule.Reason(r.GetReason()))
	}
	// The budget counts build servers, not attempts: a second loss by a
	// server that lost this build before does not count, so that one
	// volunteer taking and losing a build again and again cannot make it
	// ERROR (standing.go).
	if rule.Infra && !lostAgain {
		ab.rec.InfraAttempts++
	}
	if int(ab.rec.GetInfraAttempts()) >= s.cfg.MaxInfraAttempts {
		s.finishLocked(ab, kilnv1.BuildState_BUILD_STATE_ERROR, attemptReasons(build), "", after)
		return
	}
	switch rule.Exclude {
	case kilnv1.ExcludeAlways:
		s.excludeLocked(ab, serverName, now)
	case kilnv1.ExcludeOnRepeat:
		if repeatedBefore(build, serverName, o) {
			s.excludeLocked(ab, serverName, now)
		}
	}
	delay := time.Duration(0)
	if rule.Backoff {
		delay = retryDelay(int(ab.rec.GetInfraAttempts()))
	}
	build.State = kilnv1.BuildState_BUILD_STATE_QUEUED
	ab.sb.NotBefore = now.Add(delay)
	ab.rec.NotBefore = timestamppb.New(ab.sb.NotBefore)
	s.sched.Enqueue(ab.sb)
	s.log.Info("attempt ended; build queued again", "build_id", build.GetId(), "attempt_id", a.ID,
		"outcome", o.Word(), "reason", r.GetReason(), "infra_attempts", ab.rec.GetInfraAttempts(), "retry_in", delay)
	s.putBuild(ab, nil, after)
	if delay > 0 {
		s.clock.AfterFunc(delay, s.kickDispatch)
	}
	s.changes.notify(build.GetId())
}

// retryDelay is the wait before a build is dispatched again after its n-th
// infrastructure failure: 200ms, 400ms, ... up to 10s.
func retryDelay(n int) time.Duration {
	return backoff.Exponential{Base: 200 * time.Millisecond, Max: 10 * time.Second}.Delay(n)
}

func attemptReasons(b *kilnv1.Build) string {
	var parts []string
	for _, a := range b.GetAttempts() {
		parts = append(parts, fmt.Sprintf("attempt %d on %s: %s (%s)", attemptNumber(a.GetId()), a.GetBuildServer(), a.GetOutcome().Word(), a.GetReason()))
	}
	return "gave up after infrastructure failures: " + strings.Join(parts, "; ")
}

// finishLocked makes ab final: the record, the cache entry for a success,
// the requests marked notified and the notifications queued, all in one
// transaction.
func (s *Server) finishLocked(ab *activeBuild, state kilnv1.BuildState, failure, step string, after ...func(error)) {
	build := ab.rec.GetBuild()
	if a := build.GetAttempts(); len(a) > 0 {
		if last := a[len(a)-1]; last.GetOutcome() == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RUNNING {
			if sa := s.sched.Attempt(last.GetId()); sa != nil {
				s.sched.Finish(sa)
			}
			s.keepLogLocked(ab, build.GetId(), attemptNumber(last.GetId()))
			last.Outcome = kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_CANCELLED
			last.FinishedAt = timestamppb.New(s.now())
			last.Reason = failure
		}
	}
	build.State = state
	build.FinishedAt = timestamppb.New(s.now())
	build.Failure = failure
	build.FailingStep = step
	ab.rec.NotBefore = nil
	s.untrack(ab)
	s.metrics.finished.WithLabelValues(state.Word()).Inc()
	// Untracked, the record is final: nothing changes it any more, so it is
	// committed and handed to the notifier as it is, without a copy.
	final := build
	// The cache entry: a verified artifact, or a not-reproducible build's
	// results kept for inspection (never answering a request: fromCache).
	var art *store.Artifact
	shas, inline := s.pendingReplicaBlobs(build)
	if state == kilnv1.BuildState_BUILD_STATE_SUCCEEDED ||
		build.GetVerification() == kilnv1.Verification_VERIFICATION_NOT_REPRODUCIBLE {
		art = s.cacheEntryLocked(ab)
		art.CreatedAt, art.LastUsed = build.GetFinishedAt(), build.GetFinishedAt()
	}
	// An earlier result made the entry already (awaitReplicaLocked).
	newEntry := len(build.GetReplicas()) <= 1
	logTail := ""
	if state != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
		logTail = s.logs.tail(final.GetId(), currentLog(final), 8<<10)
	}
	var cb func(error)
	if len(after) > 0 {
		cb = after[0]
	}
	s.putFinalLocked(ab, func(tx store.Tx) error {
		if art != nil {
			if err := tx.PutArtifact(art); err != nil {
				return err
			}
		}
		if err := putReplicaBlobs(tx, inline); err != nil {
			return err
		}
		reqs, err := tx.RequestsForBuild(final.GetId())
		if err != nil {
			return err
		}
		var waiting []*store.Request
		for _, r := range reqs {
			if r.GetNotified() {
				continue
			}
			waiting = append(waiting, r)
			r = proto.Clone(r).(*store.Request)
			r.Notified = true
			if err := tx.PutRequest(r); err != nil {
				return err
			}
		}
		if s.cfg.Notifier != nil {
			if err := s.cfg.Notifier.BuildFinished(tx, final, mailedEach(waiting), logTail); err != nil {
				return err
			}
		}
		return s.groupsAfterFinalTx(tx, final, waiting)
	}, func(err error) {
		// Forgotten before cb acknowledges the result: whoever learns of
		// the commit finds the artifacts stored, no longer pending.
		if err == nil {
			// The cache entry names the artifacts now: no longer pending.
			for _, sha := range shas {
				s.blobs.committed(sha)
			}
			if art != nil && newEntry {
				s.cacheAdded(int64(art.GetArtifact().GetSize()))
			}
		}
		if cb != nil {
			cb(err)
		}
		s.changes.notify(final.GetId())
	})
	s.log.Info("build finished", "build_id", build.GetId(), "state", state.Word(), "failure", failure)
	s.dependencyFinishedLocked(final)
}

// serverCountLocked counts a final result for a build server; a success
// also starts its lost attempts in a row again from zero and ends its time
// put aside.
func (s *Server) serverCountLocked(name string, ok bool) {
	st := s.standingLocked(name)
	// Only a success ends a run of losses: a FAILED result costs a
	// volunteer nothing to report (it may lie, or fail a build it asked
	// for itself), so two losses and a failure, again and again, must not
	// keep it from being put aside (red team).
	if ok {
		st.losses = 0
		st.asideUntil, st.reason = time.Time{}, ""
		if srv := s.sched.Server(name); srv != nil {
			srv.PutAsideUntil = time.Time{}
			s.sched.Refresh(srv)
		}
	}
	s.commits.enqueue(func(tx store.Tx) error {
		rec, err := tx.BuildServer(name)
		if err != nil {
			return nil // deleted meanwhile: nothing to count
		}
		if ok {
			rec.BuildsSucceeded++
		} else {
			rec.BuildsFailed++
		}
		if ok {
			rec.ConsecutiveLosses = 0
			rec.PutAsideUntil, rec.PutAsideReason = nil, ""
		}
		return tx.PutBuildServer(rec)
	}, nil)
}

// leaseTick is how often the lease loop runs a round.
func (s *Server) leaseTick() time.Duration { return min(s.cfg.HeartbeatInterval/2, time.Second) }

// leaseLoop runs a lease round (leaseRoundLocked) at every tick until ctx
// is done.
func (s *Server) leaseLoop(ctx context.Context, tick clockwork.Ticker) {
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.Chan():
		}
		s.mu.Lock()
		s.leaseRoundLocked(s.now())
		s.mu.Unlock()
	}
}

// leaseRoundLocked expires attempts whose build server stopped
// heartbeating, takes back those held past their deadline, expires builds
// nothing matched for too long (once an expiryCheckInterval), forgets
// uploads whose result never came and dispatches what that freed. Called
// under s.mu.
func (s *Server) leaseRoundLocked(now time.Time) {
	s.blobs.expire(now) // under s.mu: result and finish read pending blobs under it
	s.expireLeasesLocked(now)
	s.takeBackOverdueLocked(now)
	if now.Sub(s.expiryChecked) >= s.expiryCheckInterval() {
		s.expiryChecked = now
		s.expireUnmatchedLocked(now)
	}
	s.dispatchLocked()
}

// expireLeases ends the attempts whose lease lapsed and dispatches their
// builds again at once (a timer's call, after a reconnect grace).
func (s *Server) expireLeases() {
	select {
	case <-s.closing:
		return
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLeasesLocked(s.now())
	s.dispatchLocked()
}

// expireLeasesLocked ends as LOST the attempts whose lease lapsed before
// now: their build server stopped heartbeating, or its connection closed
// and it did not reconnect within the grace (reconnectGraceLocked).
func (s *Server) expireLeasesLocked(now time.Time) {
	for _, a := range s.sched.Expired(now) {
		reason := "lease lapsed: no heartbeat from " + a.Server.Name
		if a.Detached {
			reason = "lease lapsed: " + a.Server.Name + " did not reconnect"
		}
		s.log.Warn("lease lapsed", "attempt_id", a.ID, "build_id", a.Build.ID, "build_server", a.Server.Name, "detached", a.Detached)
		if sess := s.sessions[a.Server.Name]; sess != nil {
			sess.send(&kilnv1.SessionResponse{Msg: &kilnv1.SessionResponse_Cancel{Cancel: &kilnv1.CancelAttempt{AttemptId: a.ID, Reason: "lease lapsed"}}})
		}
		s.endAttemptLocked(a, &kilnv1.AttemptResult{AttemptId: a.ID, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_LOST, Reason: reason}, nil)
	}
}

// viewLocked returns the public view of an active build with its computed fields.
func (s *Server) viewLocked(ab *activeBuild) *kilnv1.Build {
	b := proto.Clone(ab.rec.GetBuild()).(*kilnv1.Build)
	b.Waiters = uint32(ab.waiters)
	if ab.sb.Queued() {
		b.QueuePosition = uint32(s.sched.QueuePosition(ab.sb))
		b.WaitingReasons = s.sched.WaitingReasons(ab.sb, s.now())
	} else if b.GetState() == kilnv1.BuildState_BUILD_STATE_QUEUED {
		b.WaitingReasons = dependencyWaits(b)
	}
	if a := ab.sb.Attempt; a != nil {
		b.LogSize = uint64(s.logs.size(b.GetId(), attemptNumber(a.ID)))
	}
	return b
}

// build returns the current view of any build.
func (s *Server) build(id uint64) (*kilnv1.Build, error) {
	s.mu.Lock()
	if ab, ok := s.active[id]; ok {
		b := s.viewLocked(ab)
		s.mu.Unlock()
		return b, nil
	}
	s.mu.Unlock()
	var b *kilnv1.Build
	err := s.st.View(func(tx store.Tx) error {
		rec, err := tx.Build(id)
		if err != nil {
			return err
		}
		b = redactLegacy(rec.GetBuild())
		return nil
	})
	return b, err
}
