package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/kilnbuild/kiln/internal/sandbox"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultGrace is how long a stopping build server lets running builds finish.
	DefaultGrace = 30 * time.Second
	// DefaultTimeout bounds a build whose recipe and policy set no time limit.
	DefaultTimeout = time.Hour
	// DefaultMaxLogBytes caps one attempt's build log; later output is dropped.
	DefaultMaxLogBytes = 16 << 20
	// DefaultMaxArtifactBytes caps one attempt's packed artifact (tar.gz bytes).
	DefaultMaxArtifactBytes = 1 << 30
	// DefaultProcesses, DefaultOpenFiles and DefaultFileSizeBytes are the step
	// limits used when Config.Limits leaves them zero. CPU seconds default to
	// the build's time limit.
	DefaultProcesses     = 512
	DefaultOpenFiles     = 1024
	DefaultFileSizeBytes = 1 << 30
	// DefaultMaxDiskBytes caps what one build holds on disk (see
	// Config.MaxDiskBytes).
	DefaultMaxDiskBytes = 4 << 30
	// DefaultMinFreeDiskBytes is the space a running build leaves free on
	// the data directory's file system (see Config.MinFreeDiskBytes).
	DefaultMinFreeDiskBytes = 512 << 20
	// DefaultCompilerCacheBytes bounds each compiler cache (see
	// Config.CompilerCacheBytes).
	DefaultCompilerCacheBytes = 1 << 30
	// DefaultMirrorBytes bounds the source mirrors and compiler caches
	// together (see Config.MirrorBytes).
	DefaultMirrorBytes = 20 << 30
)

// StepRunner runs one build step, sandboxed or not. sandbox.Bwrap and
// sandbox.Unsandboxed implement it. Run must return *sandbox.ExitError when
// the step's command failed, an error wrapping sandbox.ErrTimeout when
// s.Timeout passed, an error wrapping context.Canceled when ctx was
// cancelled, and anything else (typically *sandbox.SetupError) for a failure
// of the machinery. Run is called concurrently for different attempts.
type StepRunner interface {
	Run(ctx context.Context, s sandbox.Step) error
}

// Config is what a Client needs. Zero values of optional fields take the
// defaults above; New rejects an invalid Config with an error naming the field.
type Config struct {
	// Metaserver is the metaserver's gRPC address, host:port. Required.
	Metaserver string
	// Token is the build server's credential, sent on every call as
	// "authorization: Bearer <token>". Required.
	Token string
	// DataDir holds mirrors, build directories and unacknowledged results
	// (see the package doc). Required; created if missing.
	DataDir string
	// Targets are the probed targets to offer (see ProbeTargets). At least one.
	Targets []Target
	// Rejected are the targets whose probe failed (see ProbeAll), reported
	// in every Hello so the metaserver can show why they are not offered.
	// Hello carries at most MaxRejectedTargets of them, reasons cut to
	// MaxRejectReasonBytes. Optional.
	Rejected []*kilnv1.RejectedTarget
	// Labels are free-form labels added to every target's system info.
	Labels []string
	// Slots is how many builds may run at once across all targets (--jobs). At least 1.
	Slots int
	// Policy is the volunteer's policy, sent in Hello and checked again
	// before each build (REFUSED when it does not hold). Nil means no limits.
	Policy *kilnv1.BuildServerPolicy
	// Sandbox runs the steps. Required.
	Sandbox StepRunner
	// Unsandboxed reports that Sandbox does not isolate steps (--sandbox=none);
	// it is announced in Hello and shown on public pages.
	Unsandboxed bool
	// Grace is how long Run, once its context is cancelled, lets running
	// builds finish before cancelling them and returning them to the
	// metaserver. Zero means DefaultGrace; negative means no grace at all.
	Grace time.Duration
	// Limits bound every step's processes; zero fields take the defaults
	// (CPU seconds: the build's time limit).
	Limits sandbox.Limits
	// DefaultTimeout is the wall-time limit of a build whose recipe and policy name none.
	DefaultTimeout time.Duration
	// MaxLogBytes caps one attempt's build log in bytes.
	MaxLogBytes int64
	// MaxArtifactBytes caps one attempt's packed artifact in bytes.
	MaxArtifactBytes int64
	// MaxDiskBytes caps what one build holds on disk: its src, dest and
	// home directories, checked while its steps run (every 250 ms, from
	// 250 ms into each step) and after the last one, and those together
	// with the packed artifact. A build over it is stopped at once and
	// ends FAILED ("build used more than 4 GiB of disk (--max-disk-bytes);
	// stopped"). Zero means DefaultMaxDiskBytes; negative means no cap.
	MaxDiskBytes int64
	// MinFreeDiskBytes is the space the data directory's file system must
	// keep available to unprivileged users while steps run, checked like
	// MaxDiskBytes: a step that finds less is stopped at once and the
	// attempt ends SETUP_FAILED, to be built elsewhere. Zero means
	// DefaultMinFreeDiskBytes; negative means no reserve.
	MinFreeDiskBytes int64
	// CompilerCacheBytes bounds each compiler cache: one per project and
	// target, kept under DataDir/ccache when ccache is installed and the
	// steps run under bubblewrap (see compilerCaches). A cache is part of
	// its build's disk (MaxDiskBytes), so it is never more than a quarter
	// of that. Zero means DefaultCompilerCacheBytes; negative means no
	// compiler cache.
	CompilerCacheBytes int64
	// MirrorBytes bounds the disk the source mirrors (DataDir/mirrors, one
	// per project) and the compiler caches (DataDir/ccache) take together:
	// after builds, the least recently built projects' mirrors are wiped,
	// each with its compiler caches, until they fit (a project being built
	// is never chosen). Its next build clones again and compiles
	// everything. Zero means DefaultMirrorBytes; negative means no bound.
	MirrorBytes int64
	// mirrorBoundEvery spaces the checks of MirrorBytes (tests; zero:
	// defaultBoundEvery, negative: after every janitor pass).
	mirrorBoundEvery time.Duration
	// BuildUID, when not zero, makes each running build's steps run as a
	// user of its own, uid and gid BuildUID+i for i below Slots, owning
	// the build's directories; the build server must then be root (it
	// hands the directories over) and no account may have those ids.
	// Zero: steps run as the build server's own user (which Bwrap refuses
	// for root).
	BuildUID uint32
	// Hide lists further host paths the steps must not see, e.g. the
	// directory of a credential file. DataDir and the volunteer's home are
	// always hidden.
	Hide []string
	// Version is this software's version, sent in Hello.
	Version string
	// Logger receives the build server's own log (not build logs). Nil: slog.Default().
	Logger *slog.Logger
	// DialOptions are added to the gRPC dial options (tests).
	DialOptions []grpc.DialOption
	// Transport is the transport credentials dial option (TLS); nil means
	// plaintext. SecureTransport says it is TLS, so the token is never sent
	// without it.
	Transport       grpc.DialOption
	SecureTransport bool
}

// withDefaults returns c with zero optional fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = DefaultTimeout
	}
	if c.MaxLogBytes == 0 {
		c.MaxLogBytes = DefaultMaxLogBytes
	}
	if c.MaxArtifactBytes == 0 {
		c.MaxArtifactBytes = DefaultMaxArtifactBytes
	}
	if c.Limits.Processes == 0 {
		c.Limits.Processes = DefaultProcesses
	}
	if c.Limits.OpenFiles == 0 {
		c.Limits.OpenFiles = DefaultOpenFiles
	}
	if c.Limits.FileSizeBytes == 0 {
		c.Limits.FileSizeBytes = DefaultFileSizeBytes
	}
	if c.MaxDiskBytes == 0 {
		c.MaxDiskBytes = DefaultMaxDiskBytes
	}
	if c.MinFreeDiskBytes == 0 {
		c.MinFreeDiskBytes = DefaultMinFreeDiskBytes
	}
	if c.CompilerCacheBytes == 0 {
		c.CompilerCacheBytes = DefaultCompilerCacheBytes
	}
	if c.MirrorBytes == 0 {
		c.MirrorBytes = DefaultMirrorBytes
	}
	if c.MaxDiskBytes > 0 && c.CompilerCacheBytes > c.MaxDiskBytes/4 {
		c.CompilerCacheBytes = c.MaxDiskBytes / 4
	}
	if c.Sandbox != nil {
		c.Sandbox = withDiskGuard(c.Sandbox, c.MaxDiskBytes, c.MinFreeDiskBytes)
	}
	if c.Policy == nil {
		c.Policy = &kilnv1.BuildServerPolicy{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate reports every problem of c at once.
func (c Config) validate() error {
	var errs []error
	if c.Metaserver == "" {
		errs = append(errs, errors.New("metaserver address is required"))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("token is required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data directory is required"))
	}
	if len(c.Targets) == 0 {
		errs = append(errs, ErrNoTargets)
	}
	seen := map[string]bool{}
	for i, t := range c.Targets {
		switch {
		case t.Info == nil || t.Info.GetId() == "":
			errs = append(errs, fmt.Errorf("target %d has no id", i))
		case seen[t.Info.GetId()]:
			errs = append(errs, fmt.Errorf("target %q listed twice", t.Info.GetId()))
		}
		seen[t.Info.GetId()] = true
	}
	if c.Slots < 1 {
		errs = append(errs, fmt.Errorf("slots must be at least 1, got %d", c.Slots))
	}
	if c.Sandbox == nil {
		errs = append(errs, errors.New("a step runner (sandbox) is required"))
	}
	if c.DefaultTimeout < 0 || c.MaxLogBytes < 0 || c.MaxArtifactBytes < 0 {
		errs = append(errs, errors.New("default timeout, log and artifact caps must not be negative"))
	}
	return errors.Join(errs...)
}
