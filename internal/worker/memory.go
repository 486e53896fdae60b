package worker

import (
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// idleTrimDelay is how long the build server must have run no build before
// it returns its free memory to the operating system.
const idleTrimDelay = time.Second

// idleTrimmer returns the memory the last builds used to the operating
// system once the build server is idle. The Go runtime keeps freed heap for
// reuse and gives it back only slowly (a background scavenger), so after a
// few builds a resting build server kept about 4-6 MiB more resident than
// before its first one. A volunteer's machine should not pay for that while
// nothing is built. Two collections (sync.Pool contents, e.g. the gzip
// compressor, survive the first) and a scavenge cost about a millisecond of
// CPU with this heap, once per idle period, never between builds that
// follow each other within idleTrimDelay.
type idleTrimmer struct {
	delay time.Duration
	trim  func()

	mu     sync.Mutex
	timer  *time.Timer
	epoch  uint64 // counts busy() calls; a trim armed before the last one is void
	ran    int    // trims done, for tests
	active int    // builds running
}

func newIdleTrimmer(delay time.Duration) *idleTrimmer {
	return &idleTrimmer{delay: delay, trim: func() {
		runtime.GC()
		debug.FreeOSMemory()
	}}
}

// busy records that a build started.
func (t *idleTrimmer) busy() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.active++
	t.epoch++
	if t.timer != nil {
		t.timer.Stop()
	}
}

// idle records that a build ended; the last one to end arms the trim.
func (t *idleTrimmer) idle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.active--
	if t.active > 0 {
		return
	}
	epoch := t.epoch
	fire := func() {
		t.mu.Lock()
		if t.active > 0 || t.epoch != epoch {
			t.mu.Unlock()
			return
		}
		t.ran++
		t.mu.Unlock()
		t.trim()
	}
	if t.timer != nil {
		t.timer.Stop()
	}
	t.timer = time.AfterFunc(t.delay, fire)
}

// trims returns how many trims ran.
func (t *idleTrimmer) trims() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ran
}
