package sandbox

import (
	"context"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Unsandboxed runs steps without isolation: the command sees the whole
// machine with the buildserver's rights, including its network, files and
// credentials. It exists for volunteers who choose --sandbox=none, and the
// metaserver shows such build servers as unsandboxed.
//
// It still applies Limits, the lowest priority, Timeout and cancellation, and
// kills the step's process group when the step ends. Step.Hide,
// Step.Writable and Step.User are ignored: it runs steps as the
// buildserver's user, which is why the buildserver refuses --sandbox=none
// as root. A process that leaves the process group (setsid)
// survives the step unless the pids cgroup (root only, see the package doc)
// catches it. Safe for concurrent use.
type Unsandboxed struct {
	// Grace is the time between SIGTERM and SIGKILL; 0 means DefaultGrace.
	Grace time.Duration
}

var _ Runner = Unsandboxed{}

// Run runs s directly as `sh -c s.Command` in s.Dir; see Runner.
func (u Unsandboxed) Run(ctx context.Context, s Step) error {
	argv, err := commandArgv(s.Limits, s.Command)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(s.Dir); err != nil || !fi.IsDir() {
		return setupErrorf("step %q: build directory %q is not a directory: %v", s.Name, s.Dir, err)
	}
	env := s.Env
	if env == nil {
		env = []string{}
	}
	return execute(ctx, s, launch{
		argv:      argv,
		env:       env,
		dir:       s.Dir,
		grace:     graceOr(u.Grace),
		terminate: func(pid int) { killGroup(pid, unix.SIGTERM) },
		kill:      func(pid int) { killGroup(pid, unix.SIGKILL) },
		leftovers: groupLeftovers,
		result: func(state *os.ProcessState, _ []byte) error {
			if state.Success() {
				return nil
			}
			return &ExitError{Step: s.Name, Code: exitCode(state)}
		},
	})
}

func graceOr(g time.Duration) time.Duration {
	if g <= 0 {
		return DefaultGrace
	}
	return g
}
