package server

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/cachekey"
	"github.com/kilnbuild/kiln/internal/gitmirror"
	"github.com/kilnbuild/kiln/internal/mail"
	"github.com/kilnbuild/kiln/internal/manifest"
	"github.com/kilnbuild/kiln/internal/platform"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Edge limits on a request.
const (
	maxRevisionLength = 256
	maxOptions        = 64
)

// resolved is a validated request, ready to be answered.
type resolved struct {
	project     *kilnv1.Project
	email       string
	revision    string
	commits     []string // newest first; commits[0] is built on a miss
	recipe      *kilnv1.Recipe
	recipeKey   string // manifest.Manifest.RecipeKey, part of the source key
	options     map[string]string
	constraints *kilnv1.PlatformConstraints
	// deps are the templates of the dependency builds (depends.go).
	deps []*store.Build
	// group and mail are the request's group ("" for none) and mail mode,
	// defaulted (groups.go).
	group string
	mail  kilnv1.MailMode
	// acceptUnverified: the requester takes the first result (verify.go).
	acceptUnverified bool
}

// sourceKey is the source key of building commit for r.
func (r *resolved) sourceKey(commit string) string {
	return cachekey.SourceWithDeps(cachekey.SourceRecipe(r.project.GetName(), commit, r.options, r.recipeKey), sourceDeps(r.deps))
}

func invalid(field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	st := status.New(codes.InvalidArgument, msg)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: msg}}}); err == nil {
		st = d
	}
	return st.Err()
}

// validate checks a request at the edge and resolves it. Nothing is stored.
func (s *Server) validate(ctx context.Context, req *kilnv1.SubmitRequest) (*resolved, error) {
	email, err := mail.ValidateAddress(req.GetEmail())
	if err != nil {
		return nil, invalid("email", "invalid email address %q: %v", req.GetEmail(), err)
	}
	if addr := peerKey(ctx); !s.addrLimiter.allow(addr, s.now()) {
		return nil, status.Errorf(codes.ResourceExhausted, "too many requests from address %s; try again in a minute", addr)
	}
	if !s.limiter.allow(email, s.now()) {
		return nil, status.Errorf(codes.ResourceExhausted, "too many requests from %s; try again in a minute", email)
	}
	if len(req.GetRevision()) > maxRevisionLength {
		return nil, invalid("revision", "revision longer than %d bytes", maxRevisionLength)
	}
	if len(req.GetOptions()) > maxOptions {
		return nil, invalid("options", "more than %d options", maxOptions)
	}
	c := proto.Clone(req.GetConstraints()).(*kilnv1.PlatformConstraints)
	if c == nil {
		c = &kilnv1.PlatformConstraints{}
	}
	for _, f := range platform.Fields {
		if err := platform.Set(c, f, platform.Get(c, f)); err != nil {
			return nil, invalid("constraints."+f, "%v", err)
		}
	}
	var project *kilnv1.Project
	err = s.st.View(func(tx store.Tx) error {
		p, err := tx.Project(req.GetProject())
		if err != nil {
			return err
		}
		project = p.GetProject()
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "unknown project %q: only registered projects build (metaserver project add)", req.GetProject())
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading project: %v", err)
	}
	mir := s.mirrors.get(project.GetName(), project.GetGitUrl())
	if err := mir.Ensure(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "project %s: mirror: %v", project.GetName(), err)
	}
	from, to, isRange, err := gitmirror.ParseRange(req.GetRevision())
	if err != nil {
		return nil, invalid("revision", "%v", err)
	}
	head, err := mir.Resolve(ctx, to)
	if err != nil {
		return nil, revisionError(req.GetRevision(), err)
	}
	commits := []string{head}
	if isRange {
		base, err := mir.Resolve(ctx, from)
		if err != nil {
			return nil, revisionError(req.GetRevision(), err)
		}
		commits, err = mir.FirstParentRange(ctx, base, head)
		if err != nil {
			return nil, revisionError(req.GetRevision(), err)
		}
	}
	man, err := s.mirrors.manifest(ctx, project.GetName(), mir, head)
	if err != nil {
		var pe *manifest.ParseError
		if errors.As(err, &pe) {
			return nil, status.Errorf(codes.FailedPrecondition, "the project's manifest is invalid: %v", err)
		}
		return nil, status.Errorf(codes.Unavailable, "reading manifest: %v", err)
	}
	opts, err := man.Normalize(req.GetOptions())
	if err != nil {
		var oe *manifest.OptionError
		if errors.As(err, &oe) {
			return nil, invalid("options."+oe.Option, "%v", err)
		}
		return nil, invalid("options", "%v", err)
	}
	total := 0
	deps, err := s.resolveDepends(ctx, []string{project.GetName()}, man, &total)
	if err != nil {
		return nil, err
	}
	return &resolved{project: project, email: email, revision: req.GetRevision(), commits: commits,
		recipe: man.Recipe(), recipeKey: man.RecipeKey(), options: opts, constraints: c, deps: deps,
		acceptUnverified: req.GetAcceptUnverified()}, nil
}

func revisionError(rev string, err error) error {
	switch {
	case errors.Is(err, gitmirror.ErrUnknownRevision), errors.Is(err, gitmirror.ErrBadRevision):
		return invalid("revision", "cannot resolve revision %q: %v", rev, err)
	case errors.Is(err, gitmirror.ErrUnreachable):
		return status.Errorf(codes.Unavailable, "project repository unreachable: %v", err)
	}
	return status.Errorf(codes.Unavailable, "resolving revision %q: %v", rev, err)
}

// Submit implements kilnv1.CompileServiceServer.
func (s *Server) Submit(ctx context.Context, req *kilnv1.SubmitRequest) (*kilnv1.SubmitResponse, error) {
	group, mode, err := groupFields(req)
	if err != nil {
		return nil, err
	}
	r, err := s.validate(ctx, req)
	if err != nil {
		return nil, err
	}
	r.group, r.mail = group, mode
	unlock, err := s.checkGroup(r)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if resp, err := s.fromCache(ctx, r); resp != nil || err != nil {
		return resp, err
	}
	s.metrics.cacheMisses.Inc()
	return s.joinOrQueue(r)
}

// fromCache answers r from a stored artifact of any commit in r's range whose
// platform satisfies r's constraints. The requester leaving does not make a
// stored blob look missing: its stat runs on ctx without its cancellation.
func (s *Server) fromCache(ctx context.Context, r *resolved) (*kilnv1.SubmitResponse, error) {
	ctx = context.WithoutCancel(ctx)
	var hit *store.Artifact
	var build *kilnv1.Build
	err := s.st.View(func(tx store.Tx) error {
		for _, commit := range r.commits {
			arts, err := tx.ArtifactsBySource(r.sourceKey(commit))
			if err != nil {
				return err
			}
			for _, a := range arts {
				if !platform.Satisfies(a.GetPlatform(), r.constraints) {
					continue
				}
				if _, err := s.blobs.statTx(ctx, tx, a.GetArtifact().GetSha256()); err != nil {
					continue // blob gone (evicted or deleted as corrupt): build again
				}
				rec, err := tx.Build(a.GetBuildId())
				if err != nil || rec.GetBuild().GetWithdrawn() != "" || !answers(a, rec.GetBuild(), r.acceptUnverified) {
					continue
				}
				hit, build = a, rec.GetBuild()
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "cache lookup: %v", err)
	}
	if hit == nil {
		return nil, nil
	}
	now := timestamppb.New(s.now())
	var reqID uint64
	err = s.commits.wait(func(tx store.Tx) error {
		id, err := tx.NextID("request")
		if err != nil {
			return err
		}
		reqID = id
		if err := tx.PutRequest(&store.Request{Id: id, BuildId: build.GetId(), Email: r.email, CreatedAt: now,
			Cached: true, Notified: true, Revision: r.revision, Constraints: r.constraints, Group: r.group, Mail: r.mail, AcceptUnverified: r.acceptUnverified}); err != nil {
			return err
		}
		if err := s.joinGroupTx(tx, r, id); err != nil {
			return err
		}
		a, err := tx.Artifact(hit.GetCacheKey())
		if err != nil {
			return nil // evicted meanwhile; the answer stands
		}
		a.LastUsed = now
		return tx.PutArtifact(a)
	})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "recording request: %v", err)
	}
	s.metrics.cacheHits.Inc()
	s.metrics.submitted.WithLabelValues("cached").Inc()
	return &kilnv1.SubmitResponse{Build: build, Cached: true, RequestId: reqID}, nil
}

// answers reports whether cache entry a of build b may answer a request:
// a verified artifact answers every request; an unverified or disputed
// one (its build still waiting for more operators) only one that accepts
// unverified results; a not-reproducible
// build's kept results and entries made before verification existed
// (trusted on one word) answer no default request.
func answers(a *store.Artifact, b *kilnv1.Build, acceptUnverified bool) bool {
	switch a.GetVerification() {
	case kilnv1.Verification_VERIFICATION_VERIFIED:
		return b.GetVerification().Trusted()
	case kilnv1.Verification_VERIFICATION_NOT_REPRODUCIBLE:
		return false
	}
	// A build that ended otherwise (cancelled, expired, error) keeps its
	// entry but answers nobody: its requester would be told it ended so.
	st := b.GetState()
	return acceptUnverified && b.GetArtifact() != nil && (!st.Final() || st == kilnv1.BuildState_BUILD_STATE_SUCCEEDED)
}

// joinOrQueue adds r as a waiter on an identical queued or running build, or
// queues a new build for r's newest commit.
func (s *Server) joinOrQueue(r *resolved) (*kilnv1.SubmitResponse, error) {
	now := s.now()
	req := &store.Request{Email: r.email, CreatedAt: timestamppb.New(now), Revision: r.revision, Constraints: r.constraints,
		Group: r.group, Mail: r.mail, AcceptUnverified: r.acceptUnverified}
	var reqID uint64
	writeRequest := func(tx store.Tx) error {
		id, err := tx.NextID("request")
		if err != nil {
			return err
		}
		reqID = id
		rr := proto.Clone(req).(*store.Request)
		rr.Id = id
		if err := tx.PutRequest(rr); err != nil {
			return err
		}
		return s.joinGroupTx(tx, r, id)
	}
	done := make(chan error, 1)
	after := func(err error) { done <- err }

	s.mu.Lock()
	// A new build is usually dispatched at once: its record, its request
	// and its dispatch go in one transaction. (Held under s.mu only, so
	// holds never overlap and never wait for the lock.)
	release := s.commits.hold()
	ab := s.findActiveLocked(r)
	joined := ab != nil
	if joined {
		ab.waiters++
		req.BuildId = ab.rec.GetBuild().GetId()
		s.commits.enqueue(writeRequest, after)
	} else {
		id := s.nextID
		s.nextID++
		head := r.commits[0]
		req.BuildId = id
		rec := &store.Build{
			Build: &kilnv1.Build{
				Id: id, Project: r.project.GetName(), Revision: r.revision, Commit: head, Options: r.options,
				Constraints: r.constraints, State: kilnv1.BuildState_BUILD_STATE_QUEUED, CreatedAt: timestamppb.New(now),
				Recipe: r.recipe.GetSummary(), Dependencies: dependencyEntries(r.deps),
			},
			Recipe:              r.recipe,
			SourceKey:           r.sourceKey(head),
			GitUrl:              r.project.GetGitUrl(),
			DependencyTemplates: r.deps,
		}
		ab = s.track(rec)
		ab.waiters = 1
		s.queueLocked(ab)
		s.putBuild(ab, writeRequest, after)
		s.dispatchLocked()
	}
	view := s.viewLocked(ab)
	release()
	s.mu.Unlock()

	if err := <-done; err != nil {
		return nil, status.Errorf(codes.Unavailable, "storing request: %v", err)
	}
	answer := "queued"
	if joined {
		answer = "joined"
	}
	s.metrics.submitted.WithLabelValues(answer).Inc()
	s.changes.notify(view.GetId())
	return &kilnv1.SubmitResponse{Build: view, Joined: joined, RequestId: reqID}, nil
}

// findActiveLocked returns a queued or running build that satisfies r: same
// source, with constraints at least as strict as r's.
func (s *Server) findActiveLocked(r *resolved) *activeBuild {
	for _, commit := range r.commits {
		for _, ab := range s.bySource[r.sourceKey(commit)] {
			// Only a build whose own constraints are at least as strict:
			// a running build on a fitting platform could be retried
			// elsewhere on its looser constraints after a lost attempt.
			if platform.Covers(ab.rec.GetBuild().GetConstraints(), r.constraints) {
				return ab
			}
		}
	}
	return nil
}
