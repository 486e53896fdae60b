package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupHelperAllowance is added to Limits.Processes for pids.max: the
// spawning thread (a cell's, for good, on cgroup v1) and bwrap's two own
// processes (monitor and PID-namespace init) live in the step's cgroup too.
const cgroupHelperAllowance = 3

// cgroupParent is where step cgroups are created: the directory of this
// process's own pids cgroup. Found once; "" when no usable pids cgroup
// exists (not root, or the controller is not available to us).
var cgroupParent = sync.OnceValues(func() (parent string, v2 bool) {
	if unix.Geteuid() != 0 {
		return "", false
	}
	parent, v2, err := findPidsCgroup()
	if err != nil {
		slog.Default().Warn("sandbox: no pids cgroup; the Processes limit is only RLIMIT_NPROC, which the kernel does not enforce for root",
			"err", err)
		return "", false
	}
	removeStaleCgroups(parent)
	return parent, v2
})

// removeStaleCgroups removes empty step cgroups that a crashed process left
// behind. Only cgroups whose creator (the pid in their name) is gone: another
// live buildserver on the machine may have just created one and not joined
// it yet, and removing that would fail its step (ENODEV on join). rmdir also
// fails harmlessly on a cgroup that still has processes. It runs before this
// process makes any, so one named after this process's own pid was left by an
// earlier process that had the same pid: stale too, and in the way of this
// process's first step (mkdir: file exists).
func removeStaleCgroups(parent string) {
	stale, _ := filepath.Glob(filepath.Join(parent, "kiln-sandbox-*"))
	self := os.Getpid()
	for _, d := range stale {
		if owner, ok := cgroupOwner(filepath.Base(d)); ok && owner != self && processAlive(owner) {
			continue
		}
		_ = os.Remove(d)
	}
}

// cgroupOwner parses the creating pid out of "kiln-sandbox-PID-SEQ".
func cgroupOwner(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "kiln-sandbox-")
	if !ok {
		return 0, false
	}
	pidText, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(pidText)
	return pid, err == nil && pid > 0
}

// processAlive reports whether a process with this pid exists.
func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

var cgroupSeq atomic.Uint64

// findPidsCgroup returns the directory of this process's pids cgroup: the
// cgroup v1 pids hierarchy, or cgroup v2 when pids is enabled for children of
// our cgroup (delegation).
func findPidsCgroup() (string, bool, error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", false, err
	}
	var v1Path, v2Path string
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" && parts[0] == "0" {
			v2Path = parts[2]
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "pids" {
				v1Path = parts[2]
			}
		}
	}
	mounts, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, err
	}
	defer mounts.Close()
	var v1Mount, v2Mount string
	sc := bufio.NewScanner(mounts)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 || f[3] != "/" {
			continue
		}
		switch {
		case g[0] == "cgroup" && hasOption(g[2], "pids"):
			v1Mount = f[4]
		case g[0] == "cgroup2" && v2Mount == "":
			v2Mount = f[4]
		}
	}
	if v1Mount != "" && v1Path != "" {
		dir := filepath.Join(v1Mount, v1Path)
		if unix.Access(dir, unix.W_OK) == nil {
			return dir, false, nil
		}
	}
	if v2Mount != "" && v2Path != "" {
		dir := filepath.Join(v2Mount, v2Path)
		ctl, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
		if err == nil && hasOption(strings.ReplaceAll(strings.TrimSpace(string(ctl)), " ", ","), "pids") {
			return dir, true, nil
		}
	}
	return "", false, errors.New("neither a writable cgroup v1 pids hierarchy nor a delegated cgroup v2 pids controller")
}

func hasOption(list, opt string) bool {
	for _, o := range strings.Split(list, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// stepCgroup is a pids cgroup holding every process of one step.
//
// On cgroup v2 it is made for the step and removed after it (mkdir,
// pids.max, rmdir: 15-20 µs each); the child starts in it through clone3's
// CLONE_INTO_CGROUP. On v1 it is a reused cell (see cell), whose thread
// starts the child: moving a thread into and out of a fresh cgroup per step
// can wait for an RCU grace period, about 8 ms here.
type stepCgroup struct {
	dir  string
	v2   bool
	fd   int   // v2: open directory for clone3's CLONE_INTO_CGROUP; else -1
	cell *cell // v1: the cell lent to this step; nil on v2
}

// newStepCgroup creates a step cgroup with pids.max = processes (+ helper
// allowance; 0 = no limit). It returns nil, nil when no pids cgroup is
// usable.
func newStepCgroup(processes uint64) (*stepCgroup, error) {
	parent, v2 := cgroupParent()
	if parent == "" {
		return nil, nil
	}
	if !v2 {
		cl, err := takeCell(parent)
		if err != nil {
			return nil, err
		}
		if err := cl.setMax(processes); err != nil {
			cl.destroy()
			return nil, err
		}
		return &stepCgroup{dir: cl.dir, fd: -1, cell: cl}, nil
	}
	dir := filepath.Join(parent, fmt.Sprintf("kiln-sandbox-%d-%d", os.Getpid(), cgroupSeq.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create pids cgroup: %w", err)
	}
	c := &stepCgroup{dir: dir, v2: v2, fd: -1}
	if processes > 0 {
		limit := strconv.FormatUint(processes+cgroupHelperAllowance, 10)
		if err := os.WriteFile(filepath.Join(dir, "pids.max"), []byte(limit), 0); err != nil {
			_ = os.Remove(dir)
			return nil, fmt.Errorf("set pids.max: %w", err)
		}
	}
	if v2 {
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			_ = os.Remove(dir)
			return nil, fmt.Errorf("open pids cgroup: %w", err)
		}
		c.fd = fd
	}
	return c, nil
}

// prepare arranges for the child to start inside the cgroup. On cgroup v1
// without a cell it moves the calling thread, which must be locked and
// discarded after the fork; on v2 it sets clone3's CLONE_INTO_CGROUP. A
// cell needs nothing: its own thread starts the child.
func (c *stepCgroup) prepare(attr *syscall.SysProcAttr) error {
	if c.cell != nil {
		return nil
	}
	if c.v2 {
		attr.UseCgroupFD = true
		attr.CgroupFD = c.fd
		return nil
	}
	tid := strconv.Itoa(unix.Gettid())
	if err := os.WriteFile(filepath.Join(c.dir, "tasks"), []byte(tid), 0); err != nil {
		return fmt.Errorf("join pids cgroup: %w", err)
	}
	return nil
}

// started moves the calling thread back out of a v1 cgroup once the child is
// forked, so the cgroup holds only the step's processes.
func (c *stepCgroup) started() {
	if c.v2 || c.cell != nil {
		return
	}
	tid := strconv.Itoa(unix.Gettid())
	_ = os.WriteFile(filepath.Join(filepath.Dir(c.dir), "tasks"), []byte(tid), 0)
}

// procs returns the PIDs in the cgroup other than this process (listed
// while a spawning thread has not left yet), or an error if it cannot be
// read.
func (c *stepCgroup) procs() ([]int, error) {
	data, err := os.ReadFile(filepath.Join(c.dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, p := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(p); err == nil && pid > 0 && pid != self {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killAll SIGKILLs every process in the cgroup until it is empty or a
// deadline passes, and reports whether it emptied. The common case, a step
// whose processes are all gone already, costs one read of cgroup.procs; only
// processes that survived the step's own kill (possible without a PID
// namespace) are waited for: on v2 by cgroup.kill and cgroup.events
// ("populated 0", pollable), on v1, which has neither, by polling.
func (c *stepCgroup) killAll() bool {
	pids, err := c.procs()
	if err != nil {
		return false
	}
	if len(pids) == 0 {
		return true
	}
	deadline := time.Now().Add(pipeDrainTimeout)
	if c.v2 {
		_ = os.WriteFile(filepath.Join(c.dir, "cgroup.kill"), []byte("1"), 0)
		if c.waitUnpopulated(deadline) {
			return true
		}
	}
	for {
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(time.Millisecond)
		if pids, err = c.procs(); err != nil {
			return false
		}
		if len(pids) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// waitUnpopulated waits for a v2 cgroup's cgroup.events to say
// "populated 0"; the kernel signals a change of the file as POLLPRI.
func (c *stepCgroup) waitUnpopulated(deadline time.Time) bool {
	f, err := os.Open(filepath.Join(c.dir, "cgroup.events"))
	if err != nil {
		return false
	}
	defer f.Close()
	fd := int(f.Fd())
	buf := make([]byte, 256)
	for {
		n, err := unix.Pread(fd, buf, 0)
		if err != nil {
			return false
		}
		if strings.Contains(string(buf[:n]), "populated 0") {
			return true
		}
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms <= 0 {
			return false
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}
		if _, err := unix.Poll(fds, ms); err != nil && !errors.Is(err, unix.EINTR) {
			return false
		}
	}
}

// remove kills what is left and deletes the cgroup, or gives a cell back
// for reuse. A cgroup that cannot be emptied is left (with a warning), and
// so is a cell's, never reused.
func (c *stepCgroup) remove() {
	if !c.killAll() {
		slog.Default().Warn("sandbox: processes survive in step cgroup", "cgroup", c.dir)
		if c.fd >= 0 {
			_ = unix.Close(c.fd)
		}
		if c.cell != nil {
			c.cell.abandon()
		}
		return
	}
	if c.cell != nil {
		c.cell.put()
		return
	}
	c.destroy()
}

// destroy deletes an empty cgroup. Exited processes may stay charged for a
// moment after cgroup.procs is empty; rmdir is retried briefly.
func (c *stepCgroup) destroy() {
	if c.fd >= 0 {
		_ = unix.Close(c.fd)
		c.fd = -1
	}
	deadline := time.Now().Add(time.Second)
	for {
		err := os.Remove(c.dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			slog.Default().Warn("sandbox: cannot remove step cgroup", "cgroup", c.dir, "err", err)
			return
		}
		time.Sleep(time.Millisecond)
	}
}
