package farmtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultStopTimeout is how long Stop waits after SIGTERM before SIGKILL.
const DefaultStopTimeout = 10 * time.Second

// tailLines is how many log lines a failed test prints per process.
const tailLines = 200

// ErrNotStarted is returned by Wait for a process that was never started.
var ErrNotStarted = errors.New("farmtest: process not started")

// Process is one run of a program under test. Its stdout and stderr go to a
// log file in the test's temporary directory, appended across restarts with
// a marker line per start. It runs in its own process group; Stop and Kill
// signal it by PID and finally kill the whole group by its id, so that its
// children (make, bwrap, qemu) go with it.
//
// Lifecycle:
//
//	NewProcess ──Start──▶ running ──Stop/Kill/exit──▶ exited ──Start/Restart──▶ running
//
// A Process is registered with t.Cleanup when created: the cleanup stops it
// and, if the test failed, logs the last 200 lines of its log. Methods are
// safe for concurrent use.
type Process struct {
	t       testing.TB
	name    string
	path    string
	args    []string
	logPath string

	// Env is the environment of the next Start; nil inherits this process's.
	Env []string
	// Dir is the working directory of the next Start; "" is the test's.
	Dir string
	// StopTimeout bounds the graceful part of Stop; 0 is DefaultStopTimeout.
	StopTimeout time.Duration
	// Credential, when not nil, is the user the next Start runs the
	// program as (the test must be root); nil: this process's user.
	Credential *syscall.Credential
	// Cloneflags are the namespaces (syscall.CLONE_NEW*) the next Start
	// creates for the program; the test must be root.
	Cloneflags uintptr

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current run has exited
	waitErr error
	starts  int
}

// NewProcess prepares program path with args under a short name used in log
// file names and messages. It does not start it.
func NewProcess(t testing.TB, name, path string, args ...string) *Process {
	t.Helper()
	p := &Process{
		t:       t,
		name:    name,
		path:    path,
		args:    append([]string(nil), args...),
		logPath: filepath.Join(t.TempDir(), name+".log"),
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			kept := keepLog(t, p.logPath)
			t.Logf("---- last %d lines of %s (whole log kept in %s) ----\n%s", tailLines, p.name, kept, tail(p.Logs(), tailLines))
		}
	})
	return p
}

// KeptLogsEnv names the directory where the logs of a failed test's
// processes are kept (the test's temporary directory is deleted with it);
// unset, they go to a new directory under the system's temporary directory.
const KeptLogsEnv = "KILN_TEST_LOGS"

// keepLog copies the log at path out of the test's temporary directory and
// returns where it went ("" and the reason logged if it could not).
func keepLog(t testing.TB, path string) string {
	base := os.Getenv(KeptLogsEnv)
	if base == "" {
		base = filepath.Join(os.TempDir(), "kiln-test-logs")
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	dir := filepath.Join(base, name)
	data, err := os.ReadFile(path)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, filepath.Base(path)), data, 0o644)
	}
	if err != nil {
		t.Logf("farmtest: cannot keep %s: %v", path, err)
		return "(not kept)"
	}
	return filepath.Join(dir, filepath.Base(path))
}

// StartProcess is NewProcess followed by Start; a failure to start fails the
// test.
func StartProcess(t testing.TB, name, path string, args ...string) *Process {
	t.Helper()
	p := NewProcess(t, name, path, args...)
	if err := p.Start(); err != nil {
		t.Fatalf("farmtest: %v", err)
	}
	return p
}

// Name returns the process's short name.
func (p *Process) Name() string { return p.name }

// Args returns the arguments every start uses.
func (p *Process) Args() []string { return append([]string(nil), p.args...) }

// LogPath returns the log file's path.
func (p *Process) LogPath() string { return p.logPath }

// Logs returns the whole log written so far (all runs).
func (p *Process) Logs() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	return string(b)
}

// PID returns the process id of the current or last run, 0 before Start.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the current run has not exited yet.
func (p *Process) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Exited returns a channel closed when the current run exits (nil before
// the first Start).
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Start runs the program. It fails if the current run is still going.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("farmtest: %s is already running (pid %d)", p.name, p.cmd.Process.Pid)
		}
	}
	logf, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("farmtest: log of %s: %w", p.name, err)
	}
	p.starts++
	fmt.Fprintf(logf, "==== farmtest: start #%d of %s: %s %s\n", p.starts, p.name, p.path, strings.Join(p.args, " "))
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env, cmd.Dir = p.Env, p.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: p.Credential, Cloneflags: p.Cloneflags}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("farmtest: starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.waitErr = cmd, done, nil
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(logf, "==== farmtest: %s (pid %d) exited: %v\n", p.name, cmd.Process.Pid, exitText(err))
		logf.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func exitText(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

// Wait blocks until the current run exits and returns its exit error (nil
// for status 0, an *exec.ExitError otherwise).
func (p *Process) Wait() error {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return ErrNotStarted
	}
	<-done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Stop sends SIGTERM to the process, waits up to StopTimeout for it to exit,
// then sends SIGKILL to its process group; any member of the group left
// behind is killed too. It returns the run's exit error (nil for a clean
// exit with status 0, and nil when it was not running).
func (p *Process) Stop() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	timeout := p.StopTimeout
	p.mu.Unlock()
	if done == nil {
		return nil
	}
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	pid := cmd.Process.Pid
	select {
	case <-done:
	default:
		syscall.Kill(pid, syscall.SIGTERM)
		t := time.NewTimer(timeout)
		select {
		case <-done:
			t.Stop()
		case <-t.C:
			syscall.Kill(-pid, syscall.SIGKILL)
			<-done
		}
	}
	syscall.Kill(-pid, syscall.SIGKILL) // stragglers of the group, if any
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Kill sends SIGKILL to the process group at once (a crash, for the
// program) and waits for the exit.
func (p *Process) Kill() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if done == nil {
		return ErrNotStarted
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	return nil
}

// Restart stops the process (gracefully, as Stop) and starts it again with
// the same arguments.
func (p *Process) Restart() error {
	p.Stop()
	return p.Start()
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}
