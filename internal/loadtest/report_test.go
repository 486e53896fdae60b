package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	tests := []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"an empty set has a zero percentile", nil, 50, 0},
		{"the median of an odd set is its middle", ms(5, 1, 3), 50, 3 * time.Millisecond},
		{"the median of an even set is the lower middle (nearest rank)", ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{"p100 is the maximum", ms(7, 9, 1), 100, 9 * time.Millisecond},
		{"p99 of 100 values is the 99th smallest", ms(seq(100)...), 99, 99 * time.Millisecond},
		{"p0 is the minimum", ms(7, 9, 1), 0, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.in, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.in, tt.p, got, tt.want)
			}
		})
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i + 1
	}
	return s
}

func TestFigureVerdict(t *testing.T) {
	tests := []struct {
		name string
		f    figure
		met  bool
		show string
	}{
		{"a latency under its ceiling is met", figure{Value: 5, Unit: "ms", Target: 10, AtMost: true}, true, "≤ 10.0 ms  MET"},
		{"a latency over its ceiling is missed", figure{Value: 12, Unit: "ms", Target: 10, AtMost: true}, false, "MISSED"},
		{"a rate over its floor is met", figure{Value: 200, Unit: "/s", Target: 150}, true, "≥ 150 /s  MET"},
		{"a rate under its floor is missed", figure{Value: 100, Unit: "/s", Target: 150}, false, "MISSED"},
		{"a figure without target is always met", figure{Value: 1e9, Unit: "ms", NoTarget: true}, true, "1000000000 ms"},
		{"a ratio shows its bound in MB/s", figure{Value: 80, Unit: "%", Target: 70, Bound: 500, BoundName: "disk"}, true, "(bound: disk 500 MB/s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.met(); got != tt.met {
				t.Errorf("met() = %v, want %v", got, tt.met)
			}
			if s := formatFigure(tt.f); !strings.Contains(s, tt.show) {
				t.Errorf("formatFigure = %q, want it to contain %q", s, tt.show)
			}
		})
	}
}

func TestTrackerCompletionBeforeOrAfterWait(t *testing.T) {
	tr := newTracker()
	tr.finish(1) // completed before the submitter asked
	select {
	case <-tr.wait(1):
	default:
		t.Fatal("a build finished before wait must be reported at once")
	}
	ch := tr.wait(2)
	select {
	case <-ch:
		t.Fatal("a build not finished must not be reported")
	default:
	}
	tr.finish(2)
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("finish did not wake the waiter")
	}
	if got := tr.count.Load(); got != 2 {
		t.Errorf("count = %d, want 2", got)
	}
}

func TestReadProcOfThisProcess(t *testing.T) {
	m, err := readMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.Anon <= 0 || m.HWM < m.RSS {
		t.Errorf("implausible memory of this process: %+v", m)
	}
	// Burn a little CPU so that the reading cannot be all zero.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	own, children, err := readCPUs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if own <= 0 || children < 0 {
		t.Errorf("readCPUs = %v, %v; want own > 0", own, children)
	}
	a, err := readMachineCPU()
	if err != nil {
		t.Fatal(err)
	}
	if a.busy <= 0 || a.total < a.busy {
		t.Errorf("implausible machine CPU %+v", a)
	}
}
