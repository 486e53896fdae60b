package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// launch is how a runner starts and stops its child; execute does the rest.
type launch struct {
	argv       []string
	env        []string   // environment of argv[0]; never nil
	dir        string     // working directory of argv[0]; "" = inherit
	extraFiles []*os.File // closed by execute once the child has them
	// cred, when not nil, is the user argv[0] runs as (see Step.User).
	cred *syscall.Credential
	// netns, when not nil, is the network namespace the child starts in
	// (see takeNetns); execute closes it when it returns.
	netns *os.File
	grace time.Duration
	// pidNamespace: every process of the step lives in a PID namespace
	// whose end kills them all (Bwrap), so a pids cgroup is needed only to
	// enforce Limits.Processes; without one (Unsandboxed) the cgroup also
	// catches processes that leave the step's process group.
	pidNamespace bool
	// terminate asks the step's processes to stop (SIGTERM); pid is the
	// child's, not yet reaped.
	terminate func(pid int)
	// kill SIGKILLs every process of the step; pid is the child's, not yet
	// reaped. Called when the grace period expires and again after the child
	// exited, so it must be safe to call twice.
	kill func(pid int)
	// afterExit runs once the child is reaped and killed: a runner waits there
	// for processes that outlive its child (bwrap's PID namespace).
	afterExit func()
	// leftovers, when not nil, lists what the step left running once its
	// child exited by itself; pid is the child's, exited but not reaped, and
	// cg the step's cgroup or nil. Under Bwrap the step reports that itself.
	leftovers func(pid int, cg *stepCgroup) leftovers
	// result maps the exit of a step that was neither timed out nor
	// cancelled to Run's error; tail is the end of the output.
	result func(state *os.ProcessState, tail []byte) error
}

// execute runs l for s as described on Runner.Run.
func execute(ctx context.Context, s Step, l launch) error {
	if l.netns != nil {
		defer l.netns.Close()
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("step %q not started: %w", s.Name, err)
	}
	var cg *stepCgroup
	if !l.pidNamespace || s.Limits.Processes > 0 {
		var err error
		if cg, err = newStepCgroup(s.Limits.Processes); err != nil {
			closeFiles(l.extraFiles)
			return &SetupError{Err: err}
		}
	}
	removeCgroup := func() {
		if cg != nil {
			cg.remove()
			cg = nil
		}
	}
	defer removeCgroup()

	// Output goes through our own pipe rather than exec.Cmd's copying
	// goroutine bounded by Cmd.WaitDelay: Cmd.Wait would wait for the pipe
	// before we could kill what holds it, so a step that leaves a background
	// process would always cost the whole WaitDelay. Here the child is waited
	// for alone, the step's processes are killed, and only then is the pipe
	// drained, bounded by pipeDrainTimeout.
	pr, pw, err := os.Pipe()
	if err != nil {
		closeFiles(l.extraFiles)
		return setupErrorf("output pipe: %w", err)
	}
	cmd := &exec.Cmd{
		Path:       l.argv[0],
		Args:       l.argv,
		Env:        l.env,
		Dir:        l.dir,
		Stdout:     pw, // an *os.File: the child writes to it directly, no exec goroutine
		Stderr:     pw,
		ExtraFiles: l.extraFiles,
		// Pdeathsig is set in the child before exec, and Go's fork checks
		// the parent is still there after setting it: a build server killed
		// at the instant it starts a step cannot leave the step running
		// (bwrap's own --die-with-parent comes only after bwrap starts).
		// It follows the thread that forks, which startLowPriority keeps
		// until the child is reaped.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Credential: l.cred, Pdeathsig: syscall.SIGKILL},
	}
	release, err := startLowPriority(cmd, cg, l.netns)
	pw.Close()
	closeFiles(l.extraFiles) // the child has its copies
	if err != nil {
		pr.Close()
		return setupErrorf("start %s: %w", l.argv[0], err)
	}
	pid := cmd.Process.Pid

	out := newOutputCopier(s.Output, pr)

	exited := make(chan struct{})
	go func() {
		defer close(exited)
		waitNoReap(pid)
	}()

	var stopped error
	var timeout <-chan time.Time
	if s.Timeout > 0 {
		t := time.NewTimer(s.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var diskFull <-chan *DiskError
	if s.Disk.active() {
		w := watchDisk(s.Name, s.Disk)
		defer w.stop()
		diskFull = w.c
	}
	select {
	case <-exited:
	case <-ctx.Done():
		stopped = fmt.Errorf("step %q: %w", s.Name, ctx.Err())
	case <-timeout:
		stopped = fmt.Errorf("step %q: %w after %s", s.Name, ErrTimeout, s.Timeout)
	case derr := <-diskFull:
		// No grace: every moment lets the step write more.
		l.kill(pid)
		<-exited
		return finishStopped(l, cmd, release, out, removeCgroup, derr)
	}
	var left leftovers
	if stopped == nil && l.leftovers != nil {
		left = l.leftovers(pid, cg)
	}
	if stopped != nil {
		l.terminate(pid)
		grace := time.NewTimer(l.grace)
		select {
		case <-exited:
		case <-grace.C:
			l.kill(pid)
			<-exited
		}
		grace.Stop()
	}
	if stopped != nil {
		return finishStopped(l, cmd, release, out, removeCgroup, stopped)
	}
	tail, waitErr := cleanUp(l, cmd, release, out, removeCgroup)
	if cmd.ProcessState == nil {
		return setupErrorf("wait %s: %w", l.argv[0], waitErr)
	}
	return left.attach(s.Name, l.result(cmd.ProcessState, tail))
}

// cleanUp kills what is left of a step whose child has exited, reaps the
// child and drains the output; it returns the output's tail and Wait's
// error.
func cleanUp(l launch, cmd *exec.Cmd, release func(), out *outputCopier, removeCgroup func()) ([]byte, error) {
	// The child has exited but is not reaped, so its PID (and process group
	// ID) cannot be reused yet: killing the group now cannot hit a stranger.
	l.kill(cmd.Process.Pid)
	waitErr := cmd.Wait()
	release()
	if l.afterExit != nil {
		l.afterExit()
	}
	removeCgroup()
	return out.finish(), waitErr
}

// finishStopped cleans up a step that was stopped and returns why.
func finishStopped(l launch, cmd *exec.Cmd, release func(), out *outputCopier, removeCgroup func(), why error) error {
	_, _ = cleanUp(l, cmd, release, out, removeCgroup)
	return why
}

// waitNoReap blocks until process pid exits, leaving it a zombie.
func waitNoReap(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// exitCode returns the shell-style status of a finished process: the exit
// status, or 128+N for death by signal N.
func exitCode(state *os.ProcessState) int {
	ws, ok := state.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return state.ExitCode()
}

// killGroup sends sig to the process group led by pid.
func killGroup(pid int, sig unix.Signal) {
	_ = unix.Kill(-pid, sig)
}

// tailSize is how much of the output's end is kept for error messages.
const tailSize = 2048

// outputCopier copies the child's output pipe to the step's Output.
type outputCopier struct {
	r    *os.File
	done chan struct{}
	mu   sync.Mutex
	tail []byte
}

func newOutputCopier(w io.Writer, r *os.File) *outputCopier {
	if w == nil {
		w = io.Discard
	}
	c := &outputCopier{r: r, done: make(chan struct{})}
	go c.copy(w)
	return c
}

// copyBufs reuses the output copiers' buffers across steps.
var copyBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (c *outputCopier) copy(w io.Writer) {
	defer close(c.done)
	b := copyBufs.Get().(*[32 << 10]byte)
	defer copyBufs.Put(b)
	buf := b[:]
	for {
		n, err := c.r.Read(buf)
		if n > 0 {
			c.keepTail(buf[:n])
			if w != io.Discard {
				if _, werr := w.Write(buf[:n]); werr != nil {
					// Keep draining: a full pipe would stall the command.
					w = io.Discard
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func (c *outputCopier) keepTail(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(p) >= tailSize {
		c.tail = append(c.tail[:0], p[len(p)-tailSize:]...)
		return
	}
	if over := len(c.tail) + len(p) - tailSize; over > 0 {
		c.tail = append(c.tail[:0], c.tail[over:]...)
	}
	c.tail = append(c.tail, p...)
}

// finish waits, bounded by pipeDrainTimeout, for the pipe's EOF, then closes
// it and waits for the copying goroutine, so Output is never written after
// finish returns. It returns the output's tail.
func (c *outputCopier) finish() []byte {
	t := time.NewTimer(pipeDrainTimeout)
	select {
	case <-c.done:
	case <-t.C:
		// Something that escaped the step holds the pipe; closing our end
		// unblocks the pending Read.
	}
	t.Stop()
	c.r.Close()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.tail...)
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
