package sandbox

import (
	"fmt"
	"time"
)

// DefaultDiskInterval is the time between two checks of a DiskLimit, and
// before the first one, unless DiskLimit.Interval says otherwise.
const DefaultDiskInterval = 250 * time.Millisecond

// DiskLimit bounds the disk space of a build while one of its steps runs.
// The zero value sets no bound.
//
// A watcher checks it first one Interval after the step started (a shorter
// step costs nothing but a timer) and then every Interval, or every four
// times the duration of the last check when that is longer, so that a tree
// of very many files costs at most a fifth of a CPU. When a check fails,
// every process of the step is killed at once (SIGKILL, no grace) and Run
// returns a *DiskError. Checks are not atomic: a step can exceed the bound
// by what it writes in one Interval, so the caller should check the usage
// once more after the last step (DiskUsage).
type DiskLimit struct {
	// Paths are the directories whose contents count: the space allocated
	// to every file and directory below them (st_blocks, so sparse files
	// count what they really use; a file with several links in them counts
	// once per link), symbolic links not followed.
	Paths []string
	// MaxBytes is the most Paths may hold; 0 means no bound.
	MaxBytes int64
	// MinFreeBytes is the least space the file system holding Paths[0] must
	// keep available to unprivileged users; 0 means no bound.
	MinFreeBytes int64
	// Interval is the time between checks; 0 means DefaultDiskInterval.
	Interval time.Duration
}

func (d DiskLimit) active() bool {
	return len(d.Paths) > 0 && (d.MaxBytes > 0 || d.MinFreeBytes > 0)
}

// DiskError reports that a step was stopped because its build held more
// disk space than DiskLimit.MaxBytes (the build's own failure), or because
// the file system had less than DiskLimit.MinFreeBytes available (a
// condition of the build server's machine, though a build filling the disk
// is one cause).
type DiskError struct {
	// Step is the Step.Name.
	Step string
	// Used is what Paths held at the check, in bytes; MaxBytes is the limit.
	// Used > MaxBytes when the cap was exceeded.
	Used, MaxBytes int64
	// Free is what the file system had available at the check; MinFreeBytes
	// is the limit. Free < MinFreeBytes when the reserve was reached.
	Free, MinFreeBytes int64
}

// OverCap reports whether the build exceeded DiskLimit.MaxBytes (rather
// than the file system running low).
func (e *DiskError) OverCap() bool { return e.MaxBytes > 0 && e.Used > e.MaxBytes }

func (e *DiskError) Error() string {
	if e.OverCap() {
		return fmt.Sprintf("step %q stopped: the build holds %d bytes on disk, more than its limit of %d", e.Step, e.Used, e.MaxBytes)
	}
	return fmt.Sprintf("step %q stopped: the file system has %d bytes available, less than the reserve of %d", e.Step, e.Free, e.MinFreeBytes)
}
