package server

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// logFiles stores build logs, one append-only file per attempt:
// DIR/<build id>-<attempt number>.log. A build's log is its latest
// attempt's. Appends are idempotent by offset, so a build server may resend
// after a reconnect.
//
// The sizes of running attempts' logs are kept in memory, so that neither an
// append nor a status view stats the file: an attempt dispatched by this
// process is registered empty (started), one restored from the store is
// stat'ed once and then cached.
type logFiles struct {
	dir string
	max int64

	mu    sync.Mutex
	sizes map[logKey]int64
	// files holds the open log files of attempts being written (at most
	// maxOpenLogs): a build's log comes in several chunks, and opening the
	// file anew for each costs the file system a lookup, or a create, per
	// chunk (slow while the store's commits fsync the same file system).
	// forget closes it.
	files map[logKey]*os.File
}

// maxOpenLogs bounds the log files kept open; beyond it a chunk's file is
// opened and closed around its write.
const maxOpenLogs = 256

// logKey names one attempt's log.
type logKey struct {
	build   uint64
	attempt int
}

func openLogFiles(dir string, max int64) (*logFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating log directory: %w", err)
	}
	return &logFiles{dir: dir, max: max, sizes: map[logKey]int64{}, files: map[logKey]*os.File{}}, nil
}

func (l *logFiles) path(buildID uint64, attempt int) string {
	return filepath.Join(l.dir, fmt.Sprintf("%d-%d.log", buildID, attempt))
}

const truncatedNote = "\n[kiln: log truncated at the metaserver's size limit]\n"

// append writes data found at offset of the attempt's log and returns the
// log's new size. Bytes already stored are skipped; a gap is an error.
func (l *logFiles) append(buildID uint64, attempt int, offset uint64, data []byte) (int64, error) {
	p := l.path(buildID, attempt)
	k := logKey{buildID, attempt}
	l.mu.Lock()
	defer l.mu.Unlock()
	size, ok := l.sizes[k]
	if !ok {
		if fi, err := os.Stat(p); err == nil {
			size = fi.Size()
		}
	}
	off := int64(offset)
	if off > size {
		return size, fmt.Errorf("log chunk at offset %d leaves a gap after %d bytes", off, size)
	}
	if skip := size - off; skip > 0 {
		if skip >= int64(len(data)) {
			return size, nil
		}
		data = data[skip:]
	}
	if size >= l.max {
		return size, nil
	}
	if room := l.max - size; int64(len(data)) > room {
		data = append(data[:room:room], truncatedNote...)
	}
	f := l.files[k]
	if f == nil {
		var err error
		if f, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			return size, err
		}
		// Kept open only for an attempt whose size is known here (running:
		// forget closes it), never for a chunk racing its attempt's end.
		if ok && len(l.files) < maxOpenLogs {
			l.files[k] = f
		} else {
			defer f.Close()
		}
	}
	n, err := f.Write(data)
	size += int64(n)
	l.sizes[k] = size
	return size, err
}

// read returns up to max bytes of the attempt's log from offset.
func (l *logFiles) read(buildID uint64, attempt int, offset uint64, max int) ([]byte, error) {
	f, err := os.Open(l.path(buildID, attempt))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, max)
	n, err := f.ReadAt(buf, int64(offset))
	if err == io.EOF {
		err = nil
	}
	return buf[:n], err
}

// started registers a newly dispatched attempt's log as empty. An attempt
// number is never reused within a build, and no build server can send log
// chunks for an attempt before its assignment is committed, so no file of
// that attempt exists yet.
func (l *logFiles) started(buildID uint64, attempt int) {
	l.mu.Lock()
	l.sizes[logKey{buildID, attempt}] = 0
	l.mu.Unlock()
}

// size returns the attempt's log size.
func (l *logFiles) size(buildID uint64, attempt int) int64 {
	k := logKey{buildID, attempt}
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sizes[k]; ok {
		return s
	}
	if fi, err := os.Stat(l.path(buildID, attempt)); err == nil {
		return fi.Size()
	}
	return 0
}

// forget drops the cached size of a finished attempt's log and returns the
// log's size.
func (l *logFiles) forget(buildID uint64, attempt int) int64 {
	size := l.size(buildID, attempt)
	k := logKey{buildID, attempt}
	l.mu.Lock()
	delete(l.sizes, k)
	f := l.files[k]
	delete(l.files, k)
	l.mu.Unlock()
	if f != nil {
		f.Close()
	}
	return size
}

// tail returns up to max bytes from the end of the attempt's log.
func (l *logFiles) tail(buildID uint64, attempt int, max int64) string {
	if attempt == 0 {
		return ""
	}
	size := l.size(buildID, attempt)
	off := max64(size-max, 0)
	data, err := l.read(buildID, attempt, uint64(off), int(size-off))
	if err != nil {
		return ""
	}
	return string(data)
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
