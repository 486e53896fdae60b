package server

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const (
	logChunkOut      = kilnv1.LogChunkOutBytes
	downloadChunkOut = kilnv1.DownloadChunkBytes
)

func buildError(id uint64, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return status.Errorf(codes.NotFound, "no build %d", id)
	}
	return status.Errorf(codes.Unavailable, "reading build %d: %v", id, err)
}

// GetBuild implements kilnv1.CompileServiceServer.
func (s *Server) GetBuild(ctx context.Context, req *kilnv1.GetBuildRequest) (*kilnv1.GetBuildResponse, error) {
	b, err := s.build(req.GetBuildId())
	if err != nil {
		return nil, buildError(req.GetBuildId(), err)
	}
	if !b.GetState().Final() {
		return &kilnv1.GetBuildResponse{Build: b}, nil
	}
	_ = s.st.View(func(tx store.Tx) error {
		reqs, err := tx.RequestsForBuild(b.GetId())
		for _, r := range reqs {
			if r.GetWithdrawnAt() == nil {
				b.Waiters++
			}
		}
		return err
	})
	return &kilnv1.GetBuildResponse{Build: b}, nil
}

// currentLog returns the attempt number whose log is the build's log.
func currentLog(b *kilnv1.Build) int {
	if n := len(b.GetAttempts()); n > 0 {
		return attemptNumber(b.GetAttempts()[n-1].GetId())
	}
	return 0
}

// WatchBuild implements kilnv1.CompileServiceServer.
func (s *Server) WatchBuild(req *kilnv1.WatchBuildRequest, stream kilnv1.CompileService_WatchBuildServer) error {
	id := req.GetBuildId()
	ctx := stream.Context()
	withLog := req.GetLogOffset() >= 0
	offset := uint64(max(req.GetLogOffset(), 0))
	logAttempt := -1
	var last *kilnv1.Build
	for {
		changed, release := s.changes.wait(id)
		b, err := s.build(id)
		if err != nil {
			release()
			return buildError(id, err)
		}
		msg := &kilnv1.WatchBuildResponse{}
		if withLog {
			n := currentLog(b)
			if n != logAttempt {
				if logAttempt != -1 {
					offset = 0 // a new attempt starts a new log
				}
				logAttempt = n
			}
			if n > 0 {
				data, err := s.logs.read(id, n, offset, logChunkOut)
				if err != nil {
					return status.Errorf(codes.Internal, "reading log: %v", err)
				}
				if len(data) > 0 {
					msg.LogOffset, msg.Log = offset, data
					offset += uint64(len(data))
				}
			}
		}
		if last == nil || len(msg.Log) > 0 || buildChanged(last, b) {
			msg.Build = b
			if err := stream.Send(msg); err != nil {
				release()
				return err
			}
			last = b
		}
		if len(msg.Log) == logChunkOut {
			release()
			continue // more log is waiting
		}
		if b.GetState().Final() {
			release()
			return nil
		}
		select {
		case <-ctx.Done():
			release()
			return ctx.Err()
		case <-s.closing:
			release()
			return status.Error(codes.Unavailable, errStopped.Error())
		case <-changed:
			release()
		}
	}
}

func buildChanged(a, b *kilnv1.Build) bool {
	if a.GetState() != b.GetState() || a.GetQueuePosition() != b.GetQueuePosition() || len(a.GetAttempts()) != len(b.GetAttempts()) ||
		a.GetVerification() != b.GetVerification() || len(a.GetReplicas()) != len(b.GetReplicas()) {
		return true
	}
	if n := len(a.GetAttempts()); n > 0 && a.GetAttempts()[n-1].GetPhase() != b.GetAttempts()[n-1].GetPhase() {
		return true
	}
	return len(a.GetWaitingReasons()) != len(b.GetWaitingReasons())
}

// GetLog implements kilnv1.CompileServiceServer.
func (s *Server) GetLog(req *kilnv1.GetLogRequest, stream kilnv1.CompileService_GetLogServer) error {
	id := req.GetBuildId()
	offset := req.GetOffset()
	if req.GetDiffoscope() {
		return s.sendDiffoscope(stream, id, offset)
	}
	logAttempt := -1
	for {
		changed, release := s.changes.wait(id)
		err := s.followLog(stream, id, &offset, &logAttempt, req.GetFollow(), changed)
		release()
		if err != errMore {
			return err
		}
	}
}

// errMore tells GetLog's loop to wait for the next change and go on.
var errMore = errors.New("more")

// followLog sends what the log has from *offset; errMore when following and
// the build is not final yet (after a change was signalled).
func (s *Server) followLog(stream kilnv1.CompileService_GetLogServer, id uint64, offset *uint64, logAttempt *int, follow bool, changed <-chan struct{}) error {
	b, err := s.build(id)
	if err != nil {
		return buildError(id, err)
	}
	n := currentLog(b)
	if *logAttempt != -1 && n != *logAttempt {
		*offset = 0 // a new attempt starts a new log
	}
	*logAttempt = n
	for n > 0 {
		data, err := s.logs.read(id, n, *offset, logChunkOut)
		if err != nil {
			return status.Errorf(codes.Internal, "reading log: %v", err)
		}
		if len(data) == 0 {
			break
		}
		if err := stream.Send(&kilnv1.GetLogResponse{Offset: *offset, Data: data}); err != nil {
			return err
		}
		*offset += uint64(len(data))
	}
	if !follow || b.GetState().Final() {
		return nil
	}
	select {
	case <-stream.Context().Done():
		return stream.Context().Err()
	case <-s.closing:
		return status.Error(codes.Unavailable, errStopped.Error())
	case <-changed:
		return errMore
	}
}

// DownloadArtifact implements kilnv1.CompileServiceServer.
func (s *Server) DownloadArtifact(req *kilnv1.DownloadArtifactRequest, stream kilnv1.CompileService_DownloadArtifactServer) error {
	build, err := s.downloadable(req)
	if status.Code(err) == codes.FailedPrecondition && req.GetPin() == "" && s.isActive(req.GetBuildId()) {
		// A watcher may have seen the build's first result in memory
		// before its commit: once what is queued is on disk, read again.
		if werr := s.commits.wait(func(store.Tx) error { return nil }); werr == nil {
			build, err = s.downloadable(req)
		}
	}
	if err != nil {
		return err
	}
	sha := build.GetArtifact().GetSha256()
	r, size, err := s.blobs.open(stream.Context(), sha)
	if errors.Is(err, cas.ErrCorrupt) {
		s.dropCorrupt(build)
		return status.Errorf(codes.DataLoss, "artifact %s is corrupt on the metaserver and was discarded; request the build again", sha)
	}
	if errors.Is(err, cas.ErrNotFound) {
		return status.Errorf(codes.NotFound, "artifact %s of build %d is no longer stored (evicted); request the build again", sha, build.GetId())
	}
	if err != nil {
		return status.Errorf(codes.Internal, "opening artifact: %v", err)
	}
	defer r.Close()
	if err := stream.Send(&kilnv1.DownloadArtifactResponse{Msg: &kilnv1.DownloadArtifactResponse_Header{Header: &kilnv1.DownloadHeader{
		BuildId: build.GetId(), Artifact: build.GetArtifact(), Platform: build.GetPlatform()}}}); err != nil {
		return err
	}
	// Read (and verify) ahead in another goroutine, so hashing overlaps
	// with sending on the two cores instead of running in series.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	chunks, free := readAhead(ctx, r, downloadChunkOut, 4)
	var sent int64
	for c := range chunks {
		if c.err != nil {
			if errors.Is(c.err, cas.ErrCorrupt) {
				s.dropCorrupt(build)
				return status.Errorf(codes.DataLoss, "artifact %s is corrupt on the metaserver and was discarded; request the build again", sha)
			}
			return status.Errorf(codes.Internal, "reading artifact: %v", c.err)
		}
		if err := stream.Send(&kilnv1.DownloadArtifactResponse{Msg: &kilnv1.DownloadArtifactResponse_Data{Data: c.data}}); err != nil {
			return err
		}
		sent += int64(len(c.data))
		free <- c.data[:cap(c.data)] // Send has serialized it: reuse
	}
	s.metrics.downloadBytes.Add(float64(sent))
	_ = size
	return nil
}

// isActive reports whether build id is queued or running.
func (s *Server) isActive(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.active[id]
	return ok
}

// downloadable reads the build req names, as stored, and says why its
// artifact may not be served.
func (s *Server) downloadable(req *kilnv1.DownloadArtifactRequest) (*kilnv1.Build, error) {
	var build *kilnv1.Build
	err := s.st.View(func(tx store.Tx) error {
		id := req.GetBuildId()
		if name := req.GetPin(); name != "" {
			p, err := tx.Pin(name)
			if errors.Is(err, store.ErrNotFound) {
				return status.Errorf(codes.NotFound, "no pin named %q", name)
			}
			if err != nil {
				return err
			}
			id = p.GetBuildId()
		}
		rec, err := tx.Build(id)
		if err != nil {
			return buildError(id, err)
		}
		build = rec.GetBuild()
		return nil
	})
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	if err := withdrawnError(build, req.GetPin()); err != nil {
		return nil, err
	}
	// A pin names a verified artifact (Admin.Pin), or one an
	// administrator pinned before verification existed: served as such.
	if err := servable(build, req.GetPin() != "" || req.GetAcceptUnverified()); err != nil {
		return nil, err
	}
	return build, nil
}

// servable says why b's artifact may not be downloaded: it has none, or
// it is not verified and the request does not accept that (verify.go).
func servable(b *kilnv1.Build, acceptUnverified bool) error {
	v := b.GetVerification()
	switch {
	case b.GetArtifact() == nil || (b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED && v == kilnv1.Verification_VERIFICATION_UNSPECIFIED):
		return status.Errorf(codes.FailedPrecondition, "build %d has no artifact (state %s)", b.GetId(), b.GetState().Word())
	case v.Trusted() && b.GetState() == kilnv1.BuildState_BUILD_STATE_SUCCEEDED:
		return nil
	case v.Trusted():
		// A verified failure: any artifact is a lone success's.
		return status.Errorf(codes.FailedPrecondition, "build %d has no artifact (state %s)", b.GetId(), b.GetState().Word())
	case !acceptUnverified:
		return status.Errorf(codes.FailedPrecondition, "the artifact of build %d is %s: not served without --accept unverified",
			b.GetId(), orWord(v.Word(), "not verified (built before verification existed)"))
	}
	return nil
}

// dropCorrupt removes a corrupt blob and its cache entry so the next request
// builds it again.
func (s *Server) dropCorrupt(b *kilnv1.Build) {
	s.log.Error("corrupt artifact discarded", "build_id", b.GetId(), "sha256", b.GetArtifact().GetSha256())
	_ = s.blobs.deleteFile(context.Background(), b.GetArtifact().GetSha256())
	err := s.commits.wait(func(tx store.Tx) error {
		if err := tx.DeleteArtifact(b.GetCacheKey()); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return s.blobs.delete(tx, b.GetArtifact().GetSha256())
	})
	if err == nil {
		s.cacheEntries.Add(-1)
		s.cacheBytes.Add(-int64(b.GetArtifact().GetSize()))
	}
}

// chunk is one read-ahead buffer, or the error that ended the reading.
type chunk struct {
	data []byte
	err  error
}

// readAhead reads r in size-byte chunks on its own goroutine, up to depth
// chunks ahead of the consumer, and closes the channel at EOF (or after
// sending an error). The consumer hands each buffer back on free when done
// with it (free has room for all of them), so memory stays at depth+1 buffers.
func readAhead(ctx context.Context, r io.Reader, size, depth int) (<-chan chunk, chan<- []byte) {
	out := make(chan chunk, depth)
	free := make(chan []byte, depth+2)
	go func() {
		defer close(out)
		for {
			var buf []byte
			select {
			case buf = <-free:
			default:
				buf = make([]byte, size)
			}
			n, err := io.ReadFull(r, buf)
			if n > 0 {
				select {
				case out <- chunk{data: buf[:n]}:
				case <-ctx.Done():
					return
				}
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return
			}
			if err != nil {
				select {
				case out <- chunk{err: err}:
				case <-ctx.Done():
				}
				return
			}
		}
	}()
	return out, free
}
