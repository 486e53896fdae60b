package server

import (
	"context"
	"maps"
	"sort"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/platform"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// GetOverview implements kilnv1.StatusServiceServer.
func (s *Server) GetOverview(ctx context.Context, _ *kilnv1.GetOverviewRequest) (*kilnv1.GetOverviewResponse, error) {
	resp := &kilnv1.GetOverviewResponse{BuildsByState: map[string]uint64{}, StartedAt: timestamppb.New(s.started), Version: s.cfg.Version}
	err := s.st.View(func(tx store.Tx) error {
		counts, err := tx.CountBuildsByState()
		if err != nil {
			return err
		}
		for st, n := range counts {
			resp.BuildsByState[st.Word()] = n
		}
		return nil
	})
	resp.CacheArtifacts = uint64(max(s.cacheEntries.Load(), 0))
	resp.CacheBytes = uint64(max(s.cacheBytes.Load(), 0))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading store: %v", err)
	}
	resp.CacheHits = uint64(counterValue(s.metrics.cacheHits))
	resp.CacheMisses = uint64(counterValue(s.metrics.cacheMisses))
	s.mu.Lock()
	defer s.mu.Unlock()
	resp.ConnectedBuildServers = uint32(len(s.sessions))
	resp.ConnectedTargets = uint32(s.sched.TargetCount())
	resp.QueueLength = uint32(s.sched.QueueLen())
	if b := s.sched.Oldest(); b != nil {
		if ab := s.active[b.ID]; ab != nil {
			resp.OldestQueuedAt = ab.rec.GetBuild().GetCreatedAt()
		}
	}
	for _, ab := range s.active {
		resp.WaitingRequests += uint64(ab.waiters)
	}
	return resp, nil
}

// ListBuildServers implements kilnv1.StatusServiceServer.
func (s *Server) ListBuildServers(ctx context.Context, _ *kilnv1.ListBuildServersRequest) (*kilnv1.ListBuildServersResponse, error) {
	var recs []*store.BuildServer
	err := s.st.View(func(tx store.Tx) error {
		var err error
		recs, err = tx.BuildServers()
		return err
	})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading store: %v", err)
	}
	resp := &kilnv1.ListBuildServersResponse{}
	s.mu.Lock()
	for _, r := range recs {
		bs := &kilnv1.BuildServerStatus{
			Name: r.GetName(), Targets: r.GetTargets(), LastSeen: r.GetLastSeen(),
			BuildsSucceeded: r.GetBuildsSucceeded(), BuildsFailed: r.GetBuildsFailed(), Revoked: r.GetRevoked(),
			AttemptsLost: r.GetAttemptsLost(), Operator: operatorName(r), DisputesLost: r.GetDisputesLost(), Marked: r.GetMarked(),
			AgreeingInRow: r.GetAgreeingInRow(),
			PublicKey:     r.GetPublicKey(),
		}
		if len(bs.PublicKey) == 0 {
			bs.PublicKey = s.keys[r.GetName()] // pinned, its record not yet committed
		}
		if st := s.standings[r.GetName()]; st != nil {
			bs.ConsecutiveLosses = st.losses
			// The standing is ahead of the record (its commit may be
			// queued still).
			if st.marked != "" {
				bs.Marked = st.marked
			}
			if st.agreeing != nil || st.marked != "" {
				bs.AgreeingInRow = maps.Clone(st.agreeing) // st.agreeing changes under s.mu
			}
			if s.now().Before(st.asideUntil) {
				bs.PutAsideUntil = timestamppb.New(st.asideUntil)
				bs.PutAsideReason = st.reason
			}
		}
		if srv := s.sched.Server(r.GetName()); srv != nil {
			bs.Connected = true
			bs.Slots = uint32(srv.Slots)
			bs.Draining = srv.Draining
			bs.Policy = srv.Policy
			bs.LastSeen = timestamppb.New(s.now())
			for _, a := range srv.Running {
				bs.RunningBuildIds = append(bs.RunningBuildIds, a.Build.ID)
			}
			sort.Slice(bs.RunningBuildIds, func(i, j int) bool { return bs.RunningBuildIds[i] < bs.RunningBuildIds[j] })
			if ss := s.sessions[r.GetName()]; ss != nil {
				bs.Unsandboxed = ss.unsandboxed
				bs.RejectedTargets = ss.rejected
				bs.Targets = ss.targets
			}
		}
		resp.BuildServers = append(resp.BuildServers, bs)
	}
	s.mu.Unlock()
	sort.SliceStable(resp.BuildServers, func(i, j int) bool {
		a, b := resp.BuildServers[i], resp.BuildServers[j]
		if a.Connected != b.Connected {
			return a.Connected
		}
		return a.Name < b.Name
	})
	return resp, nil
}

// ListBuilds implements kilnv1.StatusServiceServer.
func (s *Server) ListBuilds(ctx context.Context, req *kilnv1.ListBuildsRequest) (*kilnv1.ListBuildsResponse, error) {
	size := int(req.GetPageSize())
	if size <= 0 {
		size = 50
	}
	size = min(size, 500)
	var before uint64
	if tok := req.GetPageToken(); tok != "" {
		v, err := strconv.ParseUint(tok, 10, 64)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, "malformed page token")
		}
		before = v
	}
	f := store.BuildFilter{State: req.GetState(), Project: req.GetProject(), Platform: &kilnv1.PlatformConstraints{}}
	// Platform filters take the spellings constraints take ("amd64",
	// "BIG", "lp64" and "any" included) and match the canonical ones stored.
	for _, pf := range platform.Registry {
		if !pf.Filterable {
			continue
		}
		if err := platform.Set(f.Platform, pf.Name, pf.ListFilter(req)); err != nil {
			return nil, invalid(pf.Name, "%v", err)
		}
	}
	var recs []*store.Build
	err := s.st.View(func(tx store.Tx) error {
		var err error
		recs, err = tx.ListBuilds(f, before, size+1)
		return err
	})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading store: %v", err)
	}
	resp := &kilnv1.ListBuildsResponse{}
	if len(recs) > size {
		recs = recs[:size]
		resp.NextPageToken = strconv.FormatUint(recs[size-1].GetBuild().GetId(), 10)
	}
	s.mu.Lock()
	for _, r := range recs {
		if ab, ok := s.active[r.GetBuild().GetId()]; ok {
			resp.Builds = append(resp.Builds, s.viewLocked(ab))
		} else {
			resp.Builds = append(resp.Builds, redactLegacy(r.GetBuild()))
		}
	}
	s.mu.Unlock()
	return resp, nil
}
