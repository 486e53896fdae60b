package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// defaultGCPercent is the collector's headroom, in percent of the live heap,
// when GOGC is not set: lower than Go's 100 because most of a large
// metaserver heap is idle build-server connections (issue 9: 10,000 of them
// at ≤ 40 KiB each), where headroom is memory paid per connection and GC
// work is rare.
const defaultGCPercent = 50

// gcTuner keeps the collector's headroom at percent of the live heap, but
// never below minHeadroom bytes. A busy metaserver has a small live heap
// (tens of MiB) and allocates fast (bbolt nodes, protobufs, gRPC frames);
// a plain percentage would collect it many times a second, so there the
// floor bounds the collections per allocated byte. A metaserver holding many
// idle connections has a large live heap, where the percentage rules and the
// memory per connection stays low.
//
// After each collection (seen through a finalizer on a sentinel object) it
// reads the live heap from runtime/metrics and sets GOGC to
// max(percent, minHeadroom/live). It stops when stopped or when GOGC=off.
type gcTuner struct {
	percent     int
	minHeadroom uint64
	stopped     atomic.Bool
	sample      []metrics.Sample
	// set is debug.SetGCPercent; a field for tests.
	set func(int) int
}

// startGCTuner applies the policy from now on. percent comes from GOGC when
// it is set (GOGC=off disables the tuner), else defaultGCPercent;
// minHeadroom <= 0 disables the floor (plain percent).
func startGCTuner(minHeadroom int64) *gcTuner {
	percent := defaultGCPercent
	if os.Getenv("GOGC") != "" {
		percent = debug.SetGCPercent(-1)
		debug.SetGCPercent(percent)
	}
	t := &gcTuner{percent: percent, minHeadroom: uint64(max(minHeadroom, 0)),
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}, set: debug.SetGCPercent}
	if percent < 0 {
		return t // GOGC=off: the operator's choice
	}
	t.set(percent)
	if t.minHeadroom > 0 {
		t.arm()
	}
	return t
}

// stop ends the tuning; the last setting stays.
func (t *gcTuner) stop() { t.stopped.Store(true) }

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
		t.set(t.percentFor(live))
		t.arm()
	})
}

// heapMinimum is the runtime's least heap goal at GOGC=100; it scales with
// GOGC, so a large percent on a tiny heap would raise the goal far above
// live + minHeadroom.
const heapMinimum = 4 << 20

// percentFor returns the GOGC value giving live bytes of live heap a
// headroom of max(percent% of live, minHeadroom). Heaps below the runtime's
// heap minimum count as that minimum, so the goal stays near
// minHeadroom + heapMinimum at most.
func (t *gcTuner) percentFor(live uint64) int {
	p := t.percent
	live = max(live, heapMinimum)
	if floor := t.minHeadroom * 100 / live; floor > uint64(p) {
		p = int(floor)
	}
	return p
}
