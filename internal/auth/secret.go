package auth

import (
	"context"
	"crypto/subtle"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// SecretInterceptors return server interceptors that admit a call to a
// method whose full name starts with prefix (e.g. "/kiln.v1.AdminService/")
// only with "authorization: Bearer SECRET", compared in constant time, and
// refuse it with Unauthenticated otherwise. Other methods pass untouched.
// An empty secret refuses every guarded call.
func SecretInterceptors(secret, prefix string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	check := func(ctx context.Context) error {
		md, _ := metadata.FromIncomingContext(ctx)
		for _, v := range md.Get("authorization") {
			if t, ok := strings.CutPrefix(v, "Bearer "); ok && secret != "" &&
				subtle.ConstantTimeCompare([]byte(t), []byte(secret)) == 1 {
				return nil
			}
		}
		return status.Error(codes.Unauthenticated, "administration needs the writer's admin secret (authorization: Bearer <secret>, read from the store's database)")
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if strings.HasPrefix(info.FullMethod, prefix) {
			if err := check(ctx); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if strings.HasPrefix(info.FullMethod, prefix) {
			if err := check(ss.Context()); err != nil {
				return err
			}
		}
		return handler(srv, ss)
	}
	return unary, stream
}
