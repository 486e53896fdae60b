package server

import (
	"bytes"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
)

// testLogs opens logFiles in a temporary directory with a real store.
func testLogs(t *testing.T, max int64) (*logFiles, store.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "kiln.db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l, err := openLogFiles(filepath.Join(dir, "logs"), max, st)
	if err != nil {
		t.Fatal(err)
	}
	return l, st
}

// appendAll appends chunks in order from offset 0, failing the test on error.
func appendAll(t *testing.T, l *logFiles, build uint64, attempt int, chunks ...string) {
	t.Helper()
	var off uint64
	for _, c := range chunks {
		if _, err := l.append(build, attempt, off, []byte(c)); err != nil {
			t.Fatal(err)
		}
		off += uint64(len(c))
	}
}

// readAll reads the whole log through read, in pieces of at most 7 bytes.
func readAll(t *testing.T, l *logFiles, build uint64, attempt int) string {
	t.Helper()
	var out []byte
	for range 100000 {
		data, err := l.read(build, attempt, uint64(len(out)), 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 {
			return string(out)
		}
		out = append(out, data...)
	}
	t.Fatal("the log never ended")
	return ""
}

func openFiles(l *logFiles) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.files)
}

func TestASmallLogIsHeldInMemoryWhileItsAttemptRunsAndReadFromTheStoreOnceKept(t *testing.T) {
	l, st := testLogs(t, 1<<20)
	l.started(7, 1)
	if got := l.size(7, 1); got != 0 {
		t.Fatalf("size of a started attempt = %d, want 0", got)
	}
	appendAll(t, l, 7, 1, "hello ", "world")
	// A resent chunk is skipped, a gap refused.
	if size, err := l.append(7, 1, 0, []byte("hello ")); err != nil || size != 11 {
		t.Fatalf("resending the first chunk: size %d, %v; want 11, nil", size, err)
	}
	if _, err := l.append(7, 1, 20, []byte("x")); err == nil {
		t.Fatal("a chunk leaving a gap was accepted")
	}
	if _, err := os.Stat(l.path(7, 1)); !os.IsNotExist(err) {
		t.Fatalf("a small log reached a file (stat: %v)", err)
	}
	if got := readAll(t, l, 7, 1); got != "hello world" {
		t.Fatalf("running log reads %q", got)
	}

	size, inline := l.forget(7, 1)
	if size != 11 || string(inline) != "hello world" {
		t.Fatalf("forget = %d, %q; want 11 and the log's bytes", size, inline)
	}
	// Until the store holds it, reads and the size still find it.
	if got := readAll(t, l, 7, 1); got != "hello world" {
		t.Fatalf("ending log reads %q", got)
	}
	if got := l.tail(7, 1, 5); got != "world" {
		t.Fatalf("tail = %q, want %q", got, "world")
	}
	if err := st.Update(func(tx store.Tx) error { return tx.PutLog(7, 1, inline) }); err != nil {
		t.Fatal(err)
	}
	l.kept(7, 1)
	if got := readAll(t, l, 7, 1); got != "hello world" {
		t.Fatalf("kept log reads %q from the store", got)
	}
	// A chunk that raced the attempt's end does not shadow the kept log.
	if _, err := l.append(7, 1, 0, []byte("late")); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, l, 7, 1); got != "hello world" {
		t.Fatalf("after a late chunk the log reads %q", got)
	}
	if n := openFiles(l); n != 0 {
		t.Fatalf("%d log files open after a late chunk; want none", n)
	}
}

func TestALogThatOutgrowsMemoryMovesToItsFileWholeAndInOrder(t *testing.T) {
	l, _ := testLogs(t, 1<<20)
	l.started(9, 2)
	first := strings.Repeat("a", inlineLogMax-10)
	second := strings.Repeat("b", 100)
	third := "end\n"
	appendAll(t, l, 9, 2, first, second, third)
	want := first + second + third
	data, err := os.ReadFile(l.path(9, 2))
	if err != nil || string(data) != want {
		t.Fatalf("log file: %d bytes, %v; want the %d bytes in order", len(data), err, len(want))
	}
	if n := openFiles(l); n != 1 {
		t.Fatalf("%d log files open while the attempt runs; want its one", n)
	}
	if got := l.size(9, 2); got != int64(len(want)) {
		t.Fatalf("size = %d, want %d", got, len(want))
	}
	size, inline := l.forget(9, 2)
	if size != int64(len(want)) || inline != nil {
		t.Fatalf("forget = %d, %d inline bytes; want %d and none (the file holds it)", size, len(inline), len(want))
	}
	if n := openFiles(l); n != 0 {
		t.Fatalf("%d log files open after the attempt ended; want none", n)
	}
	if got := readAll(t, l, 9, 2); got != want {
		t.Fatalf("the file's log reads %d bytes, want %d", len(got), len(want))
	}
}

func TestTheLogCapTruncatesAMemoryLogThatSpillsWithANote(t *testing.T) {
	const max = inlineLogMax + 100
	l, _ := testLogs(t, max)
	l.started(4, 1)
	appendAll(t, l, 4, 1, strings.Repeat("x", inlineLogMax), strings.Repeat("y", 500))
	got := readAll(t, l, 4, 1)
	if !strings.HasPrefix(got, strings.Repeat("x", inlineLogMax)+strings.Repeat("y", 100)) || !strings.HasSuffix(got, truncatedNote) {
		t.Fatalf("capped log: %d bytes ending %q", len(got), got[max64(0, int64(len(got))-60):])
	}
}

func TestALogWrittenByAnEarlierProcessIsMeasuredFromItsFile(t *testing.T) {
	dir := t.TempDir()
	l, err := openLogFiles(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Not started by this process (restored after a restart): a file.
	if _, err := l.append(3, 2, 0, []byte("before restart\n")); err != nil {
		t.Fatal(err)
	}
	restarted, err := openLogFiles(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := restarted.size(3, 2); got != 15 {
		t.Fatalf("size after a restart = %d, want 15", got)
	}
	size, err := restarted.append(3, 2, 15, []byte("after\n"))
	if err != nil || size != 21 {
		t.Fatalf("append after a restart = %d, %v; want 21, nil", size, err)
	}
	if data, _ := os.ReadFile(restarted.path(3, 2)); !bytes.Equal(data, []byte("before restart\nafter\n")) {
		t.Fatalf("file holds %q", data)
	}
}

func TestLogsHeldInMemoryTogetherStayWithinTheirBoundAndTheRestGoToFiles(t *testing.T) {
	l, _ := testLogs(t, 1<<20)
	chunk := strings.Repeat("z", inlineLogMax)
	n := int(memLogsMax/inlineLogMax) + 3
	for i := 1; i <= n; i++ {
		l.started(uint64(i), 1)
		appendAll(t, l, uint64(i), 1, chunk)
	}
	l.mu.Lock()
	held, inMem := l.memBytes, len(l.mem)
	l.mu.Unlock()
	if held > memLogsMax || inMem != int(memLogsMax/inlineLogMax) {
		t.Fatalf("%d bytes in memory for %d logs; want at most %d, for %d logs", held, inMem, memLogsMax, memLogsMax/inlineLogMax)
	}
	if data, err := os.ReadFile(l.path(uint64(n), 1)); err != nil || len(data) != inlineLogMax {
		t.Fatalf("a log beyond the bound: file %d bytes, %v; want its %d bytes in its file", len(data), err, inlineLogMax)
	}
	// Ending and storing a log gives its memory back.
	_, inline := l.forget(1, 1)
	l.kept(1, 1)
	l.mu.Lock()
	held = l.memBytes
	l.mu.Unlock()
	if len(inline) != inlineLogMax || held != memLogsMax-inlineLogMax {
		t.Fatalf("after one log was stored: %d bytes held; want %d", held, memLogsMax-inlineLogMax)
	}
}

func TestTheTailOfALogKeptInTheStoreIsReadFromTheStore(t *testing.T) {
	l, st := testLogs(t, 1<<20)
	l.started(5, 1)
	appendAll(t, l, 5, 1, "line one\n", "line two\n")
	_, inline := l.forget(5, 1)
	if err := st.Update(func(tx store.Tx) error { return tx.PutLog(5, 1, inline) }); err != nil {
		t.Fatal(err)
	}
	l.kept(5, 1)
	if got := l.tail(5, 1, 9); got != "line two\n" {
		t.Fatalf("tail of a kept log = %q, want %q", got, "line two\n")
	}
}

func TestLogsOfRunningAttemptsAreSavedToFilesAtAStopAndMeasuredByTheNextProcess(t *testing.T) {
	l, st := testLogs(t, 1<<20)
	l.started(6, 1)
	appendAll(t, l, 6, 1, "compiling\n")
	if err := l.saveRunning(); err != nil {
		t.Fatal(err)
	}
	next, err := openLogFiles(l.dir, 1<<20, st)
	if err != nil {
		t.Fatal(err)
	}
	if got := next.size(6, 1); got != int64(len("compiling\n")) {
		t.Fatalf("the next process measures %d bytes; want %d", got, len("compiling\n"))
	}
	// The build server's resend from offset 0 is skipped, the rest appended.
	if size, err := next.append(6, 1, 0, []byte("compiling\nlinking\n")); err != nil || size != int64(len("compiling\nlinking\n")) {
		t.Fatalf("resend after the restart: %d, %v", size, err)
	}
	if got := readAll(t, next, 6, 1); got != "compiling\nlinking\n" {
		t.Fatalf("log after the restart reads %q", got)
	}
}

func TestAnEndedAttemptsSmallLogIsCommittedWithTheRecordThatEndsIt(t *testing.T) {
	ts := startTestServer(t, Config{MaxInfraAttempts: 5}, queuedBuild(1, "hello", 60))
	ss := ts.connect("bs", nil)
	attempt := ss.assignment().GetAttemptId()
	if err := ss.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Log{Log: &kilnv1.LogChunk{
		AttemptId: attempt, Offset: 0, Data: []byte("fetching\nsetup failed\n")}}}); err != nil {
		t.Fatal(err)
	}
	// An infrastructure failure queues the build again (putBuild).
	ss.report(&kilnv1.AttemptResult{AttemptId: attempt, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, Reason: "disk full", LogSize: 22})

	err := ts.st.View(func(tx store.Tx) error {
		rec, err := tx.Build(1)
		if err != nil {
			return err
		}
		if a := rec.GetBuild().GetAttempts(); len(a) != 1 || a[0].GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED {
			t.Errorf("stored attempts %v; want the one that failed setup", a)
		}
		log, err := tx.Log(1, attemptNumber(attempt))
		if err != nil || string(log) != "fetching\nsetup failed\n" {
			t.Errorf("stored log %q, %v; want the attempt's log", log, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ts.srv.mu.Lock()
	pending := len(ts.srv.active[1].endedLogs)
	ts.srv.mu.Unlock()
	if pending != 0 {
		t.Fatalf("%d ended logs still wait for a commit", pending)
	}
}
