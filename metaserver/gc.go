package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// defaultGCPercent is the collector's headroom, in percent of the live heap,
// when GOGC is not set: lower than Go's 100 because most of a large
// metaserver heap is idle build-server connections (issue 9: 10,000 of them
// at ≤ 40 KiB each), where headroom is memory paid per connection and GC
// work is rare.
const defaultGCPercent = 50

// gcRestAfter is how long the metaserver must allocate slowly (see
// gcTuner.busy) before it counts as at rest: the headroom floor is dropped
// and free memory returned to the OS once.
const gcRestAfter = 10 * time.Second

// gcCheckEvery is how often the tuner reads the allocation rate.
const gcCheckEvery = time.Second

// gcTuner keeps the collector's headroom at percent of the live heap and,
// while the metaserver is busy, never below minHeadroom bytes.
//
// A busy metaserver has a small live heap (tens of MiB) and allocates fast
// (bbolt nodes, protobufs, gRPC frames); a plain percentage would collect it
// many times a second, so there the floor bounds the collections per
// allocated byte. A metaserver holding many idle connections has a large
// live heap, where the percentage rules and the memory per connection stays
// low. A metaserver at rest allocates slowly, so the plain percentage costs
// no CPU worth saving, and the floor would only keep garbage resident: after
// gcRestAfter without a busy second the tuner drops the floor and returns
// free memory to the OS (debug.FreeOSMemory, once per quiet spell); the first
// busy second brings the floor back.
//
// A second is busy when the heap allocated during it exceeds the plain
// headroom (percent of the live heap, at least of heapMinimum), i.e. when
// the plain percentage would collect more than once a second.
//
// After each collection (seen through a finalizer on a sentinel object) it
// reads the live heap from runtime/metrics and sets GOGC to
// max(percent, minHeadroom/live) when busy, percent at rest. It stops when
// stopped or when GOGC=off.
type gcTuner struct {
	percent     int
	minHeadroom uint64
	stopped     atomic.Bool
	done        chan struct{}
	stopOnce    sync.Once
	// live is the live heap after the last collection.
	live atomic.Uint64
	// sample is read by the finalizer only, allocs by watch only.
	sample, allocs []metrics.Sample

	mu sync.Mutex // guards the fields below and orders calls of set
	// resting is true while the floor is dropped.
	resting bool
	// lastBusy is when the last busy second ended; lastAllocs the
	// cumulative heap allocations read then.
	lastBusy   time.Time
	lastCheck  time.Time
	lastAllocs uint64

	// set is debug.SetGCPercent and freeOS debug.FreeOSMemory; fields for
	// tests.
	set    func(int) int
	freeOS func()
}

// startGCTuner applies the policy from now on. percent comes from GOGC when
// it is set (GOGC=off disables the tuner), else defaultGCPercent;
// minHeadroom <= 0 disables the floor (plain percent, no rest detection).
func startGCTuner(minHeadroom int64) *gcTuner {
	percent := defaultGCPercent
	if os.Getenv("GOGC") != "" {
		percent = debug.SetGCPercent(-1)
		debug.SetGCPercent(percent)
	}
	t := newGCTuner(percent, uint64(max(minHeadroom, 0)), debug.SetGCPercent, debug.FreeOSMemory)
	if percent < 0 {
		return t // GOGC=off: the operator's choice
	}
	t.set(percent)
	if t.minHeadroom > 0 {
		t.arm()
		go t.watch(time.Now())
	}
	return t
}

// newGCTuner returns a tuner at rest (a fresh process has nothing to
// collect) that has not started.
func newGCTuner(percent int, minHeadroom uint64, set func(int) int, freeOS func()) *gcTuner {
	return &gcTuner{percent: percent, minHeadroom: minHeadroom, done: make(chan struct{}), resting: true,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}},
		allocs: []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}},
		set:    set, freeOS: freeOS}
}

// stop ends the tuning; the last setting stays.
func (t *gcTuner) stop() {
	t.stopped.Store(true)
	t.stopOnce.Do(func() { close(t.done) })
}

// arm registers a finalizer that runs after the next collection.
func (t *gcTuner) arm() {
	sentinel := new([16]byte)
	runtime.SetFinalizer(sentinel, func(*[16]byte) {
		if t.stopped.Load() {
			return
		}
		metrics.Read(t.sample)
		live := uint64(0)
		if t.sample[0].Value.Kind() == metrics.KindUint64 {
			live = t.sample[0].Value.Uint64()
		}
		t.live.Store(live)
		t.mu.Lock()
		t.set(t.percentFor(live, t.resting))
		t.mu.Unlock()
		t.arm()
	})
}

// watch reads the heap allocations every gcCheckEvery until stopped and
// feeds them to observe.
func (t *gcTuner) watch(start time.Time) {
	tick := time.NewTicker(gcCheckEvery)
	defer tick.Stop()
	t.mu.Lock()
	t.lastBusy, t.lastCheck, t.lastAllocs = start, start, t.readAllocs()
	t.mu.Unlock()
	for {
		select {
		case <-t.done:
			return
		case now := <-tick.C:
			t.observe(now, t.readAllocs(), t.live.Load())
		}
	}
}

func (t *gcTuner) readAllocs() uint64 {
	metrics.Read(t.allocs)
	if t.allocs[0].Value.Kind() == metrics.KindUint64 {
		return t.allocs[0].Value.Uint64()
	}
	return 0
}

// observe takes the cumulative heap allocations at now and the live heap,
// switches between busy and at rest, and applies the headroom on a switch.
// Entering rest returns free memory to the OS (after the new setting, so the
// collection it runs already uses the plain percent).
func (t *gcTuner) observe(now time.Time, allocs, live uint64) {
	t.mu.Lock()
	elapsed := now.Sub(t.lastCheck)
	busy := elapsed > 0 && t.busy(allocs-t.lastAllocs, elapsed, live)
	t.lastCheck, t.lastAllocs = now, allocs
	free := false
	switch {
	case t.stopped.Load():
	case busy:
		t.lastBusy = now
		if t.resting {
			t.resting = false
			t.set(t.percentFor(live, false))
		}
	case !t.resting && now.Sub(t.lastBusy) >= gcRestAfter:
		t.resting = true
		t.set(t.percentFor(live, true))
		free = true
	}
	t.mu.Unlock()
	if free {
		t.freeOS()
	}
}

// busy reports whether allocating allocated bytes in elapsed, with live
// bytes of live heap, is faster than one plain-percent headroom per second.
func (t *gcTuner) busy(allocated uint64, elapsed time.Duration, live uint64) bool {
	headroom := max(live, heapMinimum) * uint64(t.percent) / 100
	return float64(allocated) > float64(headroom)*elapsed.Seconds()
}

// heapMinimum is the runtime's least heap goal at GOGC=100; it scales with
// GOGC, so a large percent on a tiny heap would raise the goal far above
// live + minHeadroom.
const heapMinimum = 4 << 20

// percentFor returns the GOGC value giving live bytes of live heap a
// headroom of percent% of live, and while busy (not resting) at least
// minHeadroom. Heaps below the runtime's heap minimum count as that
// minimum, so the goal stays near minHeadroom + heapMinimum at most.
func (t *gcTuner) percentFor(live uint64, resting bool) int {
	p := t.percent
	if resting {
		return p
	}
	live = max(live, heapMinimum)
	if floor := t.minHeadroom * 100 / live; floor > uint64(p) {
		p = int(floor)
	}
	return p
}
