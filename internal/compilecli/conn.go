package compilecli

import (
	"context"

	"github.com/kilnbuild/kiln/internal/auth"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// maxRecvMsgSize bounds one message from the metaserver; artifact and log
// chunks are far smaller.
const maxRecvMsgSize = kilnv1.MaxClientRecvBytes

// flowWindow is the connection's and each stream's HTTP/2 receive window.
// Set, it replaces gRPC's dynamic window, which starts at 64 KiB and grows
// by bandwidth-delay estimation up to 16 MiB: an estimate is a PING sent
// with a WINDOW_UPDATE after data arrives, answered by the metaserver, so
// a new build's --wait paid four such round trips of wake-ups on both
// sides for a few KiB of states (issue 20: 0.27-0.34 ms of the client's
// CPU, in paired runs). A fixed window at the estimator's own ceiling is
// never smaller than the one it would reach, so a download is never
// slower; at most that much of one download waits unread in memory, as
// the estimator would also allow.
const flowWindow = 16 << 20

// Dial connects to the metaserver and waits, at most c.DialTimeout, until the
// connection is ready, so that an unreachable metaserver is reported at once
// as Unavailable instead of failing the first RPC obscurely. The caller closes
// the connection. Every command connects through it; so does the load
// test's gRPC floor (internal/loadtest/grpcfloor), which measures what a
// process pays for this connection and its RPCs and nothing else.
func Dial(ctx context.Context, c Connection) (*grpc.ClientConn, error) {
	transport, _, err := auth.ClientTLS{CAFile: c.CA, Insecure: c.Insecure}.DialCredentials(c.Metaserver)
	if err != nil {
		return nil, usageError("%v", err)
	}
	target, ropts, err := auth.MetaserverTarget(c.Metaserver)
	if err != nil {
		return nil, usageError("bad metaserver address %q: %v", c.Metaserver, err)
	}
	conn, err := grpc.NewClient(target, append(ropts,
		transport,
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize), callCodec()),
		grpc.WithInitialWindowSize(flowWindow), grpc.WithInitialConnWindowSize(flowWindow),
	)...)
	if err != nil {
		return nil, usageError("bad metaserver address %q: %v", c.Metaserver, err)
	}
	dctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	conn.Connect()
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			return conn, nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			conn.Close()
			return nil, status.Errorf(codes.Unavailable, "cannot connect to metaserver %s", c.Metaserver)
		}
		if !conn.WaitForStateChange(dctx, s) {
			conn.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, status.Errorf(codes.Unavailable, "cannot connect to metaserver %s within %s", c.Metaserver, c.DialTimeout)
		}
	}
}
