// Command webstatus serves Kiln's public status pages: the farm overview,
// build servers, builds, logs (followed live) and artifact downloads, all
// read from the metaserver's StatusService and CompileService.
//
//	webstatus --metaserver 127.0.0.1:7070 --listen 127.0.0.1:8080
//
// It keeps no state. SIGTERM or SIGINT stops it gracefully: the listener
// closes, followed logs end, and requests in flight get --shutdown-timeout
// to finish.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/kilnbuild/kiln/internal/auth"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/kilnbuild/kiln/internal/web"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// version is set at link time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	cfg, err := parseConfig(os.Args[1:], defaultGetenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "webstatus:", err)
		os.Exit(2)
	}
	level, _ := parseLevel(cfg.LogLevel) // validated
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("webstatus stopped", "error", err)
		os.Exit(1)
	}
}

// run listens on cfg.Listen and serves until ctx ends.
func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	return serve(ctx, cfg, log, lis)
}

// serve serves the pages on lis until ctx ends, then shuts down within
// cfg.ShutdownTimeout: followed logs end at once, other requests in flight
// get the rest of the timeout. It closes lis.
func serve(ctx context.Context, cfg Config, log *slog.Logger, lis net.Listener) error {
	defer lis.Close()
	transport, _, err := auth.ClientTLS{CAFile: cfg.CA, Insecure: cfg.Insecure}.DialCredentials(cfg.Metaserver)
	if err != nil {
		return err
	}
	target, ropts, err := auth.MetaserverTarget(cfg.Metaserver)
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(target, append(ropts, transport)...)
	if err != nil {
		return fmt.Errorf("metaserver client for %s: %w", cfg.Metaserver, err)
	}
	defer cc.Close()
	// Closing draining at shutdown ends followed logs, which would otherwise
	// hold the shutdown until their builds finish; downloads keep going.
	draining := make(chan struct{})
	handler := web.NewHandler(kilnv1.NewStatusServiceClient(cc), kilnv1.NewCompileServiceClient(cc), web.Options{
		Logger: log, RPCTimeout: cfg.RPCTimeout, PageSize: uint32(cfg.PageSize), Draining: draining,
	})

	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: log follows and downloads are long by design.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("webstatus serving", "listen", lis.Addr().String(), "metaserver", cfg.Metaserver, "version", version)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout_s", cfg.ShutdownTimeout.Seconds())
	shutCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	close(draining)
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
