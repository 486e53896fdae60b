package sandbox

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DiskUsage returns the space allocated to paths and everything below
// them, in bytes, as DiskLimit counts it. Paths that do not exist count
// nothing; entries that vanish during the walk are skipped. A directory of
// ours that a step made unreadable or unsearchable to its owner (mode 000,
// 400...) is given back u+rwx (safely, see reopenOwnerRWX) so that nothing
// can hide below it; other entries that cannot be read are skipped and the
// first such error is returned with the partial sum.
func DiskUsage(paths ...string) (int64, error) {
	w := walker{buf: make([]byte, 16<<10)}
	var total int64
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if !errors.Is(err, unix.ENOENT) {
				w.note(fmt.Errorf("disk usage of %s: %w", p, err))
			}
			continue
		}
		total += st.Blocks * 512
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		fd, err := unix.Open(p, dirFlags, 0)
		if err != nil {
			w.note(fmt.Errorf("disk usage of %s: %w", p, err))
			continue
		}
		total += w.dir(fd)
	}
	return total, w.err
}

// walker sums a tree's allocated space through directory descriptors
// (openat, fstatat), so neither path length nor depth limits it.
type walker struct {
	buf []byte
	err error
}

func (w *walker) note(err error) {
	if w.err == nil {
		w.err = err
	}
}

// dir returns the space below the directory open as fd, and closes fd.
func (w *walker) dir(fd int) int64 {
	defer unix.Close(fd)
	var total int64
	for {
		n, err := unix.Getdents(fd, w.buf)
		if err != nil {
			if !errors.Is(err, unix.EINTR) {
				w.note(fmt.Errorf("reading a directory: %w", err))
				return total
			}
			continue
		}
		if n <= 0 {
			return total
		}
		// Names are copied out of buf before it is reused below.
		_, _, names := unix.ParseDirent(w.buf[:n], -1, nil)
		for _, name := range names {
			total += w.entry(fd, name)
		}
	}
}

// entry returns the space of name in the directory open as fd, and below
// it when it is a directory.
func (w *walker) entry(fd int, name string) int64 {
	var st unix.Stat_t
	if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if !errors.Is(err, unix.ENOENT) {
			w.note(fmt.Errorf("disk usage of %s: %w", name, err))
		}
		return 0
	}
	size := st.Blocks * 512
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return size
	}
	if st.Mode&0o700 != 0o700 {
		// The build's own directory, made unreadable or unsearchable to its
		// owner (chmod 000, 400...): nothing may hide below it, so give it
		// back u+rwx first. Safely: the build can swap the name for a
		// symlink at any moment, so the directory is pinned by an O_PATH
		// descriptor (which never follows a symlink), checked, and changed
		// through that descriptor, never by name.
		if sub, err := reopenOwnerRWX(fd, name); err == nil {
			return size + w.dir(sub)
		} else if !errors.Is(err, unix.ENOENT) {
			w.note(fmt.Errorf("disk usage of %s: %w", name, err))
			return size
		}
		return size
	}
	sub, err := unix.Openat(fd, name, dirFlags, 0)
	if err != nil {
		if !errors.Is(err, unix.ENOENT) {
			w.note(fmt.Errorf("disk usage of %s: %w", name, err))
		}
		return size
	}
	return size + w.dir(sub)
}

const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// reopenOwnerRWX adds u+rwx to the directory name in the directory open as
// fd, if it is a directory this process owns, and returns it open for
// reading. The mode is changed through an O_PATH descriptor of that very
// directory (via /proc/self/fd), so a symlink swapped in for name is never
// followed to another file.
func reopenOwnerRWX(fd int, name string) (int, error) {
	p, err := unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(p)
	var st unix.Stat_t
	if err := unix.Fstat(p, &st); err != nil {
		return -1, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != unix.Geteuid() {
		return -1, fmt.Errorf("%s: not a directory of ours", name)
	}
	self := fmt.Sprintf("/proc/self/fd/%d", p)
	if err := unix.Fchmodat(unix.AT_FDCWD, self, st.Mode&0o7777|0o700, 0); err != nil {
		return -1, err
	}
	return unix.Open(self, dirFlags&^unix.O_NOFOLLOW, 0)
}

// availableBytes returns the space of path's file system available to
// unprivileged users.
func availableBytes(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// diskWatch checks a DiskLimit while a step runs (see DiskLimit). Its
// checks run on a timer's goroutine, one at a time; none runs before the
// first Interval has passed.
type diskWatch struct {
	step  string
	limit DiskLimit
	// c receives the first failed check.
	c chan *DiskError

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
}

func watchDisk(step string, limit DiskLimit) *diskWatch {
	if limit.Interval <= 0 {
		limit.Interval = DefaultDiskInterval
	}
	w := &diskWatch{step: step, limit: limit, c: make(chan *DiskError, 1)}
	w.mu.Lock()
	w.timer = time.AfterFunc(limit.Interval, w.check)
	w.mu.Unlock()
	return w
}

// stop ends the checks; one under way finishes unheard.
func (w *diskWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
}

func (w *diskWatch) check() {
	start := time.Now()
	if derr := w.measure(); derr != nil {
		w.c <- derr // buffered; the only send
		return
	}
	next := max(w.limit.Interval, 4*time.Since(start))
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.timer.Reset(next)
	}
}

// measure returns a *DiskError when the limit does not hold now.
func (w *diskWatch) measure() *DiskError {
	l := w.limit
	if l.MinFreeBytes > 0 {
		if free, err := availableBytes(l.Paths[0]); err == nil && free < l.MinFreeBytes {
			return &DiskError{Step: w.step, Free: free, MinFreeBytes: l.MinFreeBytes}
		}
	}
	if l.MaxBytes > 0 {
		// A walk error leaves a partial sum, still a lower bound.
		if used, _ := DiskUsage(l.Paths...); used > l.MaxBytes {
			return &DiskError{Step: w.step, Used: used, MaxBytes: l.MaxBytes}
		}
	}
	return nil
}
