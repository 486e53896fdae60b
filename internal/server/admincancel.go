package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// defaultAdminCancelReason is the failure of a build an operator cancelled
// without giving a reason.
const defaultAdminCancelReason = "cancelled by an administrator"

// CancelBuild implements kilnv1.AdminServiceServer. It needs the running
// metaserver (Admin.Cancel set): the store alone cannot stop a build server
// or notify requesters.
func (a *Admin) CancelBuild(ctx context.Context, req *kilnv1.CancelBuildRequest) (*kilnv1.CancelBuildResponse, error) {
	if req.GetBuildId() == 0 {
		return nil, status.Error(codes.InvalidArgument, "a build id is required")
	}
	if len(req.GetReason()) > maxReasonBytes {
		return nil, status.Errorf(codes.InvalidArgument, "reason longer than %d bytes", maxReasonBytes)
	}
	if a.Cancel == nil {
		return nil, status.Error(codes.FailedPrecondition, "cancelling a build needs the running metaserver (metaserver serve) on this data directory")
	}
	b, err := a.Cancel(req.GetBuildId(), req.GetReason())
	if err != nil {
		return nil, err
	}
	return &kilnv1.CancelBuildResponse{Build: b}, nil
}

// AdminCancel cancels a queued or running build on the operator's
// authority: the build ends CANCELLED with reason (a default when empty),
// its build server is told to stop the attempt, and its requesters are
// notified. It returns the cancelled build once that is committed, or a
// gRPC status error: NOT_FOUND for an unknown build, FAILED_PRECONDITION for
// a build already final, UNAVAILABLE when the store fails.
func (s *Server) AdminCancel(id uint64, reason string) (*kilnv1.Build, error) {
	if reason == "" {
		reason = defaultAdminCancelReason
	}
	resp, err := s.cancel(id, reason)
	if err != nil {
		return nil, err
	}
	return resp.GetBuild(), nil
}
