package server

import (
	"context"
	"errors"

	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/translog"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// GetProvenance implements kilnv1.CompileServiceServer.
func (s *Server) GetProvenance(_ context.Context, req *kilnv1.GetProvenanceRequest) (*kilnv1.GetProvenanceResponse, error) {
	b, err := s.build(req.GetBuildId())
	if err != nil {
		return nil, buildError(req.GetBuildId(), err)
	}
	refs := b.GetProvenance()
	if len(refs) == 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "build %d has no provenance in the log (state %s)", b.GetId(), b.GetState().Word())
	}
	out := &kilnv1.Provenance{BuildId: b.GetId(), VerifierKey: s.notary.VerifierKey}
	err = s.st.View(func(tx store.Tx) error {
		idx := make([]int64, len(refs))
		for i, r := range refs {
			data, err := tx.TlogEntry(int64(r.GetIndex()))
			if err != nil {
				return err
			}
			idx[i] = int64(r.GetIndex())
			out.Entries = append(out.Entries, &kilnv1.LogEntry{Ref: r, Data: data})
		}
		cp, tree, err := s.notary.Checkpoint(tx)
		if err != nil {
			return err
		}
		out.Checkpoint = cp
		tiles, err := translog.Prove(tx, tree, idx, int64(req.GetKnownTreeSize()))
		if err != nil {
			return err
		}
		for _, p := range sortedPaths(tiles) {
			out.Tiles = append(out.Tiles, &kilnv1.LogTile{Path: p, Data: tiles[p]})
		}
		return nil
	})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading the log: %v", err)
	}
	return &kilnv1.GetProvenanceResponse{Provenance: out}, nil
}

func sortedPaths(m map[string][]byte) []string {
	t := &translog.Tiles{Data: m}
	return t.Paths()
}

// GetLogCheckpoint implements kilnv1.StatusServiceServer.
func (s *Server) GetLogCheckpoint(context.Context, *kilnv1.GetLogCheckpointRequest) (*kilnv1.GetLogCheckpointResponse, error) {
	var cp []byte
	err := s.st.View(func(tx store.Tx) (err error) {
		cp, _, err = s.notary.Checkpoint(tx)
		return err
	})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading the log: %v", err)
	}
	return &kilnv1.GetLogCheckpointResponse{Checkpoint: cp, VerifierKey: s.notary.VerifierKey}, nil
}

// GetLogTile implements kilnv1.StatusServiceServer.
func (s *Server) GetLogTile(_ context.Context, req *kilnv1.GetLogTileRequest) (*kilnv1.GetLogTileResponse, error) {
	if _, err := tlog.ParseTilePath(req.GetPath()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "tile path %q: %v", req.GetPath(), err)
	}
	var data []byte
	err := s.st.View(func(tx store.Tx) (err error) {
		data, err = translog.Tile(tx, req.GetPath())
		return err
	})
	switch {
	case errors.Is(err, translog.ErrNoTile), errors.Is(err, store.ErrNotFound):
		return nil, status.Errorf(codes.NotFound, "tile %s is not in the log", req.GetPath())
	case err != nil:
		return nil, status.Errorf(codes.InvalidArgument, "tile %s: %v", req.GetPath(), err)
	}
	return &kilnv1.GetLogTileResponse{Data: data}, nil
}
