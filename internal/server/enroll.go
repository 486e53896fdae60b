package server

import (
	"context"
	"errors"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/auth"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// defaultEnrollTTL is how long an enrollment token stays valid.
const defaultEnrollTTL = 7 * 24 * time.Hour

// CreateEnrollToken implements kilnv1.AdminServiceServer.
func (a *Admin) CreateEnrollToken(ctx context.Context, req *kilnv1.CreateEnrollTokenRequest) (*kilnv1.CreateEnrollTokenResponse, error) {
	ttl := defaultEnrollTTL
	if req.GetTtlSeconds() > 0 {
		ttl = time.Duration(req.GetTtlSeconds()) * time.Second
	}
	token, hash := auth.NewToken()
	token = "kilnenroll_" + token[len("kiln_"):]
	hash = auth.Hash(token)
	now := a.now()
	err := a.Store.Update(func(tx store.Tx) error {
		if err := checkOperator(tx, req.GetOperator()); err != nil {
			return err
		}
		return tx.CreateEnrollToken(&store.EnrollToken{TokenHash: hash, CreatedAt: timestamppb.New(now), ExpiresAt: timestamppb.New(now.Add(ttl)),
			Operator: req.GetOperator()})
	})
	if _, ok := status.FromError(err); ok && err != nil {
		return nil, err
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "storing enrollment token: %v", err)
	}
	return &kilnv1.CreateEnrollTokenResponse{Token: token}, nil
}

// Enroller serves the EnrollService: an enrollment token, used once, becomes
// a build server's own credential.
type Enroller struct {
	kilnv1.UnimplementedEnrollServiceServer
	Store store.Store
	// Clock decides whether a token expired (nil: the real clock).
	Clock clockwork.Clock
}

// Enroll implements kilnv1.EnrollServiceServer.
func (e *Enroller) Enroll(ctx context.Context, req *kilnv1.EnrollRequest) (*kilnv1.EnrollResponse, error) {
	if !nameRE.MatchString(req.GetName()) {
		return nil, status.Errorf(codes.InvalidArgument, "build server name %q must match %s", req.GetName(), nameRE)
	}
	token, hash := auth.NewToken()
	now := clockOrReal(e.Clock).Now()
	err := e.Store.Update(func(tx store.Tx) error {
		et, err := tx.EnrollToken(auth.Hash(req.GetEnrollToken()))
		if errors.Is(err, store.ErrNotFound) {
			return status.Error(codes.Unauthenticated, "unknown enrollment token")
		}
		if err != nil {
			return err
		}
		if et.GetUsedAt() != nil {
			return status.Error(codes.Unauthenticated, "enrollment token already used")
		}
		if now.After(et.GetExpiresAt().AsTime()) {
			return status.Error(codes.Unauthenticated, "enrollment token expired")
		}
		if err := tx.CreateBuildServer(&store.BuildServer{Name: req.GetName(), TokenHash: hash, CreatedAt: timestamppb.New(now), Operator: et.GetOperator()}); err != nil {
			if errors.Is(err, store.ErrExists) {
				return status.Errorf(codes.AlreadyExists, "build server %q already exists", req.GetName())
			}
			return err
		}
		et.UsedAt, et.UsedBy = timestamppb.New(now), req.GetName()
		return tx.PutEnrollToken(et)
	})
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.Unavailable, "enrolling: %v", err)
	}
	return &kilnv1.EnrollResponse{Name: req.GetName(), Token: token}, nil
}
