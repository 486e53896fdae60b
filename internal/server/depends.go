package server

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/cachekey"
	"github.com/kilnbuild/kiln/internal/manifest"
	"github.com/kilnbuild/kiln/internal/platform"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Bounds of a dependency tree (kiln.yaml depends:), checked at submit.
const (
	// maxDependDepth bounds the chain app → lib → ... below the requested
	// project.
	maxDependDepth = 4
	// maxDependTotal bounds the dependencies of the whole tree, counted
	// once per path (a shared dependency counts once per dependent).
	maxDependTotal = 32
	// maxDependRounds bounds how often dependencies built on different
	// platform identities are asked for again, narrowed to the first one's.
	maxDependRounds = 2
)

// Building with dependencies
//
// A build whose manifest has depends: is created with one BuildDependency
// per entry and, in its record, a template of each dependency build
// (resolved at submit: project, commit, default options, recipe, its own
// dependencies). askDependenciesLocked then joins an active build of each
// dependency whose constraints cover the dependent's, takes a cached
// artifact that satisfies them, or creates a new build from the template
// with the dependent's constraints; the dependent stays QUEUED outside the
// scheduler's queue (depWaiting) with one waiting reason per dependency.
// When a dependency build ends (dependencyFinishedLocked), a failure fails
// the dependent ("dependency zlib failed on s390x: build 12: ..."); once
// all succeeded, the dependent is narrowed to their common platform
// identity and queued, so the target that builds it is one the dependency
// artifacts were built for. Dependencies built on different identities are
// asked for again, narrowed to the first one's (maxDependRounds).

// resolveDepends resolves man's depends: into dependency build templates,
// recursively. stack holds the projects from the requested one down to the
// one whose manifest man is; total counts the dependencies seen so far.
// Errors are gRPC statuses: an unknown project, a cycle or a tree past the
// bounds is InvalidArgument.
func (s *Server) resolveDepends(ctx context.Context, stack []string, man *manifest.Manifest, total *int) ([]*store.Build, error) {
	if len(man.Depends) == 0 {
		return nil, nil
	}
	if len(stack) > maxDependDepth {
		return nil, invalid("depends", "depends: dependency chain %s is deeper than %d levels", strings.Join(stack, " → "), maxDependDepth)
	}
	out := make([]*store.Build, 0, len(man.Depends))
	for _, d := range man.Depends {
		for _, p := range stack {
			if p == d.Project {
				return nil, invalid("depends", "depends: cycle %s → %s", strings.Join(stack, " → "), d.Project)
			}
		}
		if *total++; *total > maxDependTotal {
			return nil, invalid("depends", "depends: more than %d dependencies in the whole tree", maxDependTotal)
		}
		tmpl, err := s.resolveDependency(ctx, stack, d, total)
		if err != nil {
			return nil, err
		}
		out = append(out, tmpl)
	}
	return out, nil
}

// resolveDependency resolves one entry of depends: of stack's last project.
func (s *Server) resolveDependency(ctx context.Context, stack []string, d manifest.Dependency, total *int) (*store.Build, error) {
	of := stack[len(stack)-1]
	var project *kilnv1.Project
	err := s.st.View(func(tx store.Tx) error {
		p, err := tx.Project(d.Project)
		if err != nil {
			return err
		}
		project = p.GetProject()
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, invalid("depends", "depends: %s depends on %q, which is not a registered project (metaserver project add)", of, d.Project)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading project %s: %v", d.Project, err)
	}
	mir := s.mirrors.get(project.GetName(), project.GetGitUrl())
	if err := mir.Ensure(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "dependency %s: mirror: %v", d.Project, err)
	}
	commit, err := mir.Resolve(ctx, d.Revision)
	if err != nil {
		return nil, invalid("depends", "depends: %s: cannot resolve %s: %v", of, d, err)
	}
	man, err := s.mirrors.manifest(ctx, project.GetName(), mir, commit)
	if err != nil {
		var pe *manifest.ParseError
		if errors.As(err, &pe) {
			return nil, status.Errorf(codes.FailedPrecondition, "dependency %s: its manifest is invalid: %v", d.Project, err)
		}
		return nil, status.Errorf(codes.Unavailable, "dependency %s: reading manifest: %v", d.Project, err)
	}
	opts, err := man.Normalize(nil)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "dependency %s: its default options: %v", d.Project, err)
	}
	sub, err := s.resolveDepends(ctx, append(stack[:len(stack):len(stack)], d.Project), man, total)
	if err != nil {
		return nil, err
	}
	recipe := man.Recipe()
	rev := d.Revision
	if rev == "" {
		rev = "HEAD"
	}
	return &store.Build{
		Build: &kilnv1.Build{
			Project: d.Project, Revision: rev, Commit: commit, Options: opts,
			Recipe: recipe.GetSummary(), Dependencies: dependencyEntries(sub),
		},
		Recipe:              recipe,
		SourceKey:           cachekey.SourceWithDeps(cachekey.SourceRecipe(d.Project, commit, opts, man.RecipeKey()), sourceDeps(sub)),
		GitUrl:              project.GetGitUrl(),
		DependencyTemplates: sub,
	}, nil
}

// dependencyEntries returns the public entries of a build with the given
// dependency templates, none created yet.
func dependencyEntries(tmpls []*store.Build) []*kilnv1.BuildDependency {
	var out []*kilnv1.BuildDependency
	for _, t := range tmpls {
		out = append(out, &kilnv1.BuildDependency{Project: t.GetBuild().GetProject()})
	}
	return out
}

// sourceDeps returns what a dependent's source key takes of its
// dependencies: their source keys.
func sourceDeps(tmpls []*store.Build) []cachekey.Dep {
	var out []cachekey.Dep
	for _, t := range tmpls {
		out = append(out, cachekey.Dep{Project: t.GetBuild().GetProject(), Value: t.GetSourceKey()})
	}
	return out
}

// artifactDeps returns what a dependent's cache key takes of its
// dependencies: their artifacts' sha256.
func artifactDeps(b *kilnv1.Build) []cachekey.Dep {
	var out []cachekey.Dep
	for _, d := range b.GetDependencies() {
		out = append(out, cachekey.Dep{Project: d.GetProject(), Value: d.GetArtifact().GetSha256()})
	}
	return out
}

// queueLocked puts a new build in the scheduler's queue, or, when it has
// dependencies, asks for them first.
func (s *Server) queueLocked(ab *activeBuild) {
	if len(ab.rec.GetBuild().GetDependencies()) == 0 {
		s.sched.Enqueue(ab.sb)
		return
	}
	s.askDependenciesLocked(ab)
}

// waitingOnDependencies reports whether b still waits for a dependency.
func waitingOnDependencies(b *kilnv1.Build) bool {
	for _, d := range b.GetDependencies() {
		if d.GetArtifact() == nil {
			return true
		}
	}
	return false
}

// askDependenciesLocked gives each dependency of ab without a build one:
// an active build that covers ab's constraints (joined), a cached artifact
// that satisfies them, or a new build from the template. Then it checks
// whether ab can be queued.
func (s *Server) askDependenciesLocked(ab *activeBuild) {
	b := ab.rec.GetBuild()
	tmpls := ab.rec.GetDependencyTemplates()
	if s.depWaiting == nil {
		s.depWaiting = map[uint64]*activeBuild{}
	}
	s.depWaiting[b.GetId()] = ab
	for i, d := range b.GetDependencies() {
		if d.GetBuildId() != 0 || i >= len(tmpls) {
			continue
		}
		tmpl := tmpls[i]
		if x := s.activeCoveringLocked(tmpl.GetSourceKey(), b.GetConstraints()); x != nil {
			x.waiters++
			d.BuildId = x.rec.GetBuild().GetId()
			continue
		}
		if art := s.cachedArtifact(tmpl.GetSourceKey(), b.GetConstraints()); art != nil {
			d.BuildId, d.Artifact, d.Platform = art.GetBuildId(), slimArtifact(art.GetArtifact()), art.GetPlatform()
			continue
		}
		d.BuildId = s.createDependencyLocked(tmpl, b.GetConstraints())
	}
	s.checkDependenciesLocked(ab)
}

// activeCoveringLocked returns an active build of source whose constraints
// are at least as strict as c.
func (s *Server) activeCoveringLocked(source string, c *kilnv1.PlatformConstraints) *activeBuild {
	for _, x := range s.bySource[source] {
		if platform.Covers(x.rec.GetBuild().GetConstraints(), c) {
			return x
		}
	}
	return nil
}

// cachedArtifact returns a cache entry of source whose platform satisfies
// c, whose blob is stored and whose build was not withdrawn, or nil.
func (s *Server) cachedArtifact(source string, c *kilnv1.PlatformConstraints) *store.Artifact {
	var hit *store.Artifact
	_ = s.st.View(func(tx store.Tx) error {
		arts, err := tx.ArtifactsBySource(source)
		if err != nil {
			return err
		}
		for _, a := range arts {
			if !platform.Satisfies(a.GetPlatform(), c) {
				continue
			}
			if _, err := s.blobs.statTx(context.Background(), tx, a.GetArtifact().GetSha256()); err != nil {
				continue
			}
			if rec, err := tx.Build(a.GetBuildId()); err != nil || rec.GetBuild().GetWithdrawn() != "" || !answers(a, rec.GetBuild(), false) {
				continue // withdrawn or unverified artifacts are never staged (see fromCache)
			}
			hit = a
			return nil
		}
		return nil
	})
	return hit
}

// slimArtifact is what a dependency entry keeps of an artifact: its sha256
// and size, not its file list.
func slimArtifact(a *kilnv1.Artifact) *kilnv1.Artifact {
	return &kilnv1.Artifact{Sha256: a.GetSha256(), Size: a.GetSize()}
}

// createDependencyLocked creates a build from tmpl with constraints c, for
// a dependent, and returns its id.
func (s *Server) createDependencyLocked(tmpl *store.Build, c *kilnv1.PlatformConstraints) uint64 {
	rec := proto.Clone(tmpl).(*store.Build)
	id := s.nextID
	s.nextID++
	b := rec.GetBuild()
	b.Id = id
	b.State = kilnv1.BuildState_BUILD_STATE_QUEUED
	b.CreatedAt = timestamppb.New(s.now())
	b.Constraints = proto.Clone(c).(*kilnv1.PlatformConstraints)
	ab := s.track(rec)
	ab.waiters = 1 // the dependent
	s.queueLocked(ab)
	if b.GetState().Final() {
		return id // its own dependency failed: already committed
	}
	s.putBuild(ab, nil, nil)
	s.log.Info("dependency build queued", "build_id", id, "project", b.GetProject())
	s.changes.notify(id)
	return id
}

// dependencyFinishedLocked passes the end of build b on to the builds that
// wait for it as a dependency.
func (s *Server) dependencyFinishedLocked(b *kilnv1.Build) {
	delete(s.depWaiting, b.GetId())
	var affected []*activeBuild
	for _, ab := range s.depWaiting {
		for _, d := range ab.rec.GetBuild().GetDependencies() {
			if d.GetBuildId() == b.GetId() && d.GetArtifact() == nil {
				affected = append(affected, ab)
				break
			}
		}
	}
	for _, ab := range affected {
		if s.active[ab.rec.GetBuild().GetId()] != ab {
			continue // ended meanwhile (a failure of another dependency)
		}
		s.applyDependencyLocked(ab, b)
	}
}

// applyDependencyLocked records the end of dependency build dep in ab:
// its artifact, or ab's failure.
func (s *Server) applyDependencyLocked(ab *activeBuild, dep *kilnv1.Build) {
	for _, d := range ab.rec.GetBuild().GetDependencies() {
		if d.GetBuildId() != dep.GetId() || d.GetArtifact() != nil {
			continue
		}
		if dep.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
			delete(s.depWaiting, ab.rec.GetBuild().GetId())
			s.finishLocked(ab, kilnv1.BuildState_BUILD_STATE_FAILED, dependencyFailure(d.GetProject(), dep), "")
			return
		}
		d.Artifact, d.Platform = slimArtifact(dep.GetArtifact()), dep.GetPlatform()
	}
	s.checkDependenciesLocked(ab)
	if !ab.rec.GetBuild().GetState().Final() {
		s.putBuild(ab, nil, nil)
		s.changes.notify(ab.rec.GetBuild().GetId())
	}
}

// dependencyFailure is a dependent's failure when dependency build dep
// did not succeed: "dependency zlib failed on s390x: build 12: reason".
func dependencyFailure(project string, dep *kilnv1.Build) string {
	where := dep.GetPlatform().GetArch()
	if where == "" {
		where = dep.GetConstraints().GetArch()
	}
	if where == "" {
		where = "any platform"
	}
	verb := "failed"
	switch dep.GetState() {
	case kilnv1.BuildState_BUILD_STATE_CANCELLED:
		verb = "was cancelled"
	case kilnv1.BuildState_BUILD_STATE_EXPIRED:
		verb = "expired"
	}
	msg := fmt.Sprintf("dependency %s %s on %s: build %d", project, verb, where, dep.GetId())
	if f := dep.GetFailure(); f != "" {
		msg += ": " + f
	}
	return msg
}

// checkDependenciesLocked queues ab once every dependency has an artifact
// of one platform identity, narrowed to it; dependencies of other
// identities are asked for again, narrowed to the first one's.
func (s *Server) checkDependenciesLocked(ab *activeBuild) {
	b := ab.rec.GetBuild()
	if waitingOnDependencies(b) {
		return
	}
	deps := b.GetDependencies()
	ref := deps[0].GetPlatform()
	refKey := string(platform.IdentityKey(ref))
	narrowed := narrowTo(b.GetConstraints(), ref)
	var mismatched []string
	for _, d := range deps[1:] {
		if string(platform.IdentityKey(d.GetPlatform())) != refKey {
			mismatched = append(mismatched, d.GetProject())
			d.BuildId, d.Artifact, d.Platform = 0, nil, nil
		}
	}
	b.Constraints = narrowed
	ab.sb.Constraints = narrowed
	if len(mismatched) > 0 {
		if ab.rec.DependencyRounds++; ab.rec.GetDependencyRounds() > maxDependRounds {
			delete(s.depWaiting, b.GetId())
			s.finishLocked(ab, kilnv1.BuildState_BUILD_STATE_FAILED, fmt.Sprintf(
				"dependencies %s and %s keep being built on different platforms", deps[0].GetProject(), strings.Join(mismatched, ", ")), "")
			return
		}
		s.askDependenciesLocked(ab)
		return
	}
	delete(s.depWaiting, b.GetId())
	s.sched.Enqueue(ab.sb)
	// Not dispatched from here: this may run inside a dispatch round.
	s.clock.AfterFunc(0, s.kickDispatch)
}

// narrowTo returns c with every identity field pinned to info's value.
func narrowTo(c *kilnv1.PlatformConstraints, info *kilnv1.SystemInfo) *kilnv1.PlatformConstraints {
	n := platform.FromInfo(info, platform.IdentityFields...)
	for _, f := range platform.Fields {
		if platform.Get(n, f) != "" {
			continue
		}
		if v := platform.Get(c, f); v != "" {
			_ = platform.Set(n, f, v) // valid: it was set in c
		}
	}
	return n
}

// dependencyWaits are the waiting reasons of a build waiting for
// dependencies: "waiting for dependency zlib (build 12)".
func dependencyWaits(b *kilnv1.Build) []string {
	var out []string
	for _, d := range b.GetDependencies() {
		if d.GetArtifact() == nil {
			out = append(out, fmt.Sprintf("waiting for dependency %s (build %d)", d.GetProject(), d.GetBuildId()))
		}
	}
	return out
}

// assignmentDependencies is what an assignment carries of b's
// dependencies: project, build id, artifact sha256 and size.
func assignmentDependencies(b *kilnv1.Build) []*kilnv1.BuildDependency {
	var out []*kilnv1.BuildDependency
	for _, d := range b.GetDependencies() {
		out = append(out, &kilnv1.BuildDependency{Project: d.GetProject(), BuildId: d.GetBuildId(), Artifact: slimArtifact(d.GetArtifact())})
	}
	return out
}

// restoreDependenciesLocked, at Open, puts the restored builds that wait
// for dependencies back in depWaiting, and applies the ends of dependency
// builds that ended before the dependent's record said so.
func (s *Server) restoreDependenciesLocked(tx store.Tx, waiting []*activeBuild) error {
	for _, ab := range waiting {
		if s.depWaiting == nil {
			s.depWaiting = map[uint64]*activeBuild{}
		}
		s.depWaiting[ab.rec.GetBuild().GetId()] = ab
	}
	for _, ab := range waiting {
		if s.active[ab.rec.GetBuild().GetId()] != ab {
			continue
		}
		var ended []*kilnv1.Build
		for _, d := range ab.rec.GetBuild().GetDependencies() {
			if d.GetArtifact() != nil || d.GetBuildId() == 0 || s.active[d.GetBuildId()] != nil {
				continue
			}
			rec, err := tx.Build(d.GetBuildId())
			if err != nil {
				return fmt.Errorf("dependency build %d of build %d: %w", d.GetBuildId(), ab.rec.GetBuild().GetId(), err)
			}
			ended = append(ended, rec.GetBuild())
		}
		for _, dep := range ended {
			if s.active[ab.rec.GetBuild().GetId()] == ab {
				s.applyDependencyLocked(ab, dep)
			}
		}
		if s.active[ab.rec.GetBuild().GetId()] == ab && hasUncreated(ab.rec.GetBuild()) {
			s.askDependenciesLocked(ab) // stopped between rounds
		}
	}
	return nil
}

func hasUncreated(b *kilnv1.Build) bool {
	for _, d := range b.GetDependencies() {
		if d.GetBuildId() == 0 {
			return true
		}
	}
	return false
}
