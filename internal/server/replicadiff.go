package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/kilnbuild/kiln/internal/artifactdiff"
)

// When two results of one build differ, the metaserver says where: the
// files whose content, kind, mode, link, owner or time differs between the
// two artifacts, or that only one of them has (differingFiles, through
// internal/artifactdiff). The list goes into the build
// (Build.differing_files), its failure when it ends NOT_REPRODUCIBLE, and
// its mail. Both artifacts are kept with the cache entry (kept_sha256);
// when the build ends not reproducible and diffoscope is installed, the
// metaserver also runs it on them (diffoscope.go).
//
// Either artifact may be a cheater's: artifactdiff refuses names that
// leave the archive and bounds what it reads (diffLimits, diffTimeout); a
// refusal is listed as the one entry "(archive refused: …)" rather than
// nothing, so that a build page never suggests the artifacts are alike.

// The bounds of a comparison: entries read from each artifact, files
// listed, bytes each may expand to (maxExpandFactor times its size plus
// diffExpandSlack), the time it may take, and the length of a refusal.
const (
	maxDiffEntries    = 1 << 16
	maxDifferingFiles = 64
	diffExpandSlack   = 256 << 20
	diffTimeout       = 2 * time.Minute
	maxRefusalBytes   = 300
)

// diffLimits are artifactdiff's limits for artifacts of sizes na and nb.
// MaxDifferences holds every difference (at most one per entry of
// either), so that differingFiles can say how many it does not list.
func diffLimits(na, nb int64) artifactdiff.Limits {
	return artifactdiff.Limits{
		MaxEntries:     maxDiffEntries,
		MaxNameBytes:   artifactdiff.DefaultLimits.MaxNameBytes,
		MaxIndexBytes:  8 << 20,
		MaxBytes:       maxExpandFactor*max(na, nb) + diffExpandSlack,
		MaxDifferences: 2 * maxDiffEntries,
	}
}

// differingFiles names the files in which artifact a (na bytes) and
// artifact b (nb bytes) differ, sorted, at most maxDifferingFiles (the
// last entry then says how many more). When the files are alike it says
// what else differs, and when artifactdiff refuses either artifact (unsafe,
// too large, malformed, too slow) it says why, each as a single entry in
// parentheses: never nil, the sha256s differ. diffTimeout runs on clock.
func differingFiles(ctx context.Context, clock clockwork.Clock, a io.Reader, na int64, b io.Reader, nb int64) []string {
	ctx, cancel := withTimeout(ctx, clock, diffTimeout)
	defer cancel()
	rep, err := artifactdiff.Diff(ctx, a, b, diffLimits(na, nb))
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(context.Cause(ctx), context.DeadlineExceeded):
		return []string{"(archives not compared: it took longer than " + diffTimeout.String() + ")"}
	case ctx.Err() != nil:
		return []string{"(archives not compared: " + ctx.Err().Error() + ")"}
	case err != nil:
		return []string{truncate("(archive refused: "+err.Error(), maxRefusalBytes) + ")"}
	case rep.OrderDiffers:
		return []string{"(the same files, in a different order)"}
	case len(rep.Differences) == 0:
		return []string{"(the same files; the archives differ in compression or tar headers)"}
	}
	out := make([]string, 0, min(len(rep.Differences), maxDifferingFiles)+1)
	for _, d := range rep.Differences[:min(len(rep.Differences), maxDifferingFiles)] {
		out = append(out, d.Path)
	}
	if more := len(rep.Differences) - len(out); more > 0 {
		out = append(out, "… and "+strconv.Itoa(more)+" more")
	}
	return out
}

// diffAgainstFirstLocked returns the sha256 of the first result of the
// build of attempt id that differs from sha ("" when none does, or the
// build already names its differing files).
func (s *Server) diffAgainstFirstLocked(id uint64, sha string) string {
	a := s.sched.Attempt(id)
	if a == nil {
		return ""
	}
	ab := s.active[a.Build.ID]
	if ab == nil || len(ab.rec.GetBuild().GetDifferingFiles()) > 0 {
		return ""
	}
	for _, r := range ab.rec.GetBuild().GetReplicas() {
		if other := answer(r); other != "" && other != sha {
			return other
		}
	}
	return ""
}

// openArtifact opens an artifact: held in memory, inline or a file; with
// its size.
func (s *Server) openArtifact(ctx context.Context, sha string) (io.ReadCloser, int64, error) {
	if data := s.blobs.pendingData(sha); data != nil {
		return io.NopCloser(bytes.NewReader(data)), int64(len(data)), nil
	}
	return s.blobs.open(ctx, sha)
}

// resultDiff returns the files in which the artifact of result r (data
// when sent inline) differs from its build's first differing result; nil
// when none differs, or when either artifact cannot be opened. Called
// before taking s.mu: it streams both artifacts, each once.
func (s *Server) resultDiff(ctx context.Context, attemptID uint64, sha string, data []byte) []string {
	s.mu.Lock()
	other := s.diffAgainstFirstLocked(attemptID, sha)
	s.mu.Unlock()
	if other == "" {
		return nil
	}
	first, nFirst, err := s.openArtifact(ctx, other)
	if err != nil {
		s.log.Warn("comparing results: opening an artifact failed", "sha256", other, "err", err)
		return nil
	}
	defer first.Close()
	this, nThis := io.NopCloser(bytes.NewReader(data)), int64(len(data))
	if data == nil {
		if this, nThis, err = s.openArtifact(ctx, sha); err != nil {
			s.log.Warn("comparing results: opening an artifact failed", "sha256", sha, "err", err)
			return nil
		}
	}
	defer this.Close()
	return differingFiles(ctx, s.clock, first, nFirst, this, nThis)
}
