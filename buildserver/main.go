// Command buildserver lends a machine to a Kiln build network: it measures
// its build targets, connects to the metaserver, runs the builds it is
// assigned in a sandbox and uploads their artifacts.
//
//	buildserver --metaserver 127.0.0.1:7070 --data-dir /var/lib/kiln \
//	    [--jobs N] [--target native --target cross:s390x-linux-gnu]... \
//	    [--allow-project P]... [--allow-option name=v1,v2]... [--max-build-time 1h] \
//	    [--idle-only] [--sandbox bwrap|none] [--grace 30s]
//
// Flags may also come from a file (--config FILE, one "name = value" per
// line; conffile.go). To volunteer in one command:
//
//	buildserver join METASERVER ENROLL_TOKEN [buildserver flags...]
//
// spends the enrollment token, writes /etc/kiln/buildserver.conf and
// DATA_DIR/token and enables kiln-buildserver.service (join.go);
// `buildserver doctor` says what this machine can offer (doctor.go).
//
// The token comes from --token, KILN_TOKEN or DATA_DIR/token. SIGTERM or
// SIGINT stops it gracefully: no new work, running builds get --grace to
// finish, the rest are handed back; a second signal kills it at once.
//
// The build server's own Go code runs on one processor (GOMAXPROCS=1) unless
// GOMAXPROCS is set in its environment; the builds use every core.
//
// Exit status: 0 after a graceful stop; 2 for bad input: a bad flag, or a
// token the metaserver refuses (wrong or revoked: restarting cannot help);
// 1 for anything else.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/kilnbuild/kiln/internal/auth"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"

	"github.com/kilnbuild/kiln/internal/sandbox"
	"github.com/kilnbuild/kiln/internal/sysinfo"
	"github.com/kilnbuild/kiln/internal/worker"
)

// version is set at link time (-ldflags "-X main.version=...").
var version = "dev"

// Exit statuses.
const (
	exitFailure = 1
	exitUsage   = 2
	exitAuth    = 2 // bad input too: the token is refused
)

func main() {
	if n := ownProcs(os.Getenv); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	if len(os.Args) > 1 && os.Args[1] == "doctor" {
		os.Exit(doctor(os.Args[2:], os.Stdout))
	}
	if len(os.Args) > 1 && os.Args[1] == "join" {
		os.Exit(join(os.Args[2:], os.Stdout, os.Stderr))
	}
	cfg, err := parseConfig(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "buildserver:", err)
		os.Exit(exitUsage)
	}
	log := newLogger(cfg, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	go func() {
		// After the first signal the default action returns: a second one kills.
		<-ctx.Done()
		stop()
	}()
	err = run(ctx, cfg, log)
	sandbox.ReleaseIdle() // no step runs any more
	var authErr *worker.AuthError
	switch {
	case errors.As(err, &authErr):
		log.Error("the metaserver refused this build server's token; get a new one from its admin", "error", err)
		os.Exit(exitAuth)
	case err != nil:
		log.Error("buildserver stopped", "error", err)
		os.Exit(exitFailure)
	}
}

// ownProcs is the GOMAXPROCS the build server sets for itself: 1, unless
// the environment sets GOMAXPROCS (then 0: leave it).
//
// Why: the build server only coordinates; the builds' own processes do the
// work and take every core. With one P its goroutines hand work to each
// other on one thread instead of waking a second one that spins looking
// for work: on the project's 2-core machine its own CPU per no-op build
// fell from 2.8-2.9 to 2.3-2.4 ms (`go run ./internal/loadtest throughput`).
// What one P slows is packing and hashing several large artifacts at once
// (gzip, sha256), seconds beside the minutes such builds take.
func ownProcs(getenv func(string) string) int {
	if getenv("GOMAXPROCS") != "" {
		return 0
	}
	return 1
}

// newLogger returns the build server's own logger, writing to w.
func newLogger(cfg Config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel) // validated
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// run probes the targets, then serves the metaserver until ctx ends.
func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	// Builds inherit it: the same file modes on every volunteer.
	syscall.Umask(0o022)
	var runner worker.StepRunner
	var buildUID uint32
	if os.Geteuid() == 0 {
		if cfg.Sandbox == "none" {
			return errors.New("--sandbox=none as root would run every build as root; run the build server as an unprivileged user, or with bubblewrap")
		}
		buildUID = uint32(cfg.BuildUID)
		log.Info("running as root: build steps run as unprivileged users without capabilities, one per build",
			"uids", fmt.Sprintf("%d-%d", buildUID, buildUID+uint32(cfg.Jobs)-1))
	}
	switch cfg.Sandbox {
	case "none":
		runner = sandbox.Unsandboxed{}
		log.Warn("--sandbox=none: build steps run WITHOUT isolation, as this user, with network access; the metaserver and public pages show this")
	default:
		bw := sandbox.Bwrap{}
		var as *sandbox.User
		if buildUID != 0 {
			as = &sandbox.User{UID: buildUID, GID: buildUID}
		}
		if err := bw.AvailableAs(as); err != nil {
			return fmt.Errorf("sandbox: %w (install bubblewrap, or run with --sandbox=none at your own risk)", err)
		}
		runner = bw
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	transport, secure, err := auth.ClientTLS{CAFile: cfg.CA, Insecure: cfg.Insecure}.DialCredentials(cfg.Metaserver)
	if err != nil {
		return err
	}
	if cfg.Token == "" {
		if cfg.Token, err = enroll(ctx, cfg, transport, log); err != nil {
			return err
		}
	}
	specs, _ := cfg.targetSpecs() // validated
	if slices.Contains(cfg.Targets, "auto") {
		_, skipped := sysinfo.Discover()
		for _, sk := range skipped {
			log.Info("--target auto: not offering", "target", sk.ID, "reason", sk.Reason, "install", strings.Join(sk.Install, " "))
		}
	}
	targets, rejected, err := worker.ProbeAll(ctx, specs, nil, cfg.DataDir, log)
	if err != nil {
		return err
	}
	client, err := worker.New(worker.Config{
		Metaserver:         cfg.Metaserver,
		Token:              cfg.Token,
		DataDir:            cfg.DataDir,
		Targets:            targets,
		Rejected:           rejected,
		Labels:             cfg.Labels,
		Slots:              cfg.Jobs,
		Policy:             cfg.policy(),
		Sandbox:            runner,
		Unsandboxed:        cfg.Sandbox == "none",
		BuildUID:           buildUID,
		Grace:              workerGrace(cfg.Grace),
		Limits:             sandbox.Limits{FileSizeBytes: cfg.MaxFileSize, Processes: cfg.MaxProcesses},
		MaxLogBytes:        cfg.MaxLogBytes,
		MaxArtifactBytes:   cfg.MaxArtifactBytes,
		MaxDiskBytes:       noneIfZero(cfg.MaxDiskBytes),
		MinFreeDiskBytes:   noneIfZero(cfg.MinFreeDiskBytes),
		CompilerCacheBytes: noneIfZero(cfg.CompilerCacheBytes),
		MirrorBytes:        noneIfZero(cfg.MirrorBytes),
		Transport:          transport,
		SecureTransport:    secure,
		Version:            version,
		Logger:             log,
	})
	if err != nil {
		return err
	}
	log.Info("buildserver starting", "version", version, "metaserver", cfg.Metaserver, "targets", len(targets),
		"jobs", cfg.Jobs, "sandbox", cfg.Sandbox)
	return client.Run(ctx)
}

// noneIfZero maps a flag where 0 means "no bound" to worker.Config, where
// zero means the default and a negative value means none.
func noneIfZero(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// workerGrace maps --grace to worker.Config.Grace, where zero means the
// default and a negative value means none.
func workerGrace(g time.Duration) time.Duration {
	if g == 0 {
		return -1
	}
	return g
}

// enroll exchanges cfg.Enroll for this build server's credential and saves
// it as DATA_DIR/token before using it, so a restart does not enroll again.
func enroll(ctx context.Context, cfg Config, transport grpc.DialOption, log *slog.Logger) (string, error) {
	name, err := serverName(cfg.Name)
	if err != nil {
		return "", err
	}
	token, enrolled, err := exchangeEnrollToken(ctx, cfg.Metaserver, transport, cfg.Enroll, name)
	if err != nil {
		return "", err
	}
	path := filepath.Join(cfg.DataDir, "token")
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("saving the credential: %w", err)
	}
	log.Info("enrolled: credential saved", "build_server", enrolled, "path", path)
	return token, nil
}

// serverName is the name to enroll under: name, else the host name in
// lower case.
func serverName(name string) (string, error) {
	if name != "" {
		return name, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("--name not given and no host name: %w", err)
	}
	return strings.ToLower(host), nil
}

// exchangeEnrollToken asks the metaserver to turn the single-use
// enrollment token into a credential for a build server called name. It
// writes nothing; an error from the metaserver (unknown, expired or used
// token, name taken) is an *worker.AuthError.
func exchangeEnrollToken(ctx context.Context, metaserver string, transport grpc.DialOption, enrollToken, name string) (token, enrolled string, err error) {
	target, ropts, err := auth.MetaserverTarget(metaserver)
	if err != nil {
		return "", "", err
	}
	conn, err := grpc.NewClient(target, append(ropts, transport)...)
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := kilnv1.NewEnrollServiceClient(conn).Enroll(cctx, &kilnv1.EnrollRequest{EnrollToken: enrollToken, Name: name})
	if err != nil {
		return "", "", &worker.AuthError{Err: fmt.Errorf("enrolling as %s: %w", name, err)}
	}
	return resp.GetToken(), resp.GetName(), nil
}
