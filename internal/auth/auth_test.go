package auth

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

func TestTokensAreRandomAndStoredOnlyAsTheirHash(t *testing.T) {
	a, ha := NewToken()
	b, hb := NewToken()
	if a == b || ha == hb {
		t.Fatal("two tokens are equal")
	}
	if !strings.HasPrefix(a, "kiln_") || len(a) < 40 {
		t.Fatalf("token %q too short or unprefixed", a)
	}
	if Hash(a) != ha || strings.Contains(ha, a) || len(ha) != 64 {
		t.Fatalf("hash %q of %q", ha, a)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7070": true, "[::1]:7070": true, "localhost:1": true, "127.1.2.3:9": true,
		"10.0.0.1:7070": false, "metaserver.example:7070": false, "0.0.0.0:7070": false, ":7070": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestPlaintextIsRefusedOffLoopbackWithoutInsecure(t *testing.T) {
	if _, secure, err := (ClientTLS{}).DialCredentials("127.0.0.1:7070"); err != nil || secure {
		t.Fatalf("loopback: secure=%v err=%v, want plaintext", secure, err)
	}
	if _, _, err := (ClientTLS{}).DialCredentials("metaserver.example:7070"); !errors.Is(err, ErrPlaintext) {
		t.Fatalf("public address without --insecure: %v, want ErrPlaintext", err)
	}
	if _, secure, err := (ClientTLS{Insecure: true}).DialCredentials("metaserver.example:7070"); err != nil || secure {
		t.Fatalf("--insecure: secure=%v err=%v", secure, err)
	}
	if _, secure, err := (ClientTLS{TLS: true}).DialCredentials("127.0.0.1:7070"); err != nil || !secure {
		t.Fatalf("TLS on loopback: secure=%v err=%v", secure, err)
	}
	if _, _, err := (ClientTLS{CAFile: filepath.Join(t.TempDir(), "missing.pem")}).DialCredentials("x:1"); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
}

// TestInterceptorsGuardOnlyTheirPrefix serves the health service behind
// the interceptors over bufconn: calls without or with a wrong credential
// fail UNAUTHENTICATED, a good one passes with the build server's name.
func TestInterceptorsGuardOnlyTheirPrefix(t *testing.T) {
	token, hash := NewToken()
	var seen string
	lookup := func(ctx context.Context, h string) (string, error) {
		if h == hash {
			return "builder-1", nil
		}
		return "", ErrUnknown
	}
	unary, stream := Interceptors(lookup, "/grpc.health.v1.Health/")
	record := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		seen, _ = BuildServer(ctx)
		return handler(ctx, req)
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(unary, record), grpc.StreamInterceptor(stream))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(lis)
	defer gs.Stop()
	dial := func(opts ...grpc.DialOption) healthpb.HealthClient {
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		conn, err := grpc.NewClient("passthrough:///bufnet", opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return healthpb.NewHealthClient(conn)
	}
	ctx := context.Background()
	if _, err := dial().Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no credential: %v", err)
	}
	if _, err := dial(grpc.WithPerRPCCredentials(Bearer{Token: "kiln_wrong"})).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong credential: %v", err)
	}
	if _, err := dial(grpc.WithPerRPCCredentials(Bearer{Token: token})).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("good credential: %v", err)
	}
	if seen != "builder-1" {
		t.Fatalf("handler saw build server %q", seen)
	}
}
