package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/auth"
	"github.com/kilnbuild/kiln/internal/server"
	"github.com/kilnbuild/kiln/internal/store/pgstore"
)

// A standby metaserver does not hold the store, yet it accepts every call
// on its --listen address: it forwards each, bytes as they are, to the
// writer the database names (pgstore.Writer), and relays the answer. So
// requests, build-server sessions and web-status reads work through any
// metaserver. When the standby takes the lock it stops forwarding (the
// streams it carried end, and their clients reconnect, to it) and serves
// itself on the same address.
//
// What the writer sees of a forwarded call is the standby's connection:
// the per-address request limit counts all calls through one standby
// together.

// rawCodec passes messages through as their encoded bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, status.Errorf(codes.Internal, "proxy: cannot forward %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return status.Errorf(codes.Internal, "proxy: cannot forward into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

// Name is "proto", so the forwarded frames keep the content type of the
// messages they hold.
func (rawCodec) Name() string { return "proto" }

// writerProxy forwards calls to the current writer of a PostgreSQL store.
type writerProxy struct {
	storeURL string
	tls      auth.ClientTLS
	log      *slog.Logger

	mu      sync.Mutex
	addr    string // the endpoint conn dials
	conn    *grpc.ClientConn
	checked time.Time // last look at the database
}

// refreshEvery bounds how often the proxy reads the writer's endpoint.
const refreshEvery = time.Second

// target returns a connection to the writer, reading its endpoint from the
// database at most once per refreshEvery.
func (p *writerProxy) target(ctx context.Context) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil && time.Since(p.checked) < refreshEvery {
		return p.conn, nil
	}
	e, held, err := pgstore.Writer(ctx, p.storeURL)
	p.checked = time.Now()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "standby metaserver: finding the writer: %v", err)
	}
	if !held || e.Addr == "" {
		return nil, status.Error(codes.Unavailable, "standby metaserver: no writer at the moment; retry")
	}
	if p.conn != nil && e.Addr == p.addr {
		return p.conn, nil
	}
	tlsCfg := p.tls
	if e.TLS && tlsCfg.CAFile == "" {
		tlsCfg.TLS = true
	}
	creds, _, err := tlsCfg.DialCredentials(e.Addr)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "standby metaserver: reaching the writer at %s: %v", e.Addr, err)
	}
	conn, err := grpc.NewClient("passthrough:///"+e.Addr, creds, grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "standby metaserver: %v", err)
	}
	if p.conn != nil {
		p.conn.Close()
	}
	p.log.Info("standby: forwarding calls to the writer", "writer", e.Addr)
	p.conn, p.addr = conn, e.Addr
	return conn, nil
}

// close drops the connection to the writer.
func (p *writerProxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
}

// forwardedMD is the caller's metadata without what HTTP/2 and gRPC set
// for each connection themselves.
func forwardedMD(ctx context.Context) metadata.MD {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range md {
		if strings.HasPrefix(k, ":") || k == "content-type" || k == "user-agent" || k == "te" || strings.HasPrefix(k, "grpc-") {
			continue
		}
		out[k] = v
	}
	return out
}

// handle forwards one call (unary or streaming alike) to the writer.
func (p *writerProxy) handle(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "standby metaserver: no method")
	}
	conn, err := p.target(ss.Context())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ss.Context(), forwardedMD(ss.Context())))
	defer cancel()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	if err != nil {
		return err
	}
	up := make(chan error, 1)
	go func() { // caller -> writer
		for {
			var b []byte
			if err := ss.RecvMsg(&b); err != nil {
				if errors.Is(err, io.EOF) {
					up <- cs.CloseSend()
					return
				}
				cancel()
				up <- err
				return
			}
			if err := cs.SendMsg(&b); err != nil {
				up <- nil // the writer's side ends the call; its status comes below
				return
			}
		}
	}()
	if md, err := cs.Header(); err == nil {
		if err := ss.SendHeader(md); err != nil {
			return err
		}
	}
	for { // writer -> caller
		var b []byte
		if err := cs.RecvMsg(&b); err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(&b); err != nil {
			return err
		}
	}
}

// startStandbyProxy listens on cfg.Listen (with TLS as configured) and
// forwards every call to the writer of cfg.Store until stop is called,
// which returns once the listener is closed (forwarded streams are cut
// after a moment's grace).
func startStandbyProxy(cfg serveConfig, log *slog.Logger) (stop func(), err error) {
	p := &writerProxy{storeURL: cfg.Store, tls: auth.ClientTLS{CAFile: cfg.CA}, log: log}
	opts := []grpc.ServerOption{grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(p.handle), grpc.MaxRecvMsgSize(server.MaxMessageBytes)}
	if cfg.TLSCert != "" {
		creds, err := auth.ServerCredentials(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(creds))
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, err
	}
	gs := grpc.NewServer(opts...)
	go func() { _ = gs.Serve(ln) }()
	return func() {
		gracefully(gs, 500*time.Millisecond)
		p.close()
	}, nil
}
