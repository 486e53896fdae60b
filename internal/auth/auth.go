// Package auth holds build-server credentials: random bearer tokens stored
// only as their sha256, the gRPC interceptors that turn a token into the
// build server's name, and the client-side credentials that send it.
//
// Tokens are 32 random bytes, so a plain sha256 is a sufficient one-way
// store (no password stretching is needed for high-entropy secrets).
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// tokenPrefix makes tokens recognizable in logs and secret scanners.
const tokenPrefix = "kiln_"

// NewToken returns a fresh random credential and its hash.
func NewToken() (token, hash string) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, Hash(token)
}

// Hash returns the stored form of a credential.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// ErrUnknown is returned by a Lookup for a token that matches no build
// server, or a revoked one.
var ErrUnknown = errors.New("auth: unknown or revoked credential")

// Lookup maps a token hash to the build server's name.
type Lookup func(ctx context.Context, hash string) (string, error)

type identityKey struct{}

// BuildServer returns the authenticated build server's name from ctx.
func BuildServer(ctx context.Context) (string, bool) {
	name, ok := ctx.Value(identityKey{}).(string)
	return name, ok
}

// WithBuildServer returns ctx carrying name as the authenticated build server.
func WithBuildServer(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, identityKey{}, name)
}

func authenticate(ctx context.Context, lookup Lookup) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			token = t
		}
	}
	if token == "" {
		return nil, status.Error(codes.Unauthenticated, "missing build server credential (authorization: Bearer <token>)")
	}
	name, err := lookup(ctx, Hash(token))
	if errors.Is(err, ErrUnknown) {
		return nil, status.Error(codes.Unauthenticated, "unknown or revoked build server credential")
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "checking credential: %v", err)
	}
	return WithBuildServer(ctx, name), nil
}

// Interceptors returns server interceptors that authenticate every method
// whose full name starts with one of prefixes (e.g. "/kiln.v1.WorkerService/")
// and leave other methods alone.
func Interceptors(lookup Lookup, prefixes ...string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	guarded := func(method string) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(method, p) {
				return true
			}
		}
		return false
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !guarded(info.FullMethod) {
			return handler(ctx, req)
		}
		ctx, err := authenticate(ctx, lookup)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !guarded(info.FullMethod) {
			return handler(srv, ss)
		}
		ctx, err := authenticate(ss.Context(), lookup)
		if err != nil {
			return err
		}
		return handler(srv, &wrapped{ServerStream: ss, ctx: ctx})
	}
	return unary, stream
}

type wrapped struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrapped) Context() context.Context { return w.ctx }

// Bearer is client-side per-RPC credentials carrying a token.
type Bearer struct {
	Token string
	// Secure requires transport security (set when dialing with TLS).
	Secure bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (b Bearer) RequireTransportSecurity() bool { return b.Secure }
