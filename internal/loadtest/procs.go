package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long stop waits after SIGTERM before SIGKILL.
const stopGrace = 5 * time.Second

// proc is one program the harness started. Its output goes to a log file in
// the run directory; it runs in its own process group and dies with the
// harness (Pdeathsig). Every proc is registered with the procs registry,
// which stops them all by PID when the harness ends, normally or not.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

// registry holds every started process so that cleanup reaches all of them.
type registry struct {
	mu    sync.Mutex
	procs []*proc
}

var procs registry

// start runs path with args and env (appended to this process's
// environment), logging to dir/name.log.
func (r *registry) start(dir, name, path string, env []string, args ...string) (*proc, error) {
	return r.startIn(dir, "", name, path, env, args...)
}

// startIn is start with the process's working directory set to workDir
// ("" : the harness's own).
func (r *registry) startIn(dir, workDir, name, path string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = workDir
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	return p, nil
}

// stopAll stops every registered process that still runs, newest first
// (build servers before their metaserver).
func (r *registry) stopAll() {
	r.mu.Lock()
	ps := r.procs
	r.procs = nil
	r.mu.Unlock()
	for i := len(ps) - 1; i >= 0; i-- {
		ps[i].stop()
	}
}

// pid is the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// running reports whether the process has not exited yet.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process, waits up to stopGrace, then SIGKILLs it
// and its process group. Safe to call more than once.
func (p *proc) stop() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	// Children (bwrap, git) left in the group go too; the group id is the pid.
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
}

// kill sends SIGKILL to the process's group at once (a crash, for the
// program) and waits for the process to exit.
func (p *proc) kill() {
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
}

// exitError explains an unexpected exit with the tail of the log.
func (p *proc) exitError() error {
	return fmt.Errorf("%s (pid %d) exited: %v; last log lines:\n%s", p.name, p.pid(), p.waitErr, tailFile(p.logPath, 20))
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freeAddr returns a free loopback address "127.0.0.1:PORT".
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// memInfo is a process's resident memory from /proc/PID/status, in bytes.
type memInfo struct {
	RSS, Anon, File, HWM int64
}

// readMem reads VmRSS, RssAnon, RssFile and VmHWM of pid.
func readMem(pid int) (memInfo, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memInfo{}, err
	}
	var m memInfo
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &m.RSS
		case "RssAnon":
			dst = &m.Anon
		case "RssFile":
			dst = &m.File
		case "VmHWM":
			dst = &m.HWM
		default:
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return memInfo{}, fmt.Errorf("/proc/%d/status: unexpected %q", pid, line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return memInfo{}, err
		}
		*dst = n << 10
	}
	if m.RSS == 0 {
		return memInfo{}, errors.New("no VmRSS in /proc status")
	}
	return m, nil
}

// resetPeak resets VmHWM of pid to its current RSS (Linux >= 4.0; needs
// write access to /proc/PID/clear_refs, i.e. same user or root).
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// readCPU returns the user+system CPU time pid has used.
func readCPU(pid int) (time.Duration, error) {
	own, _, err := readCPUs(pid)
	return own, err
}

// readCPUs returns the user+system CPU time pid has used itself and the time
// of its children it has waited for (cutime+cstime: bwrap, git, tar...).
func readCPUs(pid int) (own, children time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces; fields resume after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// After ')': state(3) ... utime is field 14, stime 15 (1-based), i.e.
	// indexes 11 and 12 here.
	if len(f) < 15 {
		return 0, 0, errors.New("short /proc stat")
	}
	var v [4]int64
	for i := range v {
		if v[i], err = strconv.ParseInt(f[11+i], 10, 64); err != nil {
			return 0, 0, err
		}
	}
	tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / clockTicks }
	return tick(v[0] + v[1]), tick(v[2] + v[3]), nil
}

// machineCPU is the whole machine's CPU time from /proc/stat: busy (all but
// idle and iowait) and total, in USER_HZ ticks.
type machineCPU struct{ busy, total int64 }

func readMachineCPU() (machineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return machineCPU{}, errors.New("unexpected /proc/stat")
	}
	var c machineCPU
	for i, s := range f[1:] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return machineCPU{}, err
		}
		c.total += n
		if i != 3 && i != 4 { // idle, iowait
			c.busy += n
		}
	}
	return c, nil
}

// utilization is the busy share (0..1) of the machine between a and b.
func utilization(a, b machineCPU) float64 {
	if b.total == a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total)
}
