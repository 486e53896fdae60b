package sandbox

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const sigKill = unix.SIGKILL

// bwrapStatus follows bwrap's --json-status-fd documents.
type bwrapStatus struct {
	done chan struct{} // closed at EOF of the status pipe

	mu       sync.Mutex
	childPID int    // host PID of the sandbox's PID-namespace init
	pidNS    uint64 // inode of the sandbox's PID namespace
	pidfd    int    // pidfd of childPID, -1 if none
	code     int
	ran      bool // an "exit-code" document arrived: the command was executed
}

func readBwrapStatus(r io.Reader) *bwrapStatus {
	st := &bwrapStatus{done: make(chan struct{}), pidfd: -1}
	go func() {
		defer close(st.done)
		dec := json.NewDecoder(r)
		for {
			var doc struct {
				ChildPID *int    `json:"child-pid"`
				PidNS    *uint64 `json:"pid-namespace"`
				ExitCode *int    `json:"exit-code"`
			}
			if err := dec.Decode(&doc); err != nil {
				return
			}
			st.mu.Lock()
			if doc.ChildPID != nil && doc.PidNS != nil && st.pidfd < 0 {
				st.childPID, st.pidNS = *doc.ChildPID, *doc.PidNS
				st.pidfd = openInNamespace(st.childPID, st.pidNS)
			}
			if doc.ExitCode != nil {
				st.code, st.ran = *doc.ExitCode, true
			}
			st.mu.Unlock()
		}
	}()
	return st
}

// openInNamespace returns a pidfd for pid if pid is a live process in PID
// namespace ns, else -1. The pidfd pins the process: signals sent through it
// cannot reach a later process that reuses the PID.
func openInNamespace(pid int, ns uint64) int {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1
	}
	// Checked after opening: if pid was reused before the open, this sees the
	// stranger's namespace and rejects it.
	if pidNamespace(pid) != ns {
		unix.Close(fd)
		return -1
	}
	return fd
}

// pidNamespace returns the inode of pid's PID namespace, 0 if unknown.
func pidNamespace(pid int) uint64 {
	fi, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/ns/pid")
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// terminate sends SIGTERM to every process of the sandbox but its init (which
// ignores it); once the command's shell exits, bwrap exits and the namespace
// dies. It reports false when the sandbox is not known yet.
func (st *bwrapStatus) terminate() bool {
	st.mu.Lock()
	ns, initPID := st.pidNS, st.childPID
	st.mu.Unlock()
	if ns == 0 {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == initPID {
			continue
		}
		if pidNamespace(pid) != ns {
			continue
		}
		if fd := openInNamespace(pid, ns); fd >= 0 {
			_ = unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0)
			unix.Close(fd)
		}
	}
	return true
}

// kill SIGKILLs the sandbox's init, which makes the kernel kill every process
// in its PID namespace.
func (st *bwrapStatus) kill() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.pidfd >= 0 {
		_ = unix.PidfdSendSignal(st.pidfd, unix.SIGKILL, nil, 0)
	}
}

// waitGone waits, bounded by d, until the status pipe is closed and the
// sandbox's init has exited. The kernel reaps every other process of the PID
// namespace before init's exit is reported, so afterwards nothing of the
// step runs.
func (st *bwrapStatus) waitGone(d time.Duration) {
	deadline := time.Now().Add(d)
	t := time.NewTimer(d)
	select {
	case <-st.done:
	case <-t.C:
	}
	t.Stop()
	st.mu.Lock()
	fd := st.pidfd
	st.pidfd = -1
	st.mu.Unlock()
	if fd < 0 {
		return
	}
	defer unix.Close(fd)
	for {
		_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms < 10 {
			ms = 10
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if n > 0 || (err != nil && !errors.Is(err, unix.EINTR)) || time.Now().After(deadline) {
			return
		}
	}
}

// exitCode returns the command's exit status and whether it ran at all.
func (st *bwrapStatus) exitCode() (int, bool) {
	<-st.done
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.code, st.ran
}
