package worker

import (
	"bytes"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// chunkSink is a logSender that records chunks; gen 0 means no session.
type chunkSink struct {
	mu     sync.Mutex
	gen    uint64
	chunks []*kilnv1.LogChunk
}

func (s *chunkSink) generation() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen, s.gen != 0
}

func (s *chunkSink) sendIn(gen uint64, m *kilnv1.SessionRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || gen == 0 {
		return errNoSession
	}
	c := m.GetLog()
	s.chunks = append(s.chunks, &kilnv1.LogChunk{AttemptId: c.GetAttemptId(), Offset: c.GetOffset(), Data: bytes.Clone(c.GetData())})
	return nil
}

// assembled checks chunks are contiguous from 0 and returns their bytes.
func (s *chunkSink) assembled(t *testing.T) []byte {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []byte
	for _, c := range s.chunks {
		if c.GetOffset() != uint64(len(out)) {
			t.Fatalf("chunk at %d after %d bytes", c.GetOffset(), len(out))
		}
		if len(c.GetData()) > logChunkMax || len(c.GetData()) == 0 {
			t.Fatalf("chunk of %d bytes", len(c.GetData()))
		}
		out = append(out, c.GetData()...)
	}
	return out
}

func TestLogStreamSendsBoundedContiguousChunks(t *testing.T) {
	sink := &chunkSink{gen: 1}
	l, err := createLog(filepath.Join(t.TempDir(), "log"), 1, sink, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for i := range 300 {
		line := []byte(strings.Repeat(string(rune('a'+i%26)), 999) + "\n")
		l.Write(line)
		want = append(want, line...)
	}
	size := l.close()
	if got := sink.assembled(t); !bytes.Equal(got, want) || size != int64(len(want)) {
		t.Fatalf("sent %d bytes, size %d, want %d", len(got), size, len(want))
	}
}

func TestLogStreamCapsTheLogWithOneNotice(t *testing.T) {
	sink := &chunkSink{gen: 1}
	l, err := createLog(filepath.Join(t.TempDir(), "log"), 1, sink, 100)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		l.Write([]byte(strings.Repeat("x", 30)))
	}
	l.close()
	got := string(sink.assembled(t))
	if !strings.HasPrefix(got, strings.Repeat("x", 100)+"\n[kiln] log truncated at 100 bytes") || strings.Count(got, "truncated") != 1 {
		t.Errorf("log = %q", got)
	}
}

func TestLogStreamResendsFromTheStartInANewSession(t *testing.T) {
	sink := &chunkSink{} // no session yet
	path := filepath.Join(t.TempDir(), "log")
	l, err := createLog(path, 1, sink, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	l.Write([]byte("before\n"))
	l.Flush()
	sink.mu.Lock()
	sink.gen = 1
	sink.mu.Unlock()
	l.Write([]byte("during\n"))
	l.Flush()
	sink.mu.Lock()
	sink.gen, sink.chunks = 2, nil // a new session knows nothing we sent
	sink.mu.Unlock()
	l.Write([]byte("after\n"))
	l.close()
	if got := string(sink.assembled(t)); got != "before\nduring\nafter\n" {
		t.Errorf("new session got %q", got)
	}

	// A log reopened after a restart is sent whole too.
	l.release()
	sink2 := &chunkSink{gen: 7}
	l2, err := openLog(path, 1, sink2, int64(len("before\nduring\nafter\n")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l2.flush(); err != nil {
		t.Fatal(err)
	}
	if got := string(sink2.assembled(t)); got != "before\nduring\nafter\n" {
		t.Errorf("reopened log sent %q", got)
	}
}
