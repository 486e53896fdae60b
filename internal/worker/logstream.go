package worker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Build log streaming: output is written to the attempt's log file and sent
// to the metaserver as LogChunks of at most logChunkMax bytes, read back from
// the file so memory does not grow with the log. Output is sent once
// logChunkMax bytes are waiting, logFlushDelay after the first unsent byte,
// and at once at the end of each step.
const (
	logChunkMax   = kilnv1.MaxLogChunkBytes
	logFlushDelay = 50 * time.Millisecond
)

// logSender is the session a logStream sends through; *Client implements it.
type logSender interface {
	// generation returns the number of the current session and whether one
	// is established. Each new session has a new number.
	generation() (uint64, bool)
	// sendIn sends m on session gen, or returns errNoSession when gen is
	// no longer the current session.
	sendIn(gen uint64, m *kilnv1.SessionRequest) error
}

// logStream is one attempt's build log. Write may be called concurrently;
// what is written after the size cap is dropped, after one truncation notice.
// Within a session chunks are sent in order from offset 0, so after a
// reconnect the whole log is sent again and the metaserver keeps what it
// lacks.
type logStream struct {
	id  uint64
	out logSender
	max int64

	mu         sync.Mutex // guards the fields below
	f          *os.File   // nil: empty log (a result loaded from disk without log)
	size       int64
	unflushed  int64 // bytes written since the last flush began
	truncated  bool
	closed     bool
	writeErr   error
	timer      *time.Timer
	timerArmed bool

	flushMu sync.Mutex // serializes flushes; guards the fields below
	sent    int64      // bytes sent in session sentGen
	sentGen uint64
	buf     []byte
}

// createLog starts the log of attempt id in the file at path, created if
// missing. An existing file's content is overwritten from the start, and
// close cuts the file to the log's size: a recycled build directory's log
// file still holds an earlier build's log (see buildDirs.recycle), and
// cutting a file to zero before rewriting it costs far more on ext4, which
// then writes it back on close.
func createLog(path string, id uint64, out logSender, max int64) (*logStream, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, buildFileMode)
	if err != nil {
		return nil, fmt.Errorf("creating build log: %w", err)
	}
	return &logStream{id: id, out: out, max: max, f: f}, nil
}

// openLog opens the existing log at path of a finished attempt, to resend it;
// size is the log's size as its result says (the file may be longer, see
// createLog). A missing file yields an empty log.
func openLog(path string, id uint64, out logSender, size int64) (*logStream, error) {
	l := &logStream{id: id, out: out, closed: true}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening build log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening build log: %w", err)
	}
	l.f, l.size = f, min(st.Size(), size)
	return l, nil
}

// Write appends p to the log. It always reports len(p) so that a step's
// output pipe never fails; a disk error is kept for err.
func (l *logStream) Write(p []byte) (int, error) {
	l.mu.Lock()
	if l.closed || l.truncated || l.f == nil {
		l.mu.Unlock()
		return len(p), nil
	}
	data := p
	if room := l.max - l.size; int64(len(data)) > room {
		data = append(data[:room:room], fmt.Sprintf("\n[kiln] log truncated at %d bytes; further output is dropped\n", l.max)...)
		l.truncated = true
	}
	n, err := l.f.WriteAt(data, l.size)
	l.size += int64(n)
	l.unflushed += int64(n)
	if err != nil && l.writeErr == nil {
		l.writeErr = err
	}
	flushNow := l.unflushed >= logChunkMax
	if !flushNow && !l.timerArmed {
		l.timerArmed = true
		if l.timer == nil {
			l.timer = time.AfterFunc(logFlushDelay, l.timerFlush)
		} else {
			l.timer.Reset(logFlushDelay)
		}
	}
	l.mu.Unlock()
	if flushNow {
		l.flush()
	}
	return len(p), nil
}

// notef writes a line of the build server's own into the build log.
func (l *logStream) notef(format string, args ...any) {
	fmt.Fprintf(l, "[kiln] "+format+"\n", args...)
}

func (l *logStream) timerFlush() {
	l.mu.Lock()
	l.timerArmed = false
	l.mu.Unlock()
	l.flush()
}

// Flush sends everything written so far, if a session is up.
func (l *logStream) Flush() {
	l.mu.Lock()
	if l.timerArmed && l.timer.Stop() {
		l.timerArmed = false
	}
	l.mu.Unlock()
	l.flush()
}

// flush sends the unsent part of the log on the current session and returns
// that session's number; errNoSession (or a send error) when it could not.
func (l *logStream) flush() (uint64, error) {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.mu.Lock()
	size, f := l.size, l.f
	l.unflushed = 0
	l.mu.Unlock()
	gen, ok := l.out.generation()
	if !ok {
		return 0, errNoSession
	}
	if l.sentGen != gen {
		l.sent, l.sentGen = 0, gen
	}
	for l.sent < size {
		n := min(size-l.sent, logChunkMax)
		if int64(cap(l.buf)) < n {
			// Sized to need: most logs are a few hundred bytes.
			l.buf = make([]byte, n)
		}
		buf := l.buf[:n]
		if _, err := f.ReadAt(buf, l.sent); err != nil {
			return 0, fmt.Errorf("reading build log of attempt %d: %w", l.id, err)
		}
		// sendIn marshals before it returns, so buf may be reused.
		err := l.out.sendIn(gen, &kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Log{Log: &kilnv1.LogChunk{
			AttemptId: l.id, Offset: uint64(l.sent), Data: buf,
		}}})
		if err != nil {
			return 0, err
		}
		l.sent += n
	}
	return gen, nil
}

// close ends writing (later writes are dropped), tries a last flush and
// returns the log's total size. The file stays open for resending.
func (l *logStream) close() int64 {
	l.mu.Lock()
	wasClosed := l.closed
	l.closed = true
	if l.timer != nil {
		l.timer.Stop()
		l.timerArmed = false
	}
	if !wasClosed && l.f != nil {
		// What an earlier build left past this log's end (see createLog).
		if err := l.f.Truncate(l.size); err != nil && l.writeErr == nil {
			l.writeErr = err
		}
	}
	l.mu.Unlock()
	l.flush()
	// A resend after a reconnect allocates again; until then the buffer
	// would only sit in memory.
	l.flushMu.Lock()
	l.buf = nil
	l.flushMu.Unlock()
	return l.len()
}

// len returns the number of bytes in the log.
func (l *logStream) len() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size
}

// err returns the first error writing the log file, if any.
func (l *logStream) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writeErr
}

// release closes the log file once the attempt is forgotten.
func (l *logStream) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.f != nil {
		l.f.Close()
	}
}
