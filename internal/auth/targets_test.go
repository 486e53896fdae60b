package auth

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestSplitMetaservers(t *testing.T) {
	got, err := SplitMetaservers(" 127.0.0.1:1, ms-b.example:7070 ,")
	if err != nil || len(got) != 2 || got[0] != "127.0.0.1:1" || got[1] != "ms-b.example:7070" {
		t.Fatalf("SplitMetaservers = %v, %v", got, err)
	}
	for _, bad := range []string{"", ",", "127.0.0.1", "127.0.0.1:1,nohost", ":7070"} {
		if got, err := SplitMetaservers(bad); err == nil {
			t.Errorf("SplitMetaservers(%q) = %v, want an error", bad, got)
		}
	}
	if !AllLoopback("127.0.0.1:1,[::1]:2,localhost:3") || AllLoopback("127.0.0.1:1,10.0.0.5:2") {
		t.Error("AllLoopback must hold only when every address is loopback")
	}
}

// serveHealth serves the health service on a loopback port.
func serveHealth(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

func TestMetaserverTarget_SeveralAddressesReachTheLiveOne(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there now
	live := serveHealth(t)
	target, opts, err := MetaserverTarget(deadAddr + "," + live)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(target, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("health through %s: %v", target, err)
	}
	one, opts, err := MetaserverTarget(live)
	if err != nil || one != "passthrough:///"+live || len(opts) != 0 {
		t.Fatalf("one address: %q %v %v", one, opts, err)
	}
}

func TestSecretInterceptors_AdmitOnlyTheSecret(t *testing.T) {
	unary, _ := SecretInterceptors("s3cret", "/kiln.v1.AdminService/")
	called := 0
	handler := func(context.Context, any) (any, error) { called++; return "ok", nil }
	call := func(method string, md ...string) error {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(md...))
		_, err := unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, handler)
		return err
	}
	for name, md := range map[string][]string{
		"no secret":    nil,
		"wrong secret": {"authorization", "Bearer s3cre"},
		"no Bearer":    {"authorization", "s3cret"},
	} {
		if err := call("/kiln.v1.AdminService/AddProject", md...); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
	}
	if called != 0 {
		t.Fatalf("the handler ran %d times for refused calls", called)
	}
	if err := call("/kiln.v1.AdminService/AddProject", "authorization", "Bearer s3cret"); err != nil || called != 1 {
		t.Fatalf("the secret: %v (handler ran %d times)", err, called)
	}
	if err := call("/kiln.v1.StatusService/GetFarm"); err != nil || called != 2 {
		t.Fatalf("another service must pass untouched: %v", err)
	}
	emptyUnary, _ := SecretInterceptors("", "/kiln.v1.AdminService/")
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "))
	if _, err := emptyUnary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/kiln.v1.AdminService/Pin"}, handler); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("an empty secret admitted a call: %v", err)
	}
}
