// Package sandbox runs one build step — a shell command — isolated from the
// machine it runs on, with resource limits, at the lowest CPU and I/O
// priority, and with every process it started gone when Run returns.
//
// # Runners
//
// [Bwrap] runs the step under bubblewrap: new user (when possible), IPC, PID,
// network, UTS and cgroup namespaces; the host's / read-only; fresh /dev,
// /proc and /tmp; the build directory and [Step.Writable] directories bound
// read-write at their host paths; [Step.Hide] paths covered by empty tmpfs
// (directories) or /dev/null (files). The only network interface is lo, so
// the host's loopback services are unreachable: sources must be fetched
// before a step runs.
//
// A step never holds privilege: [Bwrap] refuses to run one as root
// ([ErrRootStep]). A root runner starts bwrap itself as [Step.User] (no
// supplementary groups), whose user namespace maps only that uid, and
// --disable-userns forbids making another inside, so the step has no
// capability anywhere and is that uid on the host too. [Step.Binds] can
// show the step host directories at other paths (a build directory at a
// fixed path under the fresh /tmp; an install tree over /usr/local).
//
// [Unsandboxed] runs the same command without isolation, for volunteers who
// explicitly choose --sandbox=none. Limits, priority, process-group handling
// and timeouts still apply; Hide and the read-only system do not.
//
// # Lifecycle of a step
//
//	        start (low priority, limits, own process group)
//	          │
//	          ▼
//	      running ──── exits ─────────────────────────────┐
//	          │                                           │
//	Timeout or ctx done                                   │
//	          ▼                                           │
//	SIGTERM to the step's processes                       │
//	          │                                           │
//	exits within grace? ── no ─▶ SIGKILL to all of them    │
//	          │ yes                     │                 │
//	          ▼                         ▼                 ▼
//	SIGKILL to whatever is left (process group, pids cgroup, PID namespace)
//	          │
//	          ▼
//	output pipe drained (bounded wait), Run returns
//
// # Errors
//
// Run classifies failures where they happen, because the metaserver treats
// them differently:
//
//   - nil: the command exited 0 and left no process running.
//   - [*ExitError]: the command exited non-zero or was killed by a signal;
//     the build's own failure, final.
//   - [*LeftoverError]: the command exited while processes it started were
//     still running (they were killed), or, under [Bwrap], it exited 0 but
//     kept the check for such processes from reporting (Count 0: unknown);
//     the build's own failure, final. It unwraps to an *ExitError when the
//     command also failed.
//   - [*DiskError]: Step.Disk did not hold while the step ran; the step
//     was killed at once (see [DiskLimit]).
//   - an error wrapping [ErrTimeout]: Step.Timeout elapsed.
//   - an error wrapping ctx.Err(): the caller cancelled the step.
//   - [*SetupError]: the sandbox could not start the command (bwrap missing,
//     a bind source missing, a limit above the hard limit); an
//     infrastructure failure, retried on another build server.
//
// # Leftover processes
//
// A step must not leave processes running: a daemon, or a `cmd &` never
// waited for, fails the step with a [*LeftoverError] naming them (see
// leftover_linux.go for how each runner finds them; under [Bwrap] this
// costs one more exec of /bin/sh per step, about 0.5 ms). Under [Bwrap]
// the check reports over a Unix socket the command can neither inherit nor
// open through /proc, each report tagged with a random per-step nonce the
// command never sees, so a step cannot forge a clean report; only a step
// that may ptrace its checking shell could (no Yama restriction, as on the
// project's machine: see leftover_linux.go). [Unsandboxed]
// without a pids cgroup (not root) finds only those still in the step's
// process group: a process that called setsid(1) is neither found nor
// killed there.
//
// # Disk
//
// [Step.Disk] bounds what the build holds on disk, and the space left on
// the file system, while the step runs: a watcher sums the allocated
// blocks of the given directories, first after one interval (a shorter
// step pays nothing), and kills the step at once when a bound does not
// hold.
//
// # Resource limits
//
// [Limits] become rlimits, soft and hard, set before anything of the command
// runs. Usually the step's own shell sets them: the command becomes
// `sh -c 'ulimit -t N && … || exit 126; COMMAND'`, prelude and command on
// one line, so $0, the positional parameters and line numbers are those of
// plain `sh -c COMMAND`. A one-time probe checks that /bin/sh's ulimit sets
// exactly what is asked (dash, bash and busybox differ in flags and units);
// where it does not, or FileSizeBytes is not a whole number of the shell's
// blocks, util-linux prlimit(1) wraps the shell instead, as it always did
// before: Go cannot set rlimits between fork and exec, and setting them on
// the running child races with its first fork. The prelude saves prlimit's
// exec, about 1 ms of a no-op step on the project's machine. Nothing is
// added when Limits is zero.
//
// RLIMIT_NPROC counts every process of the user and is not enforced by the
// kernel for host root (also not for root mapped into bwrap's user
// namespace). When the runner is root and Processes is set, it therefore
// also puts the step in a fresh pids cgroup (cgroup v1 pids hierarchy, or
// cgroup v2 where the pids controller is delegated) whose pids.max is
// Processes plus a small allowance for the sandbox's own helper processes.
// When neither works, a warning is logged once and only the rlimit applies.
// On cgroup v1 the step cgroups are reused "cells", each with a thread of
// ours living in it that starts the step (see cell): moving a thread into a
// fresh cgroup per step can wait for an RCU grace period, about 8 ms on the
// project's machine. A cell is kept after its step only when nothing of the
// step is left but processes killed and not yet reaped by the host's init
// (at most a few, added to the next step's pids.max). [ReleaseIdle]
// removes the idle cells' cgroups; after a crash the next start does.
//
// What the cgroup is for differs by runner. Under [Bwrap] every process of
// the step lives in the step's PID namespace, and killing its init (which Run
// always does) makes the kernel kill them all, also those that left the
// process group: the cgroup is needed only to enforce Processes, and a
// step without that limit gets none. [Unsandboxed] (as root) always gets one:
// it is the only way to find processes that left the process group (setsid)
// and kill them. Emptying it costs one read of cgroup.procs when nothing is
// left, which is the rule; survivors are SIGKILLed and waited for (cgroup v2:
// cgroup.kill, then cgroup.events polled for "populated 0"; v1 has neither
// and is re-read every millisecond).
//
// # Priority
//
// The step starts with nice 19 and the idle I/O class. Both are set on a
// dedicated OS thread just before fork, so the child inherits them from the
// first instruction; the thread is then discarded. This costs microseconds,
// where wrapping in nice(1) and ionice(1) would cost two execs.
//
// # Cost
//
// Measured on the project's 2-core machine (BenchmarkBwrapTrue,
// BenchmarkUnsandboxedTrue): a no-op step under Bwrap takes about 6 ms,
// the same as bare `bwrap --unshare-all true` (at hundreds of steps per
// second both drift to about 10 ms as the kernel tears namespaces down); an
// Unsandboxed no-op step takes about 1.0-1.3 ms. Limits add about 0.1-0.2 ms
// (for root, the pids cgroup; the ulimit prelude costs nothing measurable,
// where prlimit cost about 1 ms).
package sandbox
