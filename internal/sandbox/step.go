package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// DefaultGrace is how long a step gets between SIGTERM and SIGKILL when its
// timeout elapses or its context is cancelled, unless the runner sets its own
// Grace.
const DefaultGrace = 5 * time.Second

// pipeDrainTimeout bounds how long Run waits, after every process of the step
// is gone, for the output pipe to reach EOF. Only a process that escaped the
// step (possible only without a sandbox and without a pids cgroup) can hold
// the pipe open that long; Run then closes its end and returns.
const pipeDrainTimeout = 2 * time.Second

// Step is one command of a build.
type Step struct {
	// Name identifies the step in errors and logs, e.g. "build" or "check".
	Name string
	// Command is run as `sh -c Command`.
	Command string
	// Dir is the command's working directory. Under a sandbox it is the
	// Dst of one of Binds, or else a host directory bound read-write at the
	// same path; without one it is a host directory. It must exist.
	Dir string
	// Writable lists other host directories bound read-write at the same
	// path, e.g. a DESTDIR. Each must exist. Ignored by Unsandboxed (the
	// whole file system is as writable as the buildserver's user makes it).
	Writable []string
	// Binds binds host directories read-write at other paths inside the
	// sandbox, over what is there (e.g. a build's install tree over
	// /usr/local, so that an install that ignores DESTDIR lands in it), or
	// at new paths under the sandbox's fresh /tmp (a build directory at a
	// fixed path). Each Src must be a directory; each Dst an existing
	// directory of the host's file system or a path below /tmp. Ignored by
	// Unsandboxed.
	Binds []Bind
	// Hostname, when not empty, is the host name the step sees (its own
	// UTS namespace). Ignored by Unsandboxed.
	Hostname string
	// Identity, when not nil, is the uid and gid the step sees itself as
	// (`id -u`, the owner of the files it makes, as seen inside): its
	// user namespace maps them to its real user (User, or the runner's
	// own), which stays what the host sees. The same Identity on every
	// build server hides their different real uids from the build.
	// Ignored by Unsandboxed.
	Identity *User
	// ReadOnly lists host directories bound read-only at the same path,
	// visible even inside a hidden directory (e.g. a build's sysroot of
	// dependency artifacts under the data directory). Each must exist.
	// Ignored by Unsandboxed.
	ReadOnly []string
	// Hide lists host paths made invisible inside the sandbox: a directory
	// becomes an empty tmpfs; a file is covered by /dev/null on a nodev
	// mount, so opening it fails with EACCES. Use it for the
	// buildserver's data directory, $HOME and credential files' directories.
	// Paths that do not exist are skipped. Ignored by Unsandboxed.
	//
	// Mounts are applied parents first, so Dir or a Writable directory inside
	// a hidden directory stays visible, and a hidden path inside Dir stays
	// hidden.
	Hide []string
	// Env is the complete environment of the command; nothing is inherited
	// from the buildserver. Each entry is "KEY=value". The one addition:
	// under Bwrap, bwrap sets PWD to Dir (the shell would export it anyway).
	Env []string
	// Output receives the command's stdout and stderr combined, as produced,
	// from one goroutine at a time. Run never calls Write after it returns. A
	// slow Writer slows the command down (pipe back-pressure); Run buffers at
	// most 32 KiB. Nil discards the output.
	Output io.Writer
	// Timeout is the wall-time limit of the step; 0 means none.
	Timeout time.Duration
	// Limits are the step's resource limits.
	Limits Limits
	// Disk bounds the disk space of the build while the step runs; the
	// zero value sets no bound. See DiskLimit.
	Disk DiskLimit
	// User is the unprivileged user the step runs as. Under Bwrap it is
	// required when the runner is root, which then starts bwrap itself as
	// User (no capabilities anywhere, no supplementary groups): a step never
	// runs with root's identity or privilege. Dir and Writable must be
	// writable by User, and their parent directories searchable by it.
	// A runner that is not root runs steps as itself and accepts only nil
	// or its own uid. Unsandboxed ignores User (see Unsandboxed).
	User *User
}

// Bind is a host directory Src seen at Dst inside the sandbox.
type Bind struct {
	Src, Dst string
	// ReadOnly binds it read-only (e.g. a build's dependency sysroot at a
	// fixed path).
	ReadOnly bool
}

// User is a numeric user and group a step runs as.
type User struct {
	UID, GID uint32
}

// ErrRootStep is wrapped by the SetupError of a step Bwrap refuses to run
// as root: the runner is root and Step.User is nil (or root).
var ErrRootStep = errors.New("sandbox: refusing to run a build step as root (set Step.User)")

// Limits are per-process resource limits of a step; 0 means unlimited
// (inherited from the buildserver). Each is set as both soft and hard limit,
// so the command cannot raise it again.
type Limits struct {
	// CPUSeconds is RLIMIT_CPU: CPU time of each process, in seconds. A
	// process exceeding it is killed (SIGKILL), failing the step.
	CPUSeconds uint64
	// Processes is RLIMIT_NPROC, plus a pids cgroup when the runner is root
	// (see the package doc): a fork beyond it fails with EAGAIN.
	Processes uint64
	// OpenFiles is RLIMIT_NOFILE: the number of open file descriptors of
	// each process.
	OpenFiles uint64
	// FileSizeBytes is RLIMIT_FSIZE: the largest file a process may write, in
	// bytes. A write beyond it fails (the process gets SIGXFSZ).
	FileSizeBytes uint64
}

func (l Limits) isZero() bool { return l == Limits{} }

// Runner runs one build step.
type Runner interface {
	// Run runs s to completion and returns nil if the command exited 0 and
	// left no process running; otherwise an *ExitError, a *LeftoverError, a
	// *DiskError, an error wrapping ErrTimeout or ctx.Err(), or a
	// *SetupError (see the package doc). When Run returns, no process started
	// by the step is left running and s.Output is no longer written to. Run
	// is safe for concurrent use with different steps.
	Run(ctx context.Context, s Step) error
}

// ErrTimeout is wrapped by Run's error when Step.Timeout elapsed before the
// command finished. The command was then terminated.
var ErrTimeout = errors.New("sandbox: step timed out")

// ExitError reports that the command exited with a non-zero status: the
// build's own failure.
type ExitError struct {
	// Step is the Step.Name.
	Step string
	// Code is the exit status; for a command killed by signal N it is 128+N,
	// as a shell reports it (137 for SIGKILL, e.g. by RLIMIT_CPU).
	Code int
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("step %q exited with status %d", e.Step, e.Code)
}

// SetupError reports that the command could not be started: an
// infrastructure failure of this build server (bwrap missing or broken, a
// bind source missing, a bad limit), not of the build. The metaserver retries
// such an attempt on another build server.
type SetupError struct {
	Err error
}

func (e *SetupError) Error() string { return "sandbox setup: " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *SetupError) Unwrap() error { return e.Err }

func setupErrorf(format string, args ...any) error {
	return &SetupError{Err: fmt.Errorf(format, args...)}
}
