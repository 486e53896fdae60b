package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

const (
	lowestNice       = 19
	ioprioClassIdle  = 3
	ioprioClassShift = 13
	ioprioWhoProcess = 1
)

// startLowPriority starts cmd with nice 19 and the idle I/O class, inside cg
// when cg is not nil. A cgroup v1 cg lends a cell, whose own thread starts
// cmd (see cell); otherwise:
//
// Nice value, I/O priority and cgroup v1 membership belong to a thread, and a
// child inherits them from the thread that forks it. So a fresh goroutine
// locks itself to its OS thread, lowers that thread and forks. No other
// process or thread is affected and there is no window in which the child
// runs at normal priority.
//
// The thread must then outlive the child: bwrap's --die-with-parent sets a
// parent-death signal, which the kernel sends when the parent *thread*
// exits. So the goroutine stays on its thread until release is called (after
// the child is reaped) and then exits without unlocking, which makes the Go
// runtime discard the lowered thread instead of reusing it. release must be
// called exactly once when err is nil.
//
// When netns is not nil the child starts inside that network namespace (see
// takeNetns): the forking thread enters it for the fork only.
func startLowPriority(cmd *exec.Cmd, cg *stepCgroup, netns *os.File) (release func(), err error) {
	if cg != nil && cg.cell != nil {
		// The cell's thread is lowered, in the cgroup, and outlives the child.
		if err := cg.cell.start(cmd, netns); err != nil {
			return nil, err
		}
		return func() {}, nil
	}
	errc := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: see above.
		if err := unix.Setpriority(unix.PRIO_PROCESS, 0, lowestNice); err != nil {
			errc <- fmt.Errorf("setpriority: %w", err)
			return
		}
		if _, _, errno := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, 0,
			ioprioClassIdle<<ioprioClassShift); errno != 0 {
			errc <- fmt.Errorf("ioprio_set: %w", errno)
			return
		}
		if cg != nil {
			if err := cg.prepare(cmd.SysProcAttr); err != nil {
				errc <- err
				return
			}
		}
		// The thread is discarded afterwards, so a failed return to the
		// host's namespace harms nothing.
		err := startInNetns(netns, cmd.Start)
		if errors.Is(err, errNetnsRestore) && cmd.Process != nil {
			// Started: the thread stays in the step's namespace, which
			// harms nothing as it is discarded after the step.
			err = nil
		}
		if cg != nil {
			cg.started()
		}
		errc <- err
		if err == nil {
			<-done
		}
	}()
	if err := <-errc; err != nil {
		return nil, err
	}
	return func() { close(done) }, nil
}
