package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// A purge (metaserver buildserver revoke --purge) withdraws what a revoked
// build server alone produced: a volunteer whose credential is revoked is
// no longer trusted, and neither is what it built on its own word.
//
// The store records who produced an artifact through its build: the
// build server of the build's succeeded attempt. A build of the revoked
// server stays served when another, unrevoked build server produced the
// same sha256 in some build of its own (the same bytes vouched for by
// someone still trusted); every other build of it is withdrawn:
//
//   - its record stays SUCCEEDED, as history, with Build.withdrawn saying
//     why: its page says so, and downloading it, by id or by pin, fails;
//   - its cache entry is deleted, so the same request builds again;
//   - its bytes are deleted once no cache entry names them (inline ones in
//     the same transaction, files through the collector).
//
// Pins keep their names (a name always resolves to the same bytes, or to
// nothing), and a pin of a withdrawn build answers with why.

// revokedReason is the text of Build.withdrawn after a revocation.
func revokedReason(buildServer string) string {
	return fmt.Sprintf("its build server's credential was revoked (%s)", buildServer)
}

// purgeResult is what one purge did.
type purgeResult struct {
	withdrawn, kept []*kilnv1.WithdrawnArtifact
	// entries is how many cache entries were deleted.
	entries int
	// unreferenced holds the sha256 of the withdrawn bytes no cache entry
	// names any more.
	unreferenced map[string]bool
	// freed is the size of the bytes the cache named before and no longer.
	freed int64
}

// producer is the build server whose attempt produced b's artifact, "" if
// none is recorded.
func producer(b *kilnv1.Build) string {
	atts := b.GetAttempts()
	for i := len(atts) - 1; i >= 0; i-- {
		if atts[i].GetOutcome() == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
			return atts[i].GetBuildServer()
		}
	}
	return ""
}

// purgeTx withdraws in tx the artifacts build server name alone produced
// (see above). It decides only from what it reads in tx, so it may run again
// (committer.wait after a full disk). It reads every succeeded build and
// every cache entry: an operator's command, not a hot path.
func purgeTx(tx store.Tx, name string, now time.Time) (*purgeResult, error) {
	servers, err := tx.BuildServers()
	if err != nil {
		return nil, err
	}
	revoked := map[string]bool{name: true}
	for _, bs := range servers {
		if bs.GetRevoked() {
			revoked[bs.GetName()] = true
		}
	}
	// vouch: sha256 -> the unrevoked build servers that produced it.
	vouch := map[string][]string{}
	var mine []*store.Build
	err = tx.BuildsByState(kilnv1.BuildState_BUILD_STATE_SUCCEEDED, func(rec *store.Build) error {
		b := rec.GetBuild()
		if b.GetWithdrawn() != "" {
			return nil
		}
		sha := b.GetArtifact().GetSha256()
		// A verified build was produced by every server that agreed on
		// it (verify.go): the others vouch for it.
		by := b.GetAgreeingBuildServers()
		if len(by) == 0 {
			by = []string{producer(b)}
		}
		if slices.Contains(by, name) {
			mine = append(mine, rec)
		}
		for _, p := range by {
			if p != "" && p != name && !revoked[p] && !slices.Contains(vouch[sha], p) {
				vouch[sha] = append(vouch[sha], p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	refs := map[string]int{}
	err = tx.Artifacts(func(a *store.Artifact) error {
		refs[a.GetArtifact().GetSha256()]++
		return nil
	})
	if err != nil {
		return nil, err
	}
	res := &purgeResult{unreferenced: map[string]bool{}}
	cached := map[string]bool{} // named by a cache entry before the purge
	sizes := map[string]int64{}
	for _, rec := range mine {
		b := rec.GetBuild()
		sha := b.GetArtifact().GetSha256()
		w := &kilnv1.WithdrawnArtifact{BuildId: b.GetId(), Sha256: sha, Project: b.GetProject(), Commit: b.GetCommit()}
		entry, err := tx.Artifact(b.GetCacheKey())
		if errors.Is(err, store.ErrNotFound) {
			entry, err = nil, nil
		}
		if err != nil {
			return nil, err
		}
		if entry != nil && entry.GetBuildId() != b.GetId() {
			entry = nil // a later build's entry for the same key: judged with that build
		}
		w.Pins = slices.Clone(entry.GetPins())
		if by := vouch[sha]; len(by) > 0 {
			w.AlsoBuiltBy = slices.Clone(by)
			res.kept = append(res.kept, w)
			continue
		}
		c := proto.Clone(rec).(*store.Build)
		c.Build.Withdrawn = revokedReason(name)
		c.Build.WithdrawnAt = timestamppb.New(now)
		if err := tx.PutBuild(c); err != nil {
			return nil, err
		}
		if entry != nil {
			if err := tx.DeleteArtifact(entry.GetCacheKey()); err != nil {
				return nil, err
			}
			res.entries++
			refs[sha]--
			cached[sha] = true
		}
		sizes[sha] = int64(b.GetArtifact().GetSize())
		res.withdrawn = append(res.withdrawn, w)
	}
	for sha, size := range sizes {
		if refs[sha] > 0 {
			continue
		}
		if err := tx.DeleteBlob(sha); err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		res.unreferenced[sha] = true
		if cached[sha] {
			res.freed += size
		}
	}
	return res, nil
}

// purgeStore runs a purge at now directly against st (no metaserver running);
// the next metaserver's collector deletes the withdrawn files.
func purgeStore(st store.Store, name string, now time.Time) (*purgeResult, error) {
	var res *purgeResult
	err := st.Update(func(tx store.Tx) error {
		var err error
		res, err = purgeTx(tx, name, now)
		return err
	})
	return res, err
}

// Purge withdraws what build server name alone produced (call it after
// the revocation: Admin.RevokeBuildServer), after every change already
// decided (a result of the server committed before its revocation is
// withdrawn too), logs one line per artifact, and deletes the withdrawn
// files nothing names any more.
func (s *Server) Purge(name string) (*kilnv1.RevokeBuildServerResponse, error) {
	var res *purgeResult
	err := s.commits.wait(func(tx store.Tx) error {
		var err error
		res, err = purgeTx(tx, name, s.now())
		return err
	})
	if err != nil {
		return nil, err
	}
	s.purged(name, res)
	return &kilnv1.RevokeBuildServerResponse{Withdrawn: res.withdrawn, Kept: res.kept}, nil
}

// purged accounts for a committed purge: cache size, logs, watchers, files.
func (s *Server) purged(name string, res *purgeResult) {
	for _, w := range res.withdrawn {
		s.log.Warn("artifact withdrawn: its build server's credential was revoked", "build_server", name,
			"build_id", w.GetBuildId(), "sha256", w.GetSha256(), "project", w.GetProject(), "commit", w.GetCommit(), "pins", w.GetPins())
		s.changes.notify(w.GetBuildId())
	}
	for _, k := range res.kept {
		s.log.Info("artifact kept: another build server produced the same bytes", "build_server", name,
			"build_id", k.GetBuildId(), "sha256", k.GetSha256(), "also_built_by", k.GetAlsoBuiltBy())
	}
	s.cacheEntries.Add(-int64(res.entries))
	s.cacheBytes.Add(-res.freed)
	if _, err := s.collect(context.Background(), res.unreferenced); err != nil {
		s.log.Warn("deleting withdrawn artifact files", "err", err)
	}
}

// withdrawnError is the FAILED_PRECONDITION answer to a download of a
// withdrawn build, by id or by pin (pin not ""); nil when b is not withdrawn.
func withdrawnError(b *kilnv1.Build, pin string) error {
	w := b.GetWithdrawn()
	if w == "" {
		return nil
	}
	if pin != "" {
		return status.Errorf(codes.FailedPrecondition, "pin %q names the artifact of build %d, which was withdrawn: %s; request the build again", pin, b.GetId(), w)
	}
	return status.Errorf(codes.FailedPrecondition, "the artifact of build %d was withdrawn: %s; request the build again", b.GetId(), w)
}
