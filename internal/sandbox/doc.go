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
//   - nil: the command exited 0.
//   - [*ExitError]: the command exited non-zero or was killed by a signal;
//     the build's own failure, final.
//   - an error wrapping [ErrTimeout]: Step.Timeout elapsed.
//   - an error wrapping ctx.Err(): the caller cancelled the step.
//   - [*SetupError]: the sandbox could not start the command (bwrap missing,
//     a bind source missing, a limit above the hard limit); an
//     infrastructure failure, retried on another build server.
//
// # Resource limits
//
// [Limits] become rlimits set by util-linux prlimit(1), which wraps the
// shell: prlimit sets soft and hard limits and execs "sh -c". One extra exec
// (about 0.3 ms) is the cheapest race-free way: Go cannot set rlimits
// between fork and exec, and setting them on the running child races with
// its first fork. prlimit is skipped when Limits is zero.
//
// RLIMIT_NPROC counts every process of the user and is not enforced by the
// kernel for host root. When the runner is root it therefore also puts the
// step in a fresh pids cgroup (cgroup v1 pids hierarchy, or cgroup v2 where
// the pids controller is delegated) whose pids.max is Processes plus a small
// allowance for the sandbox's own helper processes. The cgroup also lets Run
// find and kill processes that left the step's process group. When neither
// works, a warning is logged once and only the rlimit applies.
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
// Unsandboxed no-op step takes about 1.0-1.3 ms. Limits add about 0.5-1.3 ms
// (the prlimit exec and, for root, the pids cgroup).
package sandbox
