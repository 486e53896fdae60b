package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/kilnbuild/kiln/internal/store"
)

// logFiles stores build logs, one per attempt; a build's log is its latest
// attempt's. Appends are idempotent by offset, so a build server may resend
// after a reconnect (it resends a running attempt's whole log).
//
// Where a log lives:
//
//   - While its attempt runs, a log of at most inlineLogMax bytes is held in
//     memory. When its attempt ends, the whole log is written to the store
//     in the transaction ahead of (or with) the attempt's end (see
//     Server.keepLogLocked): one put instead of a file created per attempt,
//     which on ext4 costs a journal handle that contends with the store's
//     fsyncs (about a quarter of the metaserver's CPU in the throughput
//     benchmark). A crash before that loses nothing acknowledged: the
//     attempt is still running for the store, and its build server resends
//     the log after reconnecting.
//   - A larger log goes to an append-only file, DIR/<build id>-<attempt
//     number>.log, from the moment it outgrows memory (what memory held
//     first). So does the log of an attempt restored from the store after
//     a restart.
//
// Reads look in memory, then the store, then the file. The sizes of running
// attempts' logs are kept in memory, so that neither an append nor a status
// view stats the file: an attempt dispatched by this process is registered
// empty (started), one restored from the store is stat'ed once and then
// cached.
type logFiles struct {
	dir string
	max int64
	st  store.Store

	mu    sync.Mutex
	sizes map[logKey]int64
	// mem holds the logs of running attempts still small enough.
	mem map[logKey][]byte
	// ending holds logs taken from mem when their attempt ended, until the
	// transaction writing them to the store has committed (stored).
	ending map[logKey][]byte
	// memBytes counts the bytes in mem and ending, at most memLogsMax.
	memBytes int64
	// files holds the open log files of attempts being written (at most
	// maxOpenLogs): a log comes in many chunks, and opening the file anew
	// for each costs a lookup per chunk. forget closes it.
	files map[logKey]*os.File
}

// inlineLogMax is the largest log kept in memory and then in the store.
const inlineLogMax = 64 << 10

// memLogsMax bounds the memory all logs held in memory take together (a
// thousand running attempts with full small logs); beyond it a log moves
// to its file.
const memLogsMax = 64 << 20

// maxOpenLogs bounds the log files kept open; beyond it a chunk's file is
// opened and closed around its write.
const maxOpenLogs = 256

// logKey names one attempt's log.
type logKey struct {
	build   uint64
	attempt int
}

func openLogFiles(dir string, max int64, st store.Store) (*logFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating log directory: %w", err)
	}
	return &logFiles{dir: dir, max: max, st: st, sizes: map[logKey]int64{},
		mem: map[logKey][]byte{}, ending: map[logKey][]byte{}, files: map[logKey]*os.File{}}, nil
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
	base := size // the log's bytes before data
	buf, inMem := l.mem[k]
	if inMem {
		if size+int64(len(data)) <= inlineLogMax && l.memBytes+int64(len(data)) <= memLogsMax {
			l.mem[k] = append(buf, data...)
			l.memBytes += int64(len(data))
			size += int64(len(data))
			l.sizes[k] = size
			return size, nil
		}
		// Outgrown: the file starts with what memory held, which memory
		// keeps until the file has it.
		data = append(buf[:len(buf):len(buf)], data...)
		base -= int64(len(buf))
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
	if inMem {
		l.memBytes -= int64(len(buf))
		delete(l.mem, k)
	}
	size = base + int64(n)
	l.sizes[k] = size
	return size, err
}

// read returns up to max bytes of the attempt's log from offset.
func (l *logFiles) read(buildID uint64, attempt int, offset uint64, max int) ([]byte, error) {
	k := logKey{buildID, attempt}
	l.mu.Lock()
	buf, ok := l.mem[k]
	if !ok {
		buf, ok = l.ending[k]
	}
	if ok {
		defer l.mu.Unlock()
		return window(buf, offset, max), nil
	}
	l.mu.Unlock()
	if data, ok, err := l.stored(buildID, attempt); err != nil {
		return nil, err
	} else if ok {
		return window(data, offset, max), nil
	}
	f, err := os.Open(l.path(buildID, attempt))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := make([]byte, max)
	n, err := f.ReadAt(out, int64(offset))
	if err == io.EOF {
		err = nil
	}
	return out[:n], err
}

// stored returns the attempt's log when the store holds it.
func (l *logFiles) stored(buildID uint64, attempt int) (data []byte, ok bool, err error) {
	if l.st == nil {
		return nil, false, nil
	}
	err = l.st.View(func(tx store.Tx) error {
		var err error
		data, err = tx.Log(buildID, attempt)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	return data, err == nil, err
}

// window returns a copy of at most max bytes of data from offset.
func window(data []byte, offset uint64, max int) []byte {
	if offset >= uint64(len(data)) {
		return nil
	}
	data = data[offset:]
	return append([]byte(nil), data[:min(len(data), max)]...)
}

// started registers a newly dispatched attempt's log as empty, in memory.
// An attempt number is never reused within a build, and no build server can
// send log chunks for an attempt before its assignment is committed, so no
// log of that attempt exists yet.
func (l *logFiles) started(buildID uint64, attempt int) {
	k := logKey{buildID, attempt}
	l.mu.Lock()
	l.sizes[k] = 0
	l.mem[k] = []byte{}
	l.mu.Unlock()
}

// size returns the attempt's log size (0 for a log kept in the store: see
// tail).
func (l *logFiles) size(buildID uint64, attempt int) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sizeLocked(logKey{buildID, attempt})
}

func (l *logFiles) sizeLocked(k logKey) int64 {
	if s, ok := l.sizes[k]; ok {
		return s
	}
	if buf, ok := l.ending[k]; ok {
		return int64(len(buf))
	}
	if fi, err := os.Stat(l.path(k.build, k.attempt)); err == nil {
		return fi.Size()
	}
	return 0
}

// forget ends an attempt's log: it drops its cached size, closes its file
// and returns the log's size and, when the log is held in memory, its
// bytes, which the caller must write to the store and then report kept.
// Until then reads still find them.
func (l *logFiles) forget(buildID uint64, attempt int) (size int64, inline []byte) {
	k := logKey{buildID, attempt}
	l.mu.Lock()
	size = l.sizeLocked(k)
	delete(l.sizes, k)
	if buf, ok := l.mem[k]; ok {
		delete(l.mem, k)
		l.ending[k] = buf
		inline = buf
	}
	f := l.files[k]
	delete(l.files, k)
	l.mu.Unlock()
	if f != nil {
		f.Close()
	}
	return size, inline
}

// kept drops a log that forget returned once the store holds it.
func (l *logFiles) kept(buildID uint64, attempt int) {
	k := logKey{buildID, attempt}
	l.mu.Lock()
	l.memBytes -= int64(len(l.ending[k]))
	delete(l.ending, k)
	l.mu.Unlock()
}

// tail returns up to max bytes from the end of the attempt's log.
func (l *logFiles) tail(buildID uint64, attempt int, max int64) string {
	if attempt == 0 {
		return ""
	}
	size := l.size(buildID, attempt)
	if size == 0 {
		if data, ok, _ := l.stored(buildID, attempt); ok {
			return string(data[max64(int64(len(data))-max, 0):])
		}
	}
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

// saveRunning writes the logs held in memory of attempts still running to
// their files (the metaserver stops): the next process measures a restored
// attempt's log from its file, and its build server resends only what is
// missing. A log already ended is in the store by then (the committer has
// drained).
func (l *logFiles) saveRunning() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first error
	for k, buf := range l.mem {
		if err := os.WriteFile(l.path(k.build, k.attempt), buf, 0o600); err != nil && first == nil {
			first = err
		}
	}
	return first
}
