package backoff

import (
	"testing"
	"time"
)

func TestExponentialDoublesUpToMax(t *testing.T) {
	e := Exponential{Base: 200 * time.Millisecond, Max: 10 * time.Second}
	want := []time.Duration{200 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, 1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond,
		10 * time.Second, 10 * time.Second}
	for i, w := range want {
		if got := e.Delay(i); got != w {
			t.Errorf("Delay(%d) = %s, want %s", i, got, w)
		}
	}
	for _, n := range []int{62, 63, 64, 1000, 1 << 40} {
		if got := e.Delay(n); got != e.Max {
			t.Errorf("Delay(%d) = %s, want Max %s (no overflow)", n, got, e.Max)
		}
	}
}

func TestExponentialJitterStaysInItsRange(t *testing.T) {
	e := Exponential{Base: time.Second, Max: 5 * time.Minute, Low: 0.8, High: 1.2, Min: time.Second}
	seen := map[time.Duration]bool{}
	for n := 1; n <= 30; n++ {
		base := min(time.Second<<min(n-1, 20), 5*time.Minute)
		lo := max(time.Duration(float64(base)*0.8), time.Second)
		hi := min(time.Duration(float64(base)*1.2), 5*time.Minute)
		for range 50 {
			d := e.Delay(n)
			if d < lo || d > hi {
				t.Fatalf("Delay(%d) = %s, want within [%s, %s]", n, d, lo, hi)
			}
			seen[d] = true
		}
	}
	if len(seen) < 100 {
		t.Fatalf("only %d distinct delays in 1500 draws: jitter is not applied", len(seen))
	}
}

func TestZeroValueGivesNoDelay(t *testing.T) {
	if d := (Exponential{}).Delay(3); d != 0 {
		t.Fatalf("zero Exponential: Delay = %s, want 0", d)
	}
}
