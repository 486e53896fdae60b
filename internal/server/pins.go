package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// maxListedPins bounds a ListPins answer (ListPinsResponse's documented cap).
const maxListedPins = 1000

// maxPinProjectFilter bounds ListPinsRequest.project: no registered
// project has a longer name.
const maxPinProjectFilter = 256

// ListPins implements kilnv1.StatusServiceServer. A pin names a build; the
// build says the project, commit, platform and whether its artifact was
// withdrawn.
func (s *Server) ListPins(_ context.Context, req *kilnv1.ListPinsRequest) (*kilnv1.ListPinsResponse, error) {
	if len(req.GetProject()) > maxPinProjectFilter {
		return nil, invalid("project", "at most %d bytes", maxPinProjectFilter)
	}
	resp := &kilnv1.ListPinsResponse{}
	err := s.st.View(func(tx store.Tx) error {
		return tx.Pins(func(p *store.Pin) error {
			rec, err := tx.Build(p.GetBuildId())
			if errors.Is(err, store.ErrNotFound) {
				return nil // purged with its build
			}
			if err != nil {
				return err
			}
			b := rec.GetBuild()
			if req.GetProject() != "" && b.GetProject() != req.GetProject() {
				return nil
			}
			if len(resp.Pins) == maxListedPins {
				resp.Truncated = true
				return store.ErrStop
			}
			resp.Pins = append(resp.Pins, &kilnv1.PinStatus{
				Name: p.GetName(), BuildId: b.GetId(), Project: b.GetProject(), Commit: b.GetCommit(),
				Sha256: p.GetSha256(), Size: b.GetArtifact().GetSize(), Platform: b.GetPlatform(),
				CreatedAt: p.GetCreatedAt(), Withdrawn: b.GetWithdrawn(),
			})
			return nil
		})
	})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading store: %v", err)
	}
	return resp, nil
}
