package main

import (
	"runtime"
	"slices"
	"testing"
	"time"
)

func TestTheGCHeadroomIsAPercentOfTheLiveHeapButNeverBelowTheFloor(t *testing.T) {
	tu := newGCTuner(50, 64<<20, nil, nil)
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
			if got := tu.percentFor(c.live, false); got != c.want {
				t.Fatalf("busy: percentFor(%d) = %d, want %d", c.live, got, c.want)
			}
			if got := tu.percentFor(c.live, true); got != 50 {
				t.Fatalf("at rest: percentFor(%d) = %d, want the plain 50", c.live, got)
			}
		})
	}
	plain := newGCTuner(50, 0, nil, nil)
	if got := plain.percentFor(1<<20, false); got != 50 {
		t.Fatalf("without a floor: percentFor = %d, want 50", got)
	}
}

func TestTheGCTunerAdjustsAfterEveryCollectionUntilStopped(t *testing.T) {
	calls := make(chan int, 100)
	tu := newGCTuner(50, 1<<30, func(p int) int { calls <- p; return 0 }, nil)
	tu.mu.Lock()
	tu.resting = false
	tu.mu.Unlock()
	tu.arm()
	deadline := time.Now().Add(10 * time.Second)
	for seen := 0; seen < 2; {
		runtime.GC()
		select {
		case p := <-calls:
			if p <= 50 {
				t.Fatalf("set GOGC=%d while busy, want the 1 GiB floor above the percent 50", p)
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

// quietTuner is a tuner whose last check and busy second were at t0, with
// the settings and returns to the OS it makes recorded.
func quietTuner(t0 time.Time) (tu *gcTuner, sets *[]int, frees *int) {
	sets, frees = new([]int), new(int)
	tu = newGCTuner(50, 64<<20, func(p int) int { *sets = append(*sets, p); return 0 }, func() { *frees++ })
	tu.lastBusy, tu.lastCheck = t0, t0
	return tu, sets, frees
}

func TestTheFloorAppliesFromTheFirstBusySecondAndIsDroppedAfterAQuietSpellWithOneReturnToTheOS(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tu, sets, frees := quietTuner(t0)
	live := uint64(16 << 20) // plain headroom 8 MiB: busy above 8 MiB a second
	allocs := uint64(0)
	second := func(i int, allocated uint64) {
		allocs += allocated
		tu.observe(t0.Add(time.Duration(i)*time.Second), allocs, live)
	}

	second(1, 1<<20) // a fresh tuner rests; a slow second changes nothing
	if len(*sets) != 0 || *frees != 0 {
		t.Fatalf("a slow second at rest: sets %v, frees %d, want none", *sets, *frees)
	}
	second(2, 100<<20)
	if want := []int{400}; !slices.Equal(*sets, want) || tu.resting {
		t.Fatalf("a busy second: sets %v, want %v (64 MiB over 16 MiB live), resting %v", *sets, want, tu.resting)
	}
	for i := 3; i < 12; i++ {
		second(i, 1<<20)
	}
	if len(*sets) != 1 || *frees != 0 {
		t.Fatalf("9 quiet seconds: sets %v, frees %d; want the floor kept and nothing returned", *sets, *frees)
	}
	second(12, 1<<20)
	if want := []int{400, 50}; !slices.Equal(*sets, want) || *frees != 1 || !tu.resting {
		t.Fatalf("10 quiet seconds: sets %v, want %v; frees %d, want 1; resting %v", *sets, want, *frees, tu.resting)
	}
	for i := 13; i < 40; i++ {
		second(i, 1<<20)
	}
	if len(*sets) != 2 || *frees != 1 {
		t.Fatalf("a longer rest: sets %v, frees %d; want no more settings or returns", *sets, *frees)
	}
	second(40, 9<<20)
	if want := []int{400, 50, 400}; !slices.Equal(*sets, want) || tu.resting {
		t.Fatalf("busy again: sets %v, want %v, resting %v", *sets, want, tu.resting)
	}
}

func TestAllocatingLessThanThePlainHeadroomPerSecondIsNotBusy(t *testing.T) {
	tu := newGCTuner(50, 64<<20, nil, nil)
	for _, c := range []struct {
		name      string
		allocated uint64
		elapsed   time.Duration
		live      uint64
		want      bool
	}{
		{"heartbeats of a large idle heap", 20 << 20, time.Second, 200 << 20, false},
		{"a build burst on a small heap", 50 << 20, time.Second, 16 << 20, true},
		{"a tiny heap counts as the runtime minimum", 1 << 20, time.Second, 1 << 10, false},
		{"the rate is per second", 12 << 20, 2 * time.Second, 16 << 20, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := tu.busy(c.allocated, c.elapsed, c.live); got != c.want {
				t.Fatalf("busy(%d, %s, %d) = %v, want %v", c.allocated, c.elapsed, c.live, got, c.want)
			}
		})
	}
}
