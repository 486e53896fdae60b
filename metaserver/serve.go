package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/kilnbuild/kiln/internal/auth"
	"github.com/kilnbuild/kiln/internal/config"
	"github.com/kilnbuild/kiln/internal/server"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// serveConfig is everything `metaserver serve` is told by its flags.
type serveConfig struct {
	// DataDir holds the store (kiln.db), blobs, mirrors, logs and the admin
	// socket; with Store and Blobs set, only the local files (mirrors,
	// logs being written, the admin socket, the upload spool).
	DataDir string
	// Store is a postgres:// URL of the store's database (any libpq URL,
	// password from it or PGPASSWORD); "" keeps bbolt in DataDir.
	Store string
	// Blobs is an s3://BUCKET[/PREFIX]?endpoint=URL URL of the blob store
	// (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY); "" keeps
	// the directory DataDir/blobs.
	Blobs string
	// Standby, with Store, waits for the writer lock instead of failing
	// when another metaserver holds it, and serves once it has it: a
	// second metaserver that takes over by itself when the writer dies.
	Standby bool
	// CA holds the PEM CA certificates of the writer's TLS certificate, for
	// a standby forwarding calls to it ("" : the system's roots).
	CA string
	// Advertise is the host:port other hosts reach Listen at, recorded in a
	// PostgreSQL store so that admin commands given --store find the
	// writer ("" is Listen).
	Advertise string
	// Listen is the gRPC address for build servers, requesters and webstatus.
	Listen string
	// MetricsListen serves Prometheus /metrics over HTTP; empty disables it.
	MetricsListen string
	// Heartbeat is the build servers' heartbeat interval; Lease how long an
	// attempt lives without one.
	Heartbeat time.Duration
	Lease     time.Duration
	// ReconnectGrace is how long the attempts of a build server whose
	// connection closed wait for it to reconnect before they go to another
	// target (at most Lease; a silent partition waits the whole Lease).
	ReconnectGrace time.Duration
	// MaxInfraAttempts bounds retries after infrastructure failures.
	MaxInfraAttempts int
	// Quorum is how many operators must agree on an artifact before it is
	// verified (1: one result is trusted); MaxResults bounds the operators
	// asked for one disputed build (0: Quorum+1); TrustAfter is the
	// agreeing results in a row that lower a quorum above 2 (0: never).
	Quorum     int
	MaxResults int
	TrustAfter int
	// TimeoutGrace is added to a build's time limit to give how long one
	// attempt may hold it before the metaserver takes it back.
	TimeoutGrace time.Duration
	// ExcludeFor is how long a build server stays excluded from a build
	// after a setup failure, a refusal or holding it past its time there.
	ExcludeFor time.Duration
	// LossesBeforeAside lost attempts in a row put a build server aside
	// for AsideFor (doubling per further round).
	LossesBeforeAside int
	AsideFor          time.Duration
	// ExpireUnmatched ends a queued build EXPIRED (mailed) after no
	// connected target matched it for this long (0: never).
	ExpireUnmatched time.Duration
	// InlineArtifactBytes: artifacts up to this size live inside the store,
	// committed with their result, instead of one fsynced file each.
	InlineArtifactBytes int64
	// RequestsPerMinute and RequestsPerMinutePerAddress bound requests per
	// email address and per peer IP address (0 or negative: no limit).
	RequestsPerMinute           int
	RequestsPerMinutePerAddress int
	// CacheMaxBytes bounds the artifact cache (LRU eviction of unpinned artifacts).
	CacheMaxBytes int64
	// SampleInterval is how often the metaserver samples itself for the
	// status pages' charts; a day's worth of samples is kept.
	SampleInterval time.Duration
	// GracePeriod bounds a graceful stop before connections are cut.
	GracePeriod time.Duration
	// TLSCert and TLSKey serve gRPC over TLS. Without them the metaserver
	// listens in plaintext, which is allowed only on loopback or with Insecure.
	TLSCert, TLSKey string
	Insecure        bool
	// GCMinHeadroom is the least heap growth, in bytes, between two garbage
	// collections while the metaserver is busy (default 40 MiB: less costs
	// CPU per build, more costs memory during a large upload; see
	// BENCHMARKS.md); above it the headroom is GOGC percent of the live heap
	// (default 50). After 10 s without load the floor is dropped and memory
	// returned to the system once. 0: GOGC alone. See gcTuner.
	GCMinHeadroom int64
	// LogFormat is text or json; LogLevel debug, info, warn or error.
	LogFormat string
	LogLevel  string
	mail      mailConfig
}

func (c *serveConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", os.Getenv("KILN_DATA_DIR"), "directory of the store, blobs, mirrors and logs (env KILN_DATA_DIR)")
	fs.StringVar(&c.Store, "store", os.Getenv("KILN_STORE"), "postgres://USER@HOST:PORT/DB?sslmode=... URL of a PostgreSQL store (password from the URL or PGPASSWORD; env KILN_STORE); empty: bbolt in --data-dir")
	fs.StringVar(&c.Blobs, "blobs", os.Getenv("KILN_BLOBS"), "s3://BUCKET[/PREFIX]?endpoint=URL of an S3-compatible blob store (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; env KILN_BLOBS); empty: the directory --data-dir/blobs")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:7070", "gRPC listen address")
	fs.BoolVar(&c.Standby, "standby", false, "with --store: when another metaserver holds the store, forward every call on --listen to it while waiting, and take over when it stops or dies, instead of failing")
	fs.StringVar(&c.CA, "ca", "", "with --standby: PEM CA certificates of the writer's TLS certificate, to forward calls to it (default: the system's roots)")
	fs.StringVar(&c.Advertise, "advertise", "", "with --store: the host:port admin commands on other hosts reach --listen at, recorded in the database (default: --listen)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "HTTP address for Prometheus /metrics (empty: off)")
	fs.DurationVar(&c.Heartbeat, "heartbeat", server.Defaults.HeartbeatInterval, "build server heartbeat interval")
	fs.DurationVar(&c.Lease, "lease", server.Defaults.Lease, "how long an attempt survives without a heartbeat")
	fs.DurationVar(&c.ReconnectGrace, "reconnect-grace", server.Defaults.ReconnectGrace, "how long the attempts of a build server whose connection closed (crash, kill, reboot) wait for it to reconnect before they are re-dispatched; at most --lease, which still bounds a silent partition")
	fs.IntVar(&c.MaxInfraAttempts, "max-infra-attempts", server.Defaults.MaxInfraAttempts, "attempts ending in infrastructure failures (setup failure, lost lease; refusals by a volunteer's policy do not count) before a build ends as error")
	fs.IntVar(&c.Quorum, "quorum", 2, "build servers of different operators that must produce the same artifact sha256 on one platform identity before it is verified and served to default requests (1: trust one result)")
	fs.IntVar(&c.MaxResults, "max-results", 0, "operators asked for results of one disputed build before it ends not_reproducible (0: quorum+1)")
	fs.IntVar(&c.TrustAfter, "trust-after", 0, "agreeing results in a row, per platform, after which build servers' agreement lowers a quorum above 2 by one, never below 2 (0: never)")
	fs.DurationVar(&c.TimeoutGrace, "timeout-grace", server.Defaults.TimeoutGrace, "added to a build's time limit (the manifest's timeout) for fetching, packing and uploading: an attempt held longer, heartbeats or not, is taken back and the build queued again elsewhere")
	fs.DurationVar(&c.ExcludeFor, "exclude-for", server.Defaults.ExcludeFor, "how long a build server stays excluded from a build after a setup failure or refusal there, holding it past its time, or losing it twice")
	fs.IntVar(&c.LossesBeforeAside, "losses-before-aside", server.Defaults.LossesBeforeAside, "attempts a build server may lose in a row (setup failures, lapsed leases, reconnects without them, builds held past their time) before it is put aside")
	fs.DurationVar(&c.AsideFor, "aside-for", server.Defaults.AsideFor, "how long a build server is put aside after --losses-before-aside lost attempts in a row; doubles per further round without a final result, up to 16 times")
	fs.DurationVar(&c.ExpireUnmatched, "expire-unmatched", server.Defaults.ExpireUnmatchedAfter, "a queued build that no connected target matches (platform, tools, policy) for this long ends expired and its requesters are mailed; the clock restarts with the metaserver (0: never)")
	fs.Int64Var(&c.InlineArtifactBytes, "inline-artifact-bytes", server.Defaults.InlineArtifactBytes, "artifacts up to this size are stored inside the store with their result instead of as files (0: always files)")
	fs.IntVar(&c.RequestsPerMinute, "requests-per-minute", server.Defaults.RequestsPerMinute, "build requests one email address may make per minute (0: unlimited)")
	fs.IntVar(&c.RequestsPerMinutePerAddress, "requests-per-minute-per-address", server.Defaults.RequestsPerMinutePerAddress, "build requests one client IP address may make per minute, whatever the email addresses; loopback included (0: unlimited)")
	fs.Int64Var(&c.CacheMaxBytes, "cache-max-bytes", 0, "artifact cache size limit in bytes; least recently used unpinned artifacts are evicted (0: unlimited)")
	fs.DurationVar(&c.SampleInterval, "sample-interval", server.Defaults.SampleInterval, "how often the metaserver samples its queue, targets and cache hits for the charts; the store keeps a day's worth (at most 1440 samples)")
	fs.DurationVar(&c.GracePeriod, "grace", 10*time.Second, "how long a graceful stop waits for in-flight calls")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate for gRPC over TLS")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key for --tls-cert")
	fs.BoolVar(&c.Insecure, "insecure", false, "allow plaintext gRPC on a non-loopback --listen address")
	fs.Int64Var(&c.GCMinHeadroom, "gc-min-headroom", 40<<20, "least heap growth in bytes between garbage collections while busy; above it GOGC percent of the live heap (default 50) applies; dropped after 10s without load (0: GOGC alone)")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	c.mail.flags(fs)
}

// maxSocketPath is the longest path a unix socket may have (sun_path less
// its terminating NUL).
const maxSocketPath = len(syscall.RawSockaddrUnix{}.Path) - 1

// Validate checks the configuration before anything starts.
func (c *serveConfig) Validate() error {
	if c.DataDir == "" {
		return errors.New("--data-dir is required (with --store and --blobs it holds only local files: mirrors, logs being written, the admin socket)")
	}
	// Checked now, not when the admin socket is made: a standby makes it
	// only once it has taken over from a dead writer, too late to fail.
	if sock := filepath.Join(c.DataDir, adminSocket); len(sock) > maxSocketPath {
		return fmt.Errorf("--data-dir %s is too long: its admin socket %s would be %d bytes, over the %d a unix socket's path may have; choose a shorter directory", c.DataDir, sock, len(sock), maxSocketPath)
	}
	if err := checkStoreURL(c.Store); err != nil {
		return err
	}
	if err := checkBlobsURL(c.Blobs); err != nil {
		return err
	}
	if c.Standby && c.Store == "" {
		return errors.New("--standby goes with --store (a bbolt file has one machine's metaserver)")
	}
	if c.CA != "" && !c.Standby {
		return errors.New("--ca goes with --standby (it is how a standby reaches the writer)")
	}
	if c.Advertise != "" {
		if c.Store == "" {
			return errors.New("--advertise goes with --store (a bbolt store is administered over --data-dir's admin socket)")
		}
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			return fmt.Errorf("--advertise %q: %w", c.Advertise, err)
		}
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--listen %q: %w", c.Listen, err)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.TLSCert == "" && !c.Insecure && !auth.IsLoopback(c.Listen) {
		return fmt.Errorf("--listen %s is not loopback: serve with --tls-cert/--tls-key, or pass --insecure to accept plaintext", c.Listen)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return fmt.Errorf("--metrics-listen %q: %w", c.MetricsListen, err)
		}
	}
	if c.Heartbeat <= 0 || c.Lease < 2*c.Heartbeat {
		return fmt.Errorf("--lease (%s) must be at least twice --heartbeat (%s)", c.Lease, c.Heartbeat)
	}
	if c.ReconnectGrace <= 0 {
		return errors.New("--reconnect-grace must be positive")
	}
	if c.GCMinHeadroom < 0 {
		return errors.New("--gc-min-headroom must not be negative")
	}
	if c.CacheMaxBytes < 0 {
		return errors.New("--cache-max-bytes must not be negative")
	}
	if c.SampleInterval < time.Second {
		return errors.New("--sample-interval must be at least 1s")
	}
	if c.Quorum < 1 || c.Quorum > 16 {
		return fmt.Errorf("--quorum must be 1..16, not %d", c.Quorum)
	}
	if c.MaxResults != 0 && (c.MaxResults < c.Quorum || c.MaxResults > 32) {
		return fmt.Errorf("--max-results must be 0 or between --quorum (%d) and 32, not %d", c.Quorum, c.MaxResults)
	}
	if c.TrustAfter < 0 {
		return errors.New("--trust-after must not be negative")
	}
	if c.MaxInfraAttempts < 1 {
		return errors.New("--max-infra-attempts must be at least 1")
	}
	if c.TimeoutGrace <= 0 || c.ExcludeFor <= 0 || c.AsideFor <= 0 {
		return errors.New("--timeout-grace, --exclude-for and --aside-for must be positive")
	}
	if c.LossesBeforeAside < 1 {
		return errors.New("--losses-before-aside must be at least 1")
	}
	if c.ExpireUnmatched < 0 {
		return errors.New("--expire-unmatched must not be negative (0: never)")
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format must be text or json, not %q", c.LogFormat)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	return c.mail.Validate()
}

func newLogger(format, level string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func serve(args []string) int {
	var cfg serveConfig
	fs := flag.NewFlagSet("metaserver serve", flag.ContinueOnError)
	cfg.flags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Resolved once: mirrors and hooks run git and commands elsewhere.
	if err := config.AbsPaths(fs, "data-dir", "tls-cert", "tls-key", "ca", "smtp-password-file", "hook-secret-file"); err != nil {
		fmt.Fprintln(os.Stderr, "metaserver serve:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "metaserver serve:", err)
		return 2
	}
	log := newLogger(cfg.LogFormat, cfg.LogLevel).With("component", "metaserver")
	slog.SetDefault(log)
	if err := runServe(cfg, log); err != nil {
		if refused(err) {
			return refusal("serve", err)
		}
		log.Error("metaserver stopped", "err", err)
		return 1
	}
	return 0
}

func runServe(cfg serveConfig, log *slog.Logger) error {
	gc := startGCTuner(cfg.GCMinHeadroom)
	defer gc.stop()
	if err := server.DataDirReady(cfg.DataDir); err != nil {
		return err
	}
	// The metrics address is taken before the store: a standby must not
	// find it taken only when it takes over from a dead writer.
	var metrics metricsEndpoint
	if cfg.MetricsListen != "" {
		if err := metrics.listen(cfg.MetricsListen); err != nil {
			return err
		}
		defer metrics.shutdown()
	}
	st, err := openServeStore(cfg, log)
	if errors.Is(err, errStandbyStopped) {
		log.Info("standby stopped by a signal before it became the writer")
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening store: %w", err)
	}
	defer st.Close()
	notifier, sender, err := cfg.mail.build(st, log)
	if err != nil {
		return err
	}
	srv, err := server.Open(server.Config{
		DataDir: cfg.DataDir, HeartbeatInterval: cfg.Heartbeat, Lease: cfg.Lease, ReconnectGrace: cfg.ReconnectGrace,
		Quorum: cfg.Quorum, MaxResults: cfg.MaxResults, TrustAfter: cfg.TrustAfter,
		MaxInfraAttempts: cfg.MaxInfraAttempts, TimeoutGrace: cfg.TimeoutGrace, ExcludeFor: cfg.ExcludeFor,
		LossesBeforeAside: cfg.LossesBeforeAside, AsideFor: cfg.AsideFor, ExpireUnmatchedAfter: expireUnmatched(cfg.ExpireUnmatched),
		OpenBlobs: openBlobs(cfg.Blobs, cfg.DataDir), CacheMaxBytes: cfg.CacheMaxBytes, SampleInterval: cfg.SampleInterval, SampleKeep: sampleKeep(cfg.SampleInterval), RequestsPerMinute: rateLimit(cfg.RequestsPerMinute), RequestsPerMinutePerAddress: rateLimit(cfg.RequestsPerMinutePerAddress), InlineArtifactBytes: inlineBytes(cfg.InlineArtifactBytes), Version: version, Logger: log, Notifier: notifier,
	}, st)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	unary, stream := auth.Interceptors(srv.LookupToken, "/kiln.v1.WorkerService/")
	// With a PostgreSQL store, administration also comes over the network
	// (from any host that can read the database, which holds the secret).
	adminSecret, _ := auth.NewToken()
	adminUnary, adminStream := auth.SecretInterceptors(adminSecret, "/kiln.v1.AdminService/")
	gateUnary, gateStream := srv.WriteGate()
	opts := []grpc.ServerOption{}
	if cfg.TLSCert != "" {
		creds, err := auth.ServerCredentials(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return err
		}
		opts = append(opts, grpc.Creds(creds))
	}
	gs := grpc.NewServer(append(opts,
		grpc.ChainUnaryInterceptor(adminUnary, unary, gateUnary), grpc.ChainStreamInterceptor(adminStream, stream, gateStream),
		grpc.MaxRecvMsgSize(server.MaxMessageBytes),
		// A small read buffer, and write buffers taken from a pool only
		// while writing: an idle build server costs little (issue 9:
		// 10,000 of them). The write buffer is large so that a download
		// writes many 16 KiB HTTP/2 frames per system call.
		grpc.ReadBufferSize(8<<10), grpc.WriteBufferSize(writeBuffer), grpc.SharedWriteBuffer(true),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)...)
	kilnv1.RegisterWorkerServiceServer(gs, srv)
	kilnv1.RegisterCompileServiceServer(gs, srv)
	kilnv1.RegisterStatusServiceServer(gs, srv)
	kilnv1.RegisterEnrollServiceServer(gs, &server.Enroller{Store: st})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)

	admin := &server.Admin{Store: st, DataDir: cfg.DataDir, OnRevoke: srv.Disconnect, Cancel: srv.AdminCancel, Purge: srv.Purge}
	if err := advertise(st, cfg, ln.Addr().String(), adminSecret); err != nil {
		return err
	}
	if cfg.Store != "" {
		kilnv1.RegisterAdminServiceServer(gs, admin)
	}
	adminSrv, adminLn, err := listenAdmin(cfg.DataDir, admin, grpc.ChainUnaryInterceptor(gateUnary))
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv.Start()
	if sender != nil {
		srv.Register(sender.Collectors()...)
		go func() { _ = sender.Run(ctx) }()
	}
	metrics.set(srv.MetricsHandler())
	serveErr := make(chan error, 2)
	go func() { serveErr <- gs.Serve(ln) }()
	go func() { serveErr <- adminSrv.Serve(adminLn) }()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	log.Info("metaserver serving", "listen", ln.Addr().String(), "data_dir", cfg.DataDir, "store", storeName(cfg.Store), "blobs", blobsName(cfg.Blobs), "metrics_listen", cfg.MetricsListen,
		"heartbeat", cfg.Heartbeat, "lease", cfg.Lease, "reconnect_grace", min(cfg.ReconnectGrace, cfg.Lease), "tls", cfg.TLSCert != "")

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping: no new calls, finishing in-flight ones", "grace", cfg.GracePeriod)
	case err := <-srv.Fatal():
		runErr = err
	case err := <-serveErr:
		runErr = err
	case <-lost(st):
		runErr = errors.New("the store's writer lock was lost (its database connection failed): stopping, as another metaserver may be the writer now")
	}
	hs.Shutdown()
	srv.Drain()
	gracefully(gs, cfg.GracePeriod)
	gracefully(adminSrv, cfg.GracePeriod)
	metrics.shutdown()
	srv.Stop()
	log.Info("metaserver stopped cleanly")
	return runErr
}

// metricsEndpoint is the --metrics-listen HTTP server. It is bound when
// serve starts and answers 503 on /metrics until set gives it the
// server's handler (a standby waits for the lock meanwhile).
type metricsEndpoint struct {
	srv *http.Server
	h   atomic.Pointer[http.Handler]
}

func (m *metricsEndpoint) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if h := m.h.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "metaserver not serving yet: a standby waiting for the store's writer lock", http.StatusServiceUnavailable)
	})
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = m.srv.Serve(ln) }()
	return nil
}

// set makes /metrics answer with h.
func (m *metricsEndpoint) set(h http.Handler) { m.h.Store(&h) }

// shutdown stops the server, if listening; calling it again does nothing.
func (m *metricsEndpoint) shutdown() {
	if m.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = m.srv.Shutdown(ctx)
}

// errStandbyStopped is openServeStore's answer to a signal that came while
// a standby waited: a clean stop.
var errStandbyStopped = errors.New("standby stopped while waiting")

// openServeStore opens the store for serve; a standby waits for the writer
// lock until a signal.
func openServeStore(cfg serveConfig, log *slog.Logger) (store.Store, error) {
	if !cfg.Standby {
		return openStore(cfg.Store, cfg.DataDir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Meanwhile every call to --listen goes on to the writer (proxy.go).
	stopProxy, err := startStandbyProxy(cfg, log)
	if err != nil {
		return nil, err
	}
	log.Info("standby: waiting for the store's writer lock, forwarding calls to the writer", "store", storeName(cfg.Store), "listen", cfg.Listen)
	start := time.Now()
	st, err := openStoreWaiting(ctx, cfg.Store, cfg.DataDir, 100*365*24*time.Hour)
	stopProxy()
	if err != nil && ctx.Err() != nil {
		return nil, errStandbyStopped
	}
	if err == nil {
		log.Info("standby: took the writer lock, serving", "waited", time.Since(start).Round(time.Millisecond))
	}
	return st, err
}

// gracefully stops gs, cutting long-lived streams after grace.
func gracefully(gs *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		gs.Stop()
	}
}

const version = "0.1.0"

// inlineBytes maps the flag (0: never inline) to server.Config (negative: never).
func inlineBytes(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// expireUnmatched maps --expire-unmatched to server.Config, where 0 means
// the default and negative never.
func expireUnmatched(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// rateLimit maps a rate-limit flag (0 or negative: unlimited) to
// server.Config (negative: unlimited, 0: the default).
func rateLimit(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// writeBuffer is the size of a connection's write buffer while it writes.
const writeBuffer = 256 << 10

// sampleKeep is how many samples make a day at interval every, at most
// 1,440 (one a minute): a shorter interval keeps a shorter history.
func sampleKeep(every time.Duration) int {
	return int(min(24*time.Hour/max(every, time.Second), time.Duration(server.Defaults.SampleKeep)))
}
