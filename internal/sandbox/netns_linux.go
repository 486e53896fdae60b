package sandbox

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Network namespaces made ahead of time.
//
// Every Bwrap step runs in a network namespace of its own holding only a
// loopback interface. Creating one (and bringing its loopback up) is
// about 0.7 ms of bwrap's start on the project's machine, on the critical
// path of every step. When the build server may create network namespaces
// itself (root), a small pool of fresh ones is kept ready, made in the
// background, and each step takes one that no step used before: the
// thread that starts bwrap enters it just for the fork and bwrap keeps it
// (--share-net). The step sees exactly what --unshare-net gives it: a new,
// empty namespace with its loopback up. One difference, for the better:
// the namespace belongs to the host's user namespace, not to the step's,
// so the step cannot reconfigure it.
//
// Without the privilege (or if making one fails once) the pool is off and
// bwrap creates the namespace as before.

// netPoolSize is how many ready namespaces are kept.
const netPoolSize = 4

var netPool struct {
	once  sync.Once
	host  *os.File // the process's own network namespace
	ready chan *os.File
	fill  chan struct{}
	off   bool
	err   error // why the pool is off
}

// startNetPool opens the host's namespace and makes the first namespace
// synchronously, to learn whether it can; then it keeps the pool full in
// the background.
func startNetPool() {
	host, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		netPool.off, netPool.err = true, err
		return
	}
	first, err := newNetns()
	if err != nil {
		host.Close()
		netPool.off, netPool.err = true, err
		return
	}
	netPool.host = host
	netPool.ready = make(chan *os.File, netPoolSize)
	netPool.fill = make(chan struct{}, 1)
	netPool.ready <- first
	go refillNetPool()
	netPool.fill <- struct{}{}
}

// refillNetPool makes namespaces whenever the pool is not full; it stops
// (and the pool runs dry, steps falling back to bwrap's own) if making one
// fails.
func refillNetPool() {
	for range netPool.fill {
		for len(netPool.ready) < cap(netPool.ready) {
			ns, err := newNetns()
			if err != nil {
				return
			}
			netPool.ready <- ns
		}
	}
}

// takeNetns returns a network namespace no step has used, or nil when the
// pool is off or empty (bwrap then makes one). The caller owns the file.
func takeNetns() *os.File {
	netPool.once.Do(startNetPool)
	if netPool.off {
		return nil
	}
	var ns *os.File
	select {
	case ns = <-netPool.ready:
	default:
	}
	select {
	case netPool.fill <- struct{}{}:
	default:
	}
	return ns
}

// newNetns makes a network namespace with its loopback up, on a thread of
// its own that the Go runtime then discards (it never returns to the host's
// namespace).
func newNetns() (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread ends in the new namespace.
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			c <- result{err: fmt.Errorf("unshare network namespace: %w", err)}
			return
		}
		f, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			c <- result{err: err}
			return
		}
		if err := loopbackUp(); err != nil {
			f.Close()
			c <- result{err: err}
			return
		}
		c <- result{f: f}
	}()
	r := <-c
	return r.f, r.err
}

// loopbackUp brings up "lo" in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: set flags: %w", err)
	}
	return nil
}

// errNetnsRestore means the starting thread could not return to the host's
// network namespace; it must start nothing else.
var errNetnsRestore = errors.New("could not return to the host's network namespace")

// startInNetns runs start (a fork) on the calling thread, which must be
// locked to it, from inside ns when ns is not nil, and returns the thread
// to the host's namespace. An error wrapping errNetnsRestore means the
// thread is stuck in ns.
func startInNetns(ns *os.File, start func() error) error {
	if ns == nil {
		return start()
	}
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace: %w", err)
	}
	err := start()
	if rerr := unix.Setns(int(netPool.host.Fd()), unix.CLONE_NEWNET); rerr != nil {
		return fmt.Errorf("%w: %v", errNetnsRestore, rerr)
	}
	return err
}
