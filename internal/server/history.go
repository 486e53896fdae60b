package server

import (
	"context"
	"errors"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// maxHistorySamples bounds a GetHistory answer (its documented cap).
const maxHistorySamples = 2000

// sampleLoop takes a sample of the server at once and then at every tick
// of t (SampleInterval) until ctx ends, and sweeps the request groups after
// each tick. A sample that cannot be committed is logged and lost: the
// charts show a gap, nothing else depends on it.
func (s *Server) sampleLoop(ctx context.Context, t clockwork.Ticker) {
	keep := s.cfg.SampleKeep
	var prev cacheCounts
	defer t.Stop()
	for {
		sm := s.sample(&prev)
		s.commits.enqueue(func(tx store.Tx) error { return tx.PutSample(sm, keep) }, func(err error) {
			if err != nil {
				s.log.Warn("storing a sample", "err", err)
			}
		})
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		if ctx.Err() == nil {
			s.sweepGroups()
		}
	}
}

// cacheCounts are the cache counters at the previous sample.
type cacheCounts struct{ hits, misses float64 }

// sample reads the server's state now; prev turns the cache counters
// (since the process started) into counts since the previous sample.
func (s *Server) sample(prev *cacheCounts) *store.Sample {
	hits, misses := counterValue(s.metrics.cacheHits), counterValue(s.metrics.cacheMisses)
	sm := &store.Sample{At: timestamppb.New(s.now()),
		CacheHits: uint64(max(hits-prev.hits, 0)), CacheMisses: uint64(max(misses-prev.misses, 0))}
	prev.hits, prev.misses = hits, misses
	s.mu.Lock()
	defer s.mu.Unlock()
	sm.QueueLength = uint32(s.sched.QueueLen())
	sm.ConnectedTargets = uint32(s.sched.TargetCount())
	sm.ConnectedBuildServers = uint32(len(s.sessions))
	for _, ab := range s.active {
		if ab.rec.GetBuild().GetState() == kilnv1.BuildState_BUILD_STATE_RUNNING {
			sm.RunningBuilds++
		}
	}
	return sm
}

// GetHistory implements kilnv1.StatusServiceServer.
func (s *Server) GetHistory(_ context.Context, req *kilnv1.GetHistoryRequest) (*kilnv1.GetHistoryResponse, error) {
	every := s.cfg.SampleInterval
	resp := &kilnv1.GetHistoryResponse{IntervalSeconds: uint32(max(every/time.Second, 1))}
	var since time.Time
	if req.GetSince() != nil {
		if err := req.GetSince().CheckValid(); err != nil {
			return nil, invalid("since", "%v", err)
		}
		since = req.GetSince().AsTime()
	}
	err := s.st.View(func(tx store.Tx) error {
		return tx.Samples(since, func(sm *store.Sample) error {
			if len(resp.Samples) == maxHistorySamples {
				return store.ErrStop
			}
			resp.Samples = append(resp.Samples, &kilnv1.Sample{At: sm.GetAt(), QueueLength: sm.GetQueueLength(),
				ConnectedTargets: sm.GetConnectedTargets(), CacheHits: sm.GetCacheHits(), CacheMisses: sm.GetCacheMisses(),
				ConnectedBuildServers: sm.GetConnectedBuildServers(), RunningBuilds: sm.GetRunningBuilds()})
			return nil
		})
	})
	if err != nil && !errors.Is(err, store.ErrStop) {
		return nil, status.Errorf(codes.Unavailable, "reading store: %v", err)
	}
	return resp, nil
}
