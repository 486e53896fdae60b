package server

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/cachekey"
	"github.com/kilnbuild/kiln/internal/platform"
	"github.com/kilnbuild/kiln/internal/sched"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Trust: an artifact is served on the word of a quorum of operators, never
// of one stranger (docs/trust.md). This file is the one home of that rule:
//
//   - Every successful result of a build is a replica (Build.replicas),
//     with the operator behind its build server's credential.
//   - verdict tallies them: VERIFIED when at least the build's quorum of
//     distinct operators agree on one sha256 and they are a majority of
//     the operators that answered; NOT_REPRODUCIBLE when MaxResults
//     operators answered without that; else UNVERIFIED (one answer so
//     far) or DISPUTED (answers differ).
//   - A build not yet settled is queued again as a replica
//     (sched.Build.Replica): narrowed to the first result's platform
//     identity, never for an operator that already answered. Its
//     artifact answers requests that accept unverified results (cache,
//     mail) and nobody else.
//   - A settled dispute marks the build servers whose results lost; their
//     results elsewhere that are not settled stop counting (re-checked by
//     other operators), their new results count for nothing, and they get
//     no new work (sched.Server.Marked) until an administrator revokes
//     the credential (or gives the machine a new one).
//   - Reputation: each build server's agreeing results in a row, per
//     platform identity. With a quorum above 2, a first agreement of
//     build servers that all have TrustAfter of them needs one operator
//     fewer; never fewer than 2 (reputationQuorum).
//
// Replicas run one after another, not at once: a replica needs the first
// result's platform identity (a request may leave it free), and a build
// that one operator alone can serve must not tie up a second.
//
// buildSettledLocked is the event a build's verification ending raises;
// signed provenance hooks there.

// operatorName is the operator behind a build server record: its own, or
// for a credential without one, its implicit operator "server:NAME"
// (operator names cannot hold ':', so the two never meet).
func operatorName(rec *store.BuildServer) string {
	if op := rec.GetOperator(); op != "" {
		return op
	}
	return implicitOperator(rec.GetName())
}

func implicitOperator(server string) string { return "server:" + server }

// quorum is how many operators must agree (Config.Quorum, at least 1).
func (s *Server) quorum() int { return max(s.cfg.Quorum, 1) }

// maxResults is how many operators a disputed build may ask before it is
// NOT_REPRODUCIBLE (Config.MaxResults, at least the quorum).
func (s *Server) maxResults(quorum int) int {
	if s.cfg.MaxResults > 0 {
		return max(s.cfg.MaxResults, quorum)
	}
	return quorum + 1
}

// identityText names a platform identity for people and records: its
// identity fields' values, "/"-joined ("linux/x86_64/little/LP64/glibc").
func identityText(info *kilnv1.SystemInfo) string {
	vals := make([]string, len(platform.IdentityFields))
	for i, f := range platform.IdentityFields {
		vals[i] = platform.Value(info, f)
	}
	return strings.Join(vals, "/")
}

// verdict is what the replicas of a build say.
type verdict struct {
	state kilnv1.Verification
	// leader is the artifact most operators agree on (the first such on a
	// tie); nil when the leading answer is a failed build.
	leader *kilnv1.Artifact
	// agreeing are the build servers whose counted results agree with the
	// leader, in the order they came.
	agreeing []string
	// operators is how many distinct operators answered (counted results).
	operators int
	// shas are the distinct artifacts answered, leader first.
	shas []string
}

// answer is the key results are tallied by: the sha256, or "" for a
// failed build.
func answer(r *kilnv1.Replica) string { return r.GetArtifact().GetSha256() }

// firstDiffering returns the artifacts of b's first result and of the
// first result that differs from it ("" when there are none).
func firstDiffering(b *kilnv1.Build) (string, string) {
	first := ""
	for _, r := range b.GetReplicas() {
		switch sha := answer(r); {
		case sha == "":
		case first == "":
			first = sha
		case sha != first:
			return first, sha
		}
	}
	return "", ""
}

// decide tallies reps: each operator's first counted result is its one
// vote (a second server of one operator never counts twice).
func decide(reps []*kilnv1.Replica, quorum, maxResults int) verdict {
	votes := map[string][]*kilnv1.Replica{}
	var order []string
	voted := map[string]bool{}
	for _, r := range reps {
		if r.GetDiscounted() != "" || voted[r.GetOperator()] {
			continue
		}
		voted[r.GetOperator()] = true
		k := answer(r)
		if _, ok := votes[k]; !ok {
			order = append(order, k)
		}
		votes[k] = append(votes[k], r)
	}
	v := verdict{operators: len(voted)}
	if len(order) == 0 {
		v.state = kilnv1.Verification_VERIFICATION_UNVERIFIED
		return v
	}
	best := order[0]
	for _, k := range order[1:] {
		if len(votes[k]) > len(votes[best]) {
			best = k
		}
	}
	v.leader = votes[best][0].GetArtifact()
	for _, r := range votes[best] {
		v.agreeing = append(v.agreeing, r.GetBuildServer())
	}
	v.shas = append(v.shas, best)
	for _, k := range order {
		if k != best {
			v.shas = append(v.shas, k)
		}
	}
	n := len(votes[best])
	switch {
	case n >= quorum && 2*n > v.operators:
		v.state = kilnv1.Verification_VERIFICATION_VERIFIED
	case v.operators >= maxResults:
		v.state = kilnv1.Verification_VERIFICATION_NOT_REPRODUCIBLE
	case len(order) > 1:
		v.state = kilnv1.Verification_VERIFICATION_DISPUTED
	default:
		v.state = kilnv1.Verification_VERIFICATION_UNVERIFIED
	}
	return v
}

// reputationQuorum lowers quorum by one for a build whose leading results
// all come from build servers with at least trustAfter agreeing results in
// a row on the build's platform identity (BOINC's adaptive replication),
// but never below 2: a single result is never verified, whatever its
// server's record (a quorum of 1 is the administrator's own choice).
func reputationQuorum(quorum int, agreeing []string, inRow func(server string) uint32, trustAfter int) int {
	if quorum <= 2 || trustAfter <= 0 || len(agreeing) < 2 {
		return quorum
	}
	for _, name := range agreeing {
		if int(inRow(name)) < trustAfter {
			return quorum
		}
	}
	return max(quorum-1, 2)
}

// verdictLocked decides b's verification with its quorum and the
// reputation of the build servers that agree.
func (s *Server) verdictLocked(b *kilnv1.Build) verdict {
	q := int(b.GetQuorum())
	limit := s.maxResults(q)
	v := decide(b.GetReplicas(), q, limit)
	if v.state == kilnv1.Verification_VERIFICATION_VERIFIED {
		return v
	}
	key := identityText(b.GetPlatform())
	if rq := reputationQuorum(q, v.agreeing, func(name string) uint32 { return s.standingLocked(name).agreeing[key] }, s.cfg.TrustAfter); rq < q {
		if w := decide(b.GetReplicas(), rq, limit); w.state == kilnv1.Verification_VERIFICATION_VERIFIED {
			return w
		}
	}
	return v
}

// resultLocked records result r of attempt a as one of its build's
// replicas and applies the verdict. It reports false, changing nothing,
// for a failure of a build without successful results: the outcome table
// applies then as to any result (a failing build is not replicated).
func (s *Server) resultLocked(ab *activeBuild, a *sched.Attempt, r *kilnv1.AttemptResult, differing []string, after func(error)) bool {
	build := ab.rec.GetBuild()
	ok := r.GetOutcome() == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED
	if !ok && len(build.GetReplicas()) == 0 {
		return false
	}
	if build.GetQuorum() == 0 {
		build.Quorum = uint32(s.quorum())
	}
	rep := &kilnv1.Replica{AttemptId: a.ID, BuildServer: a.Server.Name, Operator: s.operatorLocked(a.Server.Name)}
	if ok {
		rep.Artifact = r.GetArtifact()
		if st := ab.statement; st != nil && st.attempt == a.ID {
			rep.Statement = st.envelope
		}
	}
	ab.statement = nil
	if m := s.standingLocked(a.Server.Name).marked; m != "" {
		rep.Discounted = "its build server is marked: " + m
	}
	build.Replicas = append(build.Replicas, rep)
	if build.GetCacheKey() == "" {
		build.CacheKey = cachekey.KeyWithDeps(ab.rec.GetSourceKey(), build.GetPlatform(), artifactDeps(build))
	}
	if len(differing) > 0 && len(build.GetDifferingFiles()) == 0 {
		build.DifferingFiles = differing
	}
	s.applyVerdictLocked(ab, after)
	return true
}

// applyVerdictLocked sets ab's verification from its replicas and acts on
// it: finish a settled build, or queue it for another operator's result.
func (s *Server) applyVerdictLocked(ab *activeBuild, after func(error)) {
	build := ab.rec.GetBuild()
	v := s.verdictLocked(build)
	build.Verification = v.state
	build.AgreeingBuildServers = v.agreeing
	if v.leader != nil {
		build.Artifact = v.leader
	}
	s.metrics.replicaResults.WithLabelValues(v.state.Word()).Inc()
	switch v.state {
	case kilnv1.Verification_VERIFICATION_VERIFIED:
		s.settleLocked(ab, v)
		if v.leader == nil {
			// The failure is what was verified: a lone success's
			// artifact (kept with its replica) is not the build's.
			build.Artifact = nil
			s.finishLocked(ab, kilnv1.BuildState_BUILD_STATE_FAILED,
				fmt.Sprintf("the build fails: %d operators agree (%s)", len(v.agreeing), strings.Join(v.agreeing, ", ")), "", after)
		} else {
			s.finishLocked(ab, kilnv1.BuildState_BUILD_STATE_SUCCEEDED, "", "", after)
		}
		s.buildSettledLocked(build)
	case kilnv1.Verification_VERIFICATION_NOT_REPRODUCIBLE:
		why := fmt.Sprintf("not reproducible: %d operators produced %d different results", v.operators, len(v.shas))
		if files := build.GetDifferingFiles(); len(files) > 0 {
			why += "; differing files: " + strings.Join(files, ", ")
		}
		shaA, shaB := firstDiffering(build)
		s.finishLocked(ab, kilnv1.BuildState_BUILD_STATE_FAILED, truncate(why, maxReasonBytes), "", func(err error) {
			if after != nil {
				after(err)
			}
			if err == nil {
				s.diffoscopeLater(build.GetId(), shaA, shaB)
			}
		})
		s.buildSettledLocked(build)
	default:
		s.awaitReplicaLocked(ab, after)
	}
}

// replicaSchedLocked makes ab's scheduler build a replica when ab has
// results but is not settled: narrowed to the first result's platform
// identity, for operators without a result.
func (s *Server) replicaSchedLocked(ab *activeBuild) {
	build := ab.rec.GetBuild()
	if len(build.GetReplicas()) == 0 || build.GetState().Final() {
		return
	}
	sb := ab.sb
	sb.Replica = true
	sb.Quorum = int(build.GetQuorum())
	sb.HaveOperators = map[string]bool{}
	for _, r := range build.GetReplicas() {
		sb.HaveOperators[r.GetOperator()] = true
	}
	sb.Constraints = narrowTo(build.GetConstraints(), build.GetPlatform())
}

// awaitReplicaLocked queues ab for another operator's result and keeps
// its artifact so far for requests that accept unverified results: a
// cache entry of its verification (never answering a default request),
// and mail to the waiters that accept it, in the build's commit.
func (s *Server) awaitReplicaLocked(ab *activeBuild, after func(error)) {
	build := ab.rec.GetBuild()
	first := len(build.GetReplicas()) == 1
	build.State = kilnv1.BuildState_BUILD_STATE_QUEUED
	s.replicaSchedLocked(ab)
	ab.sb.NotBefore = time.Time{}
	ab.rec.NotBefore = nil
	s.sched.Enqueue(ab.sb)
	art := s.cacheEntryLocked(ab)
	shas, inline := s.pendingReplicaBlobs(build)
	var view *kilnv1.Build
	if build.GetArtifact() != nil {
		// What a waiter that accepts unverified results is told: the
		// build succeeded, unverified.
		view = proto.Clone(build).(*kilnv1.Build)
		view.State = kilnv1.BuildState_BUILD_STATE_SUCCEEDED
		view.FinishedAt = timestamppb.New(s.now())
	}
	s.log.Info("result recorded; build waits for more operators", "build_id", build.GetId(),
		"verification", build.GetVerification().Word(), "results", len(build.GetReplicas()), "quorum", build.GetQuorum())
	s.putBuild(ab, func(tx store.Tx) error {
		if err := putReplicaBlobs(tx, inline); err != nil {
			return err
		}
		if art != nil {
			if err := tx.PutArtifact(art); err != nil {
				return err
			}
		}
		if view == nil {
			return nil
		}
		return s.notifyUnverifiedTx(tx, view)
	}, func(err error) {
		// As in finishLocked: no longer pending before after acknowledges.
		if err == nil {
			for _, sha := range shas {
				s.blobs.committed(sha)
			}
			if first && art != nil {
				s.cacheAdded(int64(art.GetArtifact().GetSize()))
			}
		}
		if after != nil {
			after(err)
		}
	})
	s.changes.notify(build.GetId())
}

// notifyUnverifiedTx mails the waiters of view's build that accept
// unverified results and were not told yet, and marks them told.
func (s *Server) notifyUnverifiedTx(tx store.Tx, view *kilnv1.Build) error {
	reqs, err := tx.RequestsForBuild(view.GetId())
	if err != nil {
		return err
	}
	var waiting []*store.Request
	for _, r := range reqs {
		if r.GetNotified() || !r.GetAcceptUnverified() {
			continue
		}
		waiting = append(waiting, r)
		r = proto.Clone(r).(*store.Request)
		r.Notified = true
		if err := tx.PutRequest(r); err != nil {
			return err
		}
	}
	if len(waiting) == 0 || s.cfg.Notifier == nil {
		return nil
	}
	return s.cfg.Notifier.BuildFinished(tx, view, waiting, "")
}

// cacheEntryLocked is ab's cache entry as its verification stands: its
// leading artifact, and every other result's blob kept with it. nil
// without an artifact.
func (s *Server) cacheEntryLocked(ab *activeBuild) *store.Artifact {
	build := ab.rec.GetBuild()
	if build.GetArtifact() == nil {
		return nil
	}
	now := timestamppb.New(s.now())
	return &store.Artifact{
		CacheKey: build.GetCacheKey(), SourceKey: ab.rec.GetSourceKey(), BuildId: build.GetId(),
		Artifact: build.GetArtifact(), Platform: build.GetPlatform(), Project: build.GetProject(), Commit: build.GetCommit(),
		CreatedAt: now, LastUsed: now, Verification: build.GetVerification(), KeptSha256: keptShas(build),
	}
}

// keptShas are the artifacts of b's results other than its own artifact:
// a dispute's other side, kept for inspection.
func keptShas(b *kilnv1.Build) []string {
	var out []string
	seen := map[string]bool{b.GetArtifact().GetSha256(): true}
	for _, r := range b.GetReplicas() {
		if sha := answer(r); sha != "" && !seen[sha] {
			seen[sha] = true
			out = append(out, sha)
		}
	}
	return out
}

// pendingReplicaBlobs returns the sha256 of every result of b and the data
// of those held in memory (small uploads not committed yet).
func (s *Server) pendingReplicaBlobs(b *kilnv1.Build) ([]string, map[string][]byte) {
	var shas []string
	inline := map[string][]byte{}
	for _, r := range b.GetReplicas() {
		sha := answer(r)
		if sha == "" {
			continue
		}
		shas = append(shas, sha)
		if data := s.blobs.pendingData(sha); data != nil {
			inline[sha] = data
		}
	}
	return shas, inline
}

func putReplicaBlobs(tx store.Tx, inline map[string][]byte) error {
	keys := make([]string, 0, len(inline))
	for sha := range inline {
		keys = append(keys, sha)
	}
	sort.Strings(keys)
	for _, sha := range keys {
		if err := tx.PutBlob(sha, inline[sha]); err != nil {
			return err
		}
	}
	return nil
}

// settleLocked acts on a verified build: the build servers that agree
// gain reputation on its platform identity; those whose results lost are
// marked (when others settled it: the verdict is a majority of operators).
func (s *Server) settleLocked(ab *activeBuild, v verdict) {
	build := ab.rec.GetBuild()
	key := identityText(build.GetPlatform())
	won := answer(&kilnv1.Replica{Artifact: v.leader})
	for _, r := range build.GetReplicas() {
		switch {
		case r.GetDiscounted() != "":
		case answer(r) == won:
			if len(v.agreeing) >= 2 { // agreement needs another; a quorum of 1 earns nothing
				s.agreedLocked(r.GetBuildServer(), key)
			}
		default:
			r.Discounted = fmt.Sprintf("lost the dispute: %d operators agree on another result", len(v.agreeing))
			if hits := cacheHits(build, r.GetAttemptId()); hits > 0 {
				// The project's own earlier builds on this volunteer
				// filled the compiler cache this result drew on: a
				// project can poison it (docs/trust.md), so the loss
				// is not proof against the volunteer.
				r.Discounted += fmt.Sprintf(" (its compiler cache served %d compilations: the build server is not marked)", hits)
				continue
			}
			s.markLocked(r.GetBuildServer(), fmt.Sprintf("its result of build %d lost a dispute that %s settled",
				build.GetId(), strings.Join(v.agreeing, ", ")), build.GetId())
		}
	}
}

// cacheHits is how many compilations the compiler cache served attempt
// id of build b (0 when it used none).
func cacheHits(b *kilnv1.Build, id uint64) uint64 {
	for _, a := range b.GetAttempts() {
		if a.GetId() == id {
			return uint64(a.GetCompilerCache().GetHits())
		}
	}
	return 0
}

// agreedLocked counts an agreeing result for build server name on the
// platform identity key.
func (s *Server) agreedLocked(name, key string) {
	st := s.standingLocked(name)
	if st.agreeing == nil {
		st.agreeing = map[string]uint32{}
	}
	st.agreeing[key]++
	n := st.agreeing[key]
	s.commits.enqueue(func(tx store.Tx) error {
		rec, err := tx.BuildServer(name)
		if err != nil {
			return nil // deleted meanwhile
		}
		if rec.AgreeingInRow == nil {
			rec.AgreeingInRow = map[string]uint32{}
		}
		rec.AgreeingInRow[key] = n
		return tx.PutBuildServer(rec)
	}, nil)
}

// markLocked marks build server name for a lost dispute (of build
// settled): its reputation is gone, an administrator sees it on
// /buildservers and in kiln_build_servers_marked, it gets no new work
// (its results would count for nothing), and its results of builds not
// yet settled stop counting: other operators check them again.
func (s *Server) markLocked(name, reason string, settled uint64) {
	st := s.standingLocked(name)
	if st.marked == "" {
		s.metrics.markedServers.Inc()
	}
	st.marked = reason
	st.agreeing = nil
	if srv := s.sched.Server(name); srv != nil {
		srv.Marked = true // no more work: its results count for nothing
	}
	s.metrics.disputesLost.Inc()
	s.log.Warn("build server marked: its result lost a dispute", "build_server", name, "reason", reason)
	s.commits.enqueue(func(tx store.Tx) error {
		rec, err := tx.BuildServer(name)
		if err != nil {
			return nil
		}
		rec.DisputesLost++
		rec.Marked = reason
		rec.AgreeingInRow = nil
		return tx.PutBuildServer(rec)
	}, nil)
	for id, other := range s.active {
		if id == settled {
			continue
		}
		b := other.rec.GetBuild()
		changed := false
		for _, r := range b.GetReplicas() {
			if r.GetBuildServer() == name && r.GetDiscounted() == "" {
				r.Discounted = "checked again: its build server lost a dispute on build " + strconv.FormatUint(settled, 10)
				changed = true
			}
		}
		if changed {
			s.recheckLocked(other)
		}
	}
}

// recheckLocked recomputes the verification of a build one of whose
// results stopped counting; it stays queued or running for more results,
// unless the results that still count settle it (with --max-results above
// quorum+1, a tie can become a majority).
func (s *Server) recheckLocked(ab *activeBuild) {
	build := ab.rec.GetBuild()
	v := s.verdictLocked(build)
	if v.state == kilnv1.Verification_VERIFICATION_VERIFIED {
		s.applyVerdictLocked(ab, nil)
		return
	}
	build.Verification = v.state
	build.AgreeingBuildServers = v.agreeing
	if v.leader != nil {
		build.Artifact = v.leader
	}
	s.replicaSchedLocked(ab)
	art := s.cacheEntryLocked(ab)
	s.putBuild(ab, func(tx store.Tx) error {
		if art == nil {
			return nil
		}
		return tx.PutArtifact(art)
	}, nil)
	s.changes.notify(build.GetId())
}

// buildSettledLocked is the event of a build's verification ending
// (VERIFIED or NOT_REPRODUCIBLE), raised once per build after its final
// record is enqueued: metrics, the log, and Config.OnSettled (signed
// provenance hooks there).
func (s *Server) buildSettledLocked(b *kilnv1.Build) {
	s.metrics.verified.WithLabelValues(b.GetVerification().Word(), strconv.Itoa(len(b.GetReplicas()))).Inc()
	s.log.Info("build verification ended", "build_id", b.GetId(), "verification", b.GetVerification().Word(),
		"results", len(b.GetReplicas()), "agreeing", strings.Join(b.GetAgreeingBuildServers(), ","))
	if s.cfg.OnSettled != nil {
		s.cfg.OnSettled(proto.Clone(b).(*kilnv1.Build))
	}
}

// operatorLocked is the operator of build server name as its session
// reported it (implicit when unknown).
func (s *Server) operatorLocked(name string) string {
	if op := s.standingLocked(name).operator; op != "" {
		return op
	}
	return implicitOperator(name)
}
