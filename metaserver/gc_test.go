package main

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestTheGCHeadroomIsAPercentOfTheLiveHeapButNeverBelowTheFloor(t *testing.T) {
	tu := &gcTuner{percent: 50, minHeadroom: 64 << 20}
	for _, c := range []struct {
		name string
		live uint64
		want int
	}{
		{"a small heap gets the floor", 32 << 20, 200},
		{"a heap where the floor equals the percent", 128 << 20, 50},
		{"a large heap gets the percent", 1 << 30, 50},
		{"a heap below the runtime's minimum counts as the minimum", 1 << 10, 1600},
		{"an unknown heap counts as the minimum", 0, 1600},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := tu.percentFor(c.live); got != c.want {
				t.Fatalf("percentFor(%d) = %d, want %d", c.live, got, c.want)
			}
		})
	}
	plain := &gcTuner{percent: 50}
	if got := plain.percentFor(1 << 20); got != 50 {
		t.Fatalf("without a floor: percentFor = %d, want 50", got)
	}
}

func TestTheGCTunerAdjustsAfterEveryCollectionUntilStopped(t *testing.T) {
	calls := make(chan int, 100)
	tu := &gcTuner{percent: 50, minHeadroom: 1 << 30, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}},
		set: func(p int) int { calls <- p; return 0 }}
	tu.arm()
	deadline := time.Now().Add(10 * time.Second)
	for seen := 0; seen < 2; {
		runtime.GC()
		select {
		case p := <-calls:
			if p < 50 {
				t.Fatalf("set GOGC=%d, below the percent 50", p)
			}
			seen++
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tuner ran %d times in 10 s of collections, want 2", seen)
		}
	}
	tu.stop()
}
