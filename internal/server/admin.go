package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/auth"
	"github.com/kilnbuild/kiln/internal/gitmirror"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Admin performs the operator's operations on a store and data directory.
// The running metaserver serves it on its admin socket; the metaserver CLI
// uses it directly when no metaserver is running.
type Admin struct {
	kilnv1.UnimplementedAdminServiceServer

	Store   store.Store
	DataDir string
	// OnRevoke is called after a credential is revoked (closes the live session).
	OnRevoke func(name string)
	// Cancel cancels a build in the running metaserver (Server.AdminCancel);
	// nil when no metaserver runs, and CancelBuild then fails.
	Cancel func(id uint64, reason string) (*kilnv1.Build, error)
	// Purge withdraws a revoked build server's artifacts in the running
	// metaserver (Server.Purge); nil when no metaserver runs, and a purge
	// then writes the store directly.
	Purge func(name string) (*kilnv1.RevokeBuildServerResponse, error)
	// Clock times what the operations record and the clone's bound (nil:
	// the real clock; see Config.Clock).
	Clock clockwork.Clock
}

// now is the time on a's clock.
func (a *Admin) now() time.Time { return clockOrReal(a.Clock).Now() }

// AddProject implements kilnv1.AdminServiceServer.
func (a *Admin) AddProject(ctx context.Context, req *kilnv1.AddProjectRequest) (*kilnv1.AddProjectResponse, error) {
	p := req.GetProject()
	if !nameRE.MatchString(p.GetName()) {
		return nil, status.Errorf(codes.InvalidArgument, "project name %q must match %s", p.GetName(), nameRE)
	}
	if p.GetGitUrl() == "" || len(p.GetGitUrl()) > 1024 {
		return nil, status.Error(codes.InvalidArgument, "a git URL is required")
	}
	err := a.Store.View(func(tx store.Tx) error {
		_, err := tx.Project(p.GetName())
		return err
	})
	if err == nil {
		return nil, status.Errorf(codes.AlreadyExists, "project %q is already registered", p.GetName())
	}
	mir := newMirrors(mirrorsDir(a.DataDir)).get(p.GetName(), p.GetGitUrl())
	cctx, cancel := withTimeout(ctx, clockOrReal(a.Clock), 5*time.Minute)
	defer cancel()
	if err := mir.Ensure(cctx); err != nil {
		if errors.Is(err, gitmirror.ErrUnreachable) {
			return nil, status.Errorf(codes.InvalidArgument, "cannot clone %s: %v", p.GetGitUrl(), err)
		}
		return nil, status.Errorf(codes.Internal, "creating mirror: %v", err)
	}
	rec := &store.Project{Project: &kilnv1.Project{Name: p.GetName(), GitUrl: p.GetGitUrl()}, CreatedAt: timestamppb.New(a.now())}
	err = a.Store.Update(func(tx store.Tx) error { return tx.CreateProject(rec) })
	if errors.Is(err, store.ErrExists) {
		return nil, status.Errorf(codes.AlreadyExists, "project %q is already registered", p.GetName())
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "storing project: %v", err)
	}
	return &kilnv1.AddProjectResponse{Project: rec.GetProject()}, nil
}

// ListProjects implements kilnv1.AdminServiceServer.
func (a *Admin) ListProjects(ctx context.Context, _ *kilnv1.ListProjectsRequest) (*kilnv1.ListProjectsResponse, error) {
	resp := &kilnv1.ListProjectsResponse{}
	err := a.Store.View(func(tx store.Tx) error {
		ps, err := tx.Projects()
		for _, p := range ps {
			resp.Projects = append(resp.Projects, p.GetProject())
		}
		return err
	})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading projects: %v", err)
	}
	return resp, nil
}

// AddOperator implements kilnv1.AdminServiceServer.
func (a *Admin) AddOperator(ctx context.Context, req *kilnv1.AddOperatorRequest) (*kilnv1.AddOperatorResponse, error) {
	if !nameRE.MatchString(req.GetName()) {
		return nil, status.Errorf(codes.InvalidArgument, "operator name %q must match %s", req.GetName(), nameRE)
	}
	err := a.Store.Update(func(tx store.Tx) error {
		return tx.CreateOperator(&store.Operator{Name: req.GetName(), CreatedAt: timestamppb.New(a.now())})
	})
	if errors.Is(err, store.ErrExists) {
		return nil, status.Errorf(codes.AlreadyExists, "operator %q already exists", req.GetName())
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "storing operator: %v", err)
	}
	return &kilnv1.AddOperatorResponse{Name: req.GetName()}, nil
}

// checkOperator refuses an operator name that is not registered ("" is
// fine: the credential is then its own implicit operator).
func checkOperator(tx store.Tx, name string) error {
	if name == "" {
		return nil
	}
	if !nameRE.MatchString(name) {
		return status.Errorf(codes.InvalidArgument, "operator name %q must match %s", name, nameRE)
	}
	if _, err := tx.Operator(name); errors.Is(err, store.ErrNotFound) {
		return status.Errorf(codes.FailedPrecondition, "no operator %q: add it first (metaserver operator add)", name)
	} else if err != nil {
		return err
	}
	return nil
}

// AddBuildServer implements kilnv1.AdminServiceServer.
func (a *Admin) AddBuildServer(ctx context.Context, req *kilnv1.AddBuildServerRequest) (*kilnv1.AddBuildServerResponse, error) {
	if !nameRE.MatchString(req.GetName()) {
		return nil, status.Errorf(codes.InvalidArgument, "build server name %q must match %s", req.GetName(), nameRE)
	}
	token, hash := auth.NewToken()
	err := a.Store.Update(func(tx store.Tx) error {
		if err := checkOperator(tx, req.GetOperator()); err != nil {
			return err
		}
		return tx.CreateBuildServer(&store.BuildServer{Name: req.GetName(), TokenHash: hash, CreatedAt: timestamppb.New(a.now()), Operator: req.GetOperator()})
	})
	if _, ok := status.FromError(err); ok && err != nil {
		return nil, err
	}
	if errors.Is(err, store.ErrExists) {
		return nil, status.Errorf(codes.AlreadyExists, "build server %q already exists", req.GetName())
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "storing build server: %v", err)
	}
	return &kilnv1.AddBuildServerResponse{Name: req.GetName(), Token: token}, nil
}

// RevokeBuildServer implements kilnv1.AdminServiceServer.
func (a *Admin) RevokeBuildServer(ctx context.Context, req *kilnv1.RevokeBuildServerRequest) (*kilnv1.RevokeBuildServerResponse, error) {
	err := a.Store.Update(func(tx store.Tx) error {
		rec, err := tx.BuildServer(req.GetName())
		if err != nil {
			return err
		}
		rec.Revoked = true
		return tx.PutBuildServer(rec)
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no build server %q", req.GetName())
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "revoking: %v", err)
	}
	if a.OnRevoke != nil {
		a.OnRevoke(req.GetName())
	}
	if !req.GetPurge() {
		return &kilnv1.RevokeBuildServerResponse{}, nil
	}
	// After the revocation: no result of the server is accepted any more,
	// so nothing it builds can enter the cache behind the purge.
	if a.Purge != nil {
		resp, err := a.Purge(req.GetName())
		if err != nil {
			return nil, status.Errorf(codes.Internal, "revoked, but withdrawing its artifacts failed (run the command again): %v", err)
		}
		return resp, nil
	}
	res, err := purgeStore(a.Store, req.GetName(), a.now())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "revoked, but withdrawing its artifacts failed (run the command again): %v", err)
	}
	return &kilnv1.RevokeBuildServerResponse{Withdrawn: res.withdrawn, Kept: res.kept}, nil
}

// Pin implements kilnv1.AdminServiceServer.
func (a *Admin) Pin(ctx context.Context, req *kilnv1.PinRequest) (*kilnv1.PinResponse, error) {
	if !nameRE.MatchString(req.GetName()) {
		return nil, status.Errorf(codes.InvalidArgument, "pin name %q must match %s", req.GetName(), nameRE)
	}
	var art *kilnv1.Artifact
	err := a.Store.Update(func(tx store.Tx) error {
		rec, err := tx.Build(req.GetBuildId())
		if errors.Is(err, store.ErrNotFound) {
			return status.Errorf(codes.NotFound, "no build %d", req.GetBuildId())
		}
		if err != nil {
			return err
		}
		b := rec.GetBuild()
		if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
			return status.Errorf(codes.FailedPrecondition, "build %d has no artifact (state %s)", b.GetId(), b.GetState().Word())
		}
		if w := b.GetWithdrawn(); w != "" {
			return status.Errorf(codes.FailedPrecondition, "the artifact of build %d was withdrawn: %s", b.GetId(), w)
		}
		if !b.GetVerification().Trusted() {
			return status.Errorf(codes.FailedPrecondition, "the artifact of build %d is not verified (%s): only verified artifacts are pinned",
				b.GetId(), orWord(b.GetVerification().Word(), "built before verification existed"))
		}
		// The build's cache entry holds its blob: once evicted, the blob may
		// be gone (deleted right after the eviction's commit), so a pin
		// could name bytes that no longer exist. A rebuild with the same
		// cache key and the same bytes is as good.
		entry, err := tx.Artifact(b.GetCacheKey())
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if entry == nil || entry.GetArtifact().GetSha256() != b.GetArtifact().GetSha256() {
			return status.Errorf(codes.FailedPrecondition, "the artifact of build %d was evicted from the cache; build it again and pin the new build", b.GetId())
		}
		if err := tx.CreatePin(&store.Pin{Name: req.GetName(), BuildId: b.GetId(), Sha256: b.GetArtifact().GetSha256(),
			CacheKey: b.GetCacheKey(), CreatedAt: timestamppb.New(a.now())}); err != nil {
			if errors.Is(err, store.ErrExists) {
				return status.Errorf(codes.AlreadyExists, "pin %q already names an artifact; a pin never changes", req.GetName())
			}
			return err
		}
		c := proto.Clone(entry).(*store.Artifact)
		c.Pins = append(c.Pins, req.GetName())
		if err := tx.PutArtifact(c); err != nil {
			return err
		}
		art = b.GetArtifact()
		return nil
	})
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.Internal, "pinning: %v", err)
	}
	return &kilnv1.PinResponse{Name: req.GetName(), Artifact: art}, nil
}

// orWord is word, or instead when word is empty.
func orWord(word, instead string) string {
	if word == "" {
		return instead
	}
	return word
}

// backuper is a store that can copy itself while it serves
// (bolt.DB.BackupFile).
type backuper interface {
	BackupFile(path string) (int64, error)
}

// Backup implements kilnv1.AdminServiceServer.
func (a *Admin) Backup(ctx context.Context, req *kilnv1.BackupRequest) (*kilnv1.BackupResponse, error) {
	if !filepath.IsAbs(req.GetPath()) {
		return nil, status.Errorf(codes.InvalidArgument, "backup path %q must be absolute", req.GetPath())
	}
	b, ok := a.Store.(backuper)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this store cannot make backups")
	}
	n, err := b.BackupFile(req.GetPath())
	switch {
	case errors.Is(err, fs.ErrExist):
		return nil, status.Errorf(codes.AlreadyExists, "%s already exists; a backup never replaces a file", req.GetPath())
	case errors.Is(err, store.ErrNoSpace):
		return nil, status.Errorf(codes.ResourceExhausted, "backup: %v", err)
	case err != nil:
		return nil, status.Errorf(codes.Internal, "backup: %v", err)
	}
	return &kilnv1.BackupResponse{Bytes: n}, nil
}

func mirrorsDir(dataDir string) string { return fmt.Sprintf("%s/mirrors", dataDir) }

// Disconnect closes the live session of a build server and forgets its
// cached credential (after revocation).
func (s *Server) Disconnect(name string) {
	s.revoked.Store(name, true)
	s.tokens.Range(func(hash, n any) bool {
		if n == name {
			s.tokens.Delete(hash)
		}
		return true
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.sessions[name]; ss != nil {
		ss.cancel(status.Error(codes.Unauthenticated, "credential revoked"))
		delete(s.sessions, name)
		s.reconnectGraceLocked(name, s.now())
		s.sched.Disconnect(name)
		s.updateTargetMetricsLocked()
	}
}

// LookupToken authenticates build servers: token hash to name. Valid
// credentials are cached in memory (every upload and session authenticates);
// revocation through the running metaserver drops the entry (Disconnect).
func (s *Server) LookupToken(ctx context.Context, hash string) (string, error) {
	if name, ok := s.tokens.Load(hash); ok {
		if _, revoked := s.revoked.Load(name); !revoked {
			return name.(string), nil
		}
		s.tokens.Delete(hash)
	}
	var name string
	err := s.st.View(func(tx store.Tx) error {
		rec, err := tx.BuildServerByTokenHash(hash)
		if err != nil {
			return err
		}
		if rec.GetRevoked() {
			return auth.ErrUnknown
		}
		name = rec.GetName()
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return "", auth.ErrUnknown
	}
	if err == nil {
		// A revocation racing this lookup may have cleared the cache after
		// our read: never cache a name revoked since this process started.
		if _, revoked := s.revoked.Load(name); !revoked {
			s.tokens.Store(hash, name)
		}
	}
	return name, err
}
