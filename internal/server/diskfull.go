package server

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// writeMethods are the calls refused while the disk is full: each would
// add to the store or the blob directory. Everything else (status pages,
// build state, logs, downloads, backups to another disk) goes on, and so
// do the build servers' sessions, whose changes wait in the committer.
var writeMethods = map[string]bool{
	kilnv1.CompileService_Submit_FullMethodName:          true,
	kilnv1.CompileService_Cancel_FullMethodName:          true,
	kilnv1.EnrollService_Enroll_FullMethodName:           true,
	kilnv1.WorkerService_UploadArtifact_FullMethodName:   true,
	kilnv1.AdminService_AddProject_FullMethodName:        true,
	kilnv1.AdminService_AddBuildServer_FullMethodName:    true,
	kilnv1.AdminService_RevokeBuildServer_FullMethodName: true,
	kilnv1.AdminService_Pin_FullMethodName:               true,
	kilnv1.AdminService_CreateEnrollToken_FullMethodName: true,
	kilnv1.AdminService_CancelBuild_FullMethodName:       true,
}

// setDiskFull records whether the last commit found the disk full (the
// committer's onSpace).
func (s *Server) setDiskFull(err error) {
	if err == nil {
		s.diskFull.Store(nil)
		s.metrics.diskFull.Set(0)
		return
	}
	s.diskFull.Store(&err)
	s.metrics.diskFull.Set(1)
}

// DiskFull returns the error of the commit that found the disk full, nil
// when the last commit succeeded.
func (s *Server) DiskFull() error {
	if p := s.diskFull.Load(); p != nil {
		return *p
	}
	return nil
}

// refuseWrite returns the Unavailable error for a write method while the
// disk is full, nil otherwise.
func (s *Server) refuseWrite(method string) error {
	if !writeMethods[method] {
		return nil
	}
	if err := s.DiskFull(); err != nil {
		return status.Errorf(codes.Unavailable, "the metaserver's disk is full: writes are refused until space returns (reads go on): %v", err)
	}
	return nil
}

// WriteGate returns interceptors that refuse the write methods with
// Unavailable while the disk is full, for the public and the admin
// servers alike. Clients retry Unavailable.
func (s *Server) WriteGate() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := s.refuseWrite(info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := s.refuseWrite(info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
	return unary, stream
}
