package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// cell is a reusable cgroup v1 pids cgroup with a thread of ours living in
// it, lowered to nice 19 and the idle I/O class: a child forked by that
// thread starts inside the cgroup at the lowest priority, and no thread
// ever moves between cgroups per step.
//
// Why: on cgroup v1, moving a task between cgroups takes the kernel's
// cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period
// whenever no other move happened in the last one or two: about 8 ms on the
// project's machine, paid by every step started more than ~10 ms after the
// previous one (the no-op build's step took 6 ms with the move's fast path
// and 14 ms without). A cell's thread moves once, when the cell is made.
// cgroup v2 needs no cell: clone3's CLONE_INTO_CGROUP moves nothing.
//
// A cell is used by one step at a time. Its cgroup's pids.max is set for
// each step. Processes of earlier steps that were killed but not yet reaped
// by the host's init stay charged to it (bwrap's PID-namespace init always
// is, for a moment, or for seconds under an init that reaps slowly): pids.max
// counts them on top of the step's limit, and a cell with more than
// maxLeftover of them is not reused.
type cell struct {
	dir  string
	reqs chan startReq
	errs chan error
	// broken: the thread could not return to the host's network namespace
	// and has ended; the cell is never reused.
	broken atomic.Bool
}

// startReq asks a cell's thread to start cmd, inside netns when not nil.
type startReq struct {
	cmd   *exec.Cmd
	netns *os.File
}

// maxIdleCells bounds the cells kept for reuse; more are destroyed when
// their step ends.
const maxIdleCells = 8

var idleCells struct {
	sync.Mutex
	list []*cell
}

// takeCell returns an idle cell under parent, or a new one.
func takeCell(parent string) (*cell, error) {
	idleCells.Lock()
	if n := len(idleCells.list); n > 0 {
		c := idleCells.list[n-1]
		idleCells.list = idleCells.list[:n-1]
		idleCells.Unlock()
		return c, nil
	}
	idleCells.Unlock()
	return newCell(parent)
}

// newCell creates a cell's cgroup and starts its thread inside it.
func newCell(parent string) (*cell, error) {
	dir := filepath.Join(parent, fmt.Sprintf("kiln-sandbox-%d-%d", os.Getpid(), cgroupSeq.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create pids cgroup: %w", err)
	}
	c := &cell{dir: dir, reqs: make(chan startReq), errs: make(chan error)}
	ready := make(chan error)
	go c.run(ready)
	if err := <-ready; err != nil {
		_ = os.Remove(dir)
		return nil, err
	}
	return c, nil
}

// run is the cell's thread: lowered, moved into the cell's cgroup, then
// starting the commands it is given until reqs is closed, then moved out
// again. It never unlocks its thread, so the Go runtime discards the
// thread when run returns.
func (c *cell) run(ready chan<- error) {
	runtime.LockOSThread()
	// No UnlockOSThread: the thread is lowered and in the cell's cgroup.
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, lowestNice); err != nil {
		ready <- fmt.Errorf("setpriority: %w", err)
		return
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, 0,
		ioprioClassIdle<<ioprioClassShift); errno != 0 {
		ready <- fmt.Errorf("ioprio_set: %w", errno)
		return
	}
	tid := strconv.Itoa(unix.Gettid())
	if err := os.WriteFile(filepath.Join(c.dir, "tasks"), []byte(tid), 0); err != nil {
		ready <- fmt.Errorf("join pids cgroup: %w", err)
		return
	}
	ready <- nil
	for req := range c.reqs {
		err := startInNetns(req.netns, req.cmd.Start)
		c.errs <- err
		if errors.Is(err, errNetnsRestore) {
			// Stuck in the step's network namespace: start nothing more,
			// but stay until the cell is given back (put closes reqs):
			// the thread is the parent of the step just started, and
			// bwrap's --die-with-parent would kill it if it ended.
			for range c.reqs {
				c.errs <- errNetnsRestore
			}
			break
		}
	}
	// Out of the cgroup before the thread ends, so it can be removed at
	// once: a thread the runtime cannot end (the main thread) is parked
	// for good instead.
	_ = os.WriteFile(filepath.Join(filepath.Dir(c.dir), "tasks"), []byte(tid), 0)
}

// setMax sets the cgroup's pids.max for the next step: processes plus the
// helper allowance plus what earlier steps left charged, or no limit for 0.
func (c *cell) setMax(processes uint64) error {
	limit := "max"
	if processes > 0 {
		charged, err := c.charged()
		if err != nil {
			return fmt.Errorf("read pids.current: %w", err)
		}
		leftover := charged - min(charged, 1) // all but the cell's thread
		limit = strconv.FormatUint(processes+cgroupHelperAllowance+leftover, 10)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "pids.max"), []byte(limit), 0); err != nil {
		return fmt.Errorf("set pids.max: %w", err)
	}
	return nil
}

// start starts cmd from the cell's thread, inside netns when not nil.
func (c *cell) start(cmd *exec.Cmd, netns *os.File) error {
	c.reqs <- startReq{cmd: cmd, netns: netns}
	err := <-c.errs
	if errors.Is(err, errNetnsRestore) {
		c.broken.Store(true)
		if cmd.Process != nil {
			err = nil // the step runs; the cell is not reused
		}
	}
	return err
}

// maxLeftover bounds the killed but unreaped processes a cell may hold
// and still be reused; as they are reaped during a step, its processes may
// exceed the step's limit by that many at most.
const maxLeftover = 4

// put gives back a cell whose cgroup holds no process of a step any more,
// keeping it for reuse, or destroying it (in the background) when enough
// are idle or when killed processes are still charged to it (not yet
// reaped by the host's init: they would count against the next step).
func (c *cell) put() {
	if c.broken.Load() {
		// Its step is over: end its thread (see run), remove its cgroup.
		go c.destroy()
		return
	}
	if n, err := c.charged(); err != nil || n > 1+maxLeftover {
		go c.destroy()
		return
	}
	idleCells.Lock()
	if len(idleCells.list) < maxIdleCells {
		idleCells.list = append(idleCells.list, c)
		idleCells.Unlock()
		return
	}
	idleCells.Unlock()
	c.destroy()
}

// charged returns the cgroup's pids.current.
func (c *cell) charged() (uint64, error) {
	data, err := os.ReadFile(filepath.Join(c.dir, "pids.current"))
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
}

// destroy ends the cell's thread and removes its cgroup (retried while the
// exiting thread is still charged to it).
func (c *cell) destroy() {
	close(c.reqs)
	(&stepCgroup{dir: c.dir, fd: -1}).destroy()
}

// abandon ends the cell's thread but leaves its cgroup, which still holds
// processes that could not be killed.
func (c *cell) abandon() {
	close(c.reqs)
}

// ReleaseIdle removes the pids cgroups kept for reuse (cgroup v1, see
// cell) and ends their threads. Call it when no step runs any more, e.g.
// as the build server stops; a later step makes new ones. Cgroups not
// released (a crash) are removed by the next process that needs one.
func ReleaseIdle() {
	idleCells.Lock()
	list := idleCells.list
	idleCells.list = nil
	idleCells.Unlock()
	for _, c := range list {
		c.destroy()
	}
}
