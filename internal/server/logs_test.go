package server

import (
	"os"
	"testing"
)

func TestAStartedAttemptsLogIsEmptyAndGrowsWithAppendsWithoutTouchingTheDisk(t *testing.T) {
	l, err := openLogFiles(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	l.started(7, 1)
	if got := l.size(7, 1); got != 0 {
		t.Fatalf("size of a started attempt = %d, want 0", got)
	}
	if _, err := os.Stat(l.path(7, 1)); !os.IsNotExist(err) {
		t.Fatalf("starting an attempt created its log file (stat: %v)", err)
	}
	if _, err := l.append(7, 1, 0, []byte("hello ")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.append(7, 1, 6, []byte("world")); err != nil {
		t.Fatal(err)
	}
	if got := l.size(7, 1); got != 11 {
		t.Fatalf("size after appends = %d, want 11", got)
	}
	if got := l.forget(7, 1); got != 11 {
		t.Fatalf("forget returned %d, want the final size 11", got)
	}
	if got := l.size(7, 1); got != 11 {
		t.Fatalf("size of a forgotten attempt, read from its file = %d, want 11", got)
	}
}

func TestALogWrittenByAnEarlierProcessIsMeasuredFromItsFile(t *testing.T) {
	dir := t.TempDir()
	l, err := openLogFiles(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.append(3, 2, 0, []byte("before restart\n")); err != nil {
		t.Fatal(err)
	}
	restarted, err := openLogFiles(dir, 1<<20)
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
}

func TestARunningAttemptsLogFileStaysOpenUntilForgottenAndALateChunkLeavesNothingOpen(t *testing.T) {
	l, err := openLogFiles(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	open := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.files)
	}
	l.started(7, 1)
	var off uint64
	for _, chunk := range []string{"one ", "two ", "three"} {
		if _, err := l.append(7, 1, off, []byte(chunk)); err != nil {
			t.Fatal(err)
		}
		off += uint64(len(chunk))
	}
	if n := open(); n != 1 {
		t.Fatalf("%d log files open while the attempt runs; want its one", n)
	}
	if got := l.forget(7, 1); got != int64(len("one two three")) {
		t.Fatalf("forget returned size %d; want %d", got, len("one two three"))
	}
	if n := open(); n != 0 {
		t.Fatalf("%d log files open after the attempt ended; want none", n)
	}
	data, err := os.ReadFile(l.path(7, 1))
	if err != nil || string(data) != "one two three" {
		t.Fatalf("log file %q, %v; want the three chunks", data, err)
	}

	// A chunk that raced its attempt's end is still stored, and its file
	// is not kept open (nothing would close it).
	if _, err := l.append(7, 1, uint64(len(data)), []byte(" late")); err != nil {
		t.Fatal(err)
	}
	if n := open(); n != 0 {
		t.Fatalf("%d log files open after a late chunk; want none", n)
	}
}
