package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// figure is one measured value set against its target.
type figure struct {
	Scenario string
	Name     string
	// Value is the measurement in Unit; Target the bound it must respect,
	// AtMost telling which side (true: Value ≤ Target).
	Value  float64
	Unit   string
	Target float64
	AtMost bool
	// Bound, when non-zero, is the machine's own limit measured in the same
	// run (BoundName says what it is); Ratio is Value/Bound.
	Bound     float64
	BoundName string
	// Note is a free-form remark printed under the figure.
	Note string
	// NoTarget marks an informative figure without a target.
	NoTarget bool
}

// met reports whether the figure reaches its target.
func (f figure) met() bool {
	if f.NoTarget {
		return true
	}
	if f.AtMost {
		return f.Value <= f.Target
	}
	return f.Value >= f.Target
}

// reporter prints figures as they are measured, each with the command that
// produced it, and a summary at the end.
type reporter struct {
	mu      sync.Mutex
	out     io.Writer
	command string
	figures []figure
}

func newReporter(command string) *reporter {
	return &reporter{out: os.Stdout, command: command}
}

// logf prints a progress line (prefixed, on stderr so stdout stays figures).
func (r *reporter) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s loadtest: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// add records and prints one figure.
func (r *reporter) add(f figure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.figures = append(r.figures, f)
	fmt.Fprintln(r.out, formatFigure(f))
	fmt.Fprintf(r.out, "    command: %s\n", r.command)
	if f.Note != "" {
		for _, l := range strings.Split(f.Note, "\n") {
			fmt.Fprintf(r.out, "    %s\n", l)
		}
	}
}

func formatFigure(f figure) string {
	var b strings.Builder
	fmt.Fprintf(&b, "FIGURE %-10s %-34s %s", f.Scenario, f.Name, formatValue(f.Value, f.Unit))
	if !f.NoTarget {
		op := "≥"
		if f.AtMost {
			op = "≤"
		}
		verdict := "MET"
		if !f.met() {
			verdict = "MISSED"
		}
		fmt.Fprintf(&b, "  target %s %s  %s", op, formatValue(f.Target, f.Unit), verdict)
	}
	if f.Bound > 0 {
		fmt.Fprintf(&b, "  (bound: %s %s)", f.BoundName, formatValue(f.Bound, f.boundUnit()))
	}
	return b.String()
}

// boundUnit is the unit of Bound: a ratio figure compares throughputs.
func (f figure) boundUnit() string {
	if f.Unit == "%" {
		return "MB/s"
	}
	return f.Unit
}

func formatValue(v float64, unit string) string {
	switch {
	case unit == "%":
		return fmt.Sprintf("%.1f%%", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	default:
		return fmt.Sprintf("%.3g %s", v, unit)
	}
}

// summary prints every figure once more as a table; it returns how many
// targets were missed.
func (r *reporter) summary() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	missed := 0
	fmt.Fprintln(r.out, "\nSUMMARY ("+time.Now().Format("2006-01-02 15:04 MST")+")")
	for _, f := range r.figures {
		fmt.Fprintln(r.out, "  "+strings.TrimPrefix(formatFigure(f), "FIGURE "))
		if !f.met() {
			missed++
		}
	}
	return missed
}

// durations collects latencies for percentiles. Safe for concurrent use.
type durations struct {
	mu sync.Mutex
	d  []time.Duration
}

func (ds *durations) add(d time.Duration) {
	ds.mu.Lock()
	ds.d = append(ds.d, d)
	ds.mu.Unlock()
}

// pct returns the p-th percentile (0..100) by the nearest-rank method;
// p=100 is the maximum. Zero when empty.
func (ds *durations) pct(p float64) time.Duration {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	return percentile(ds.d, p)
}

func (ds *durations) len() int {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	return len(ds.d)
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// ms converts a duration to float milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// describe renders p50/p90/p99/max of ds in milliseconds.
func (ds *durations) describe() string {
	return fmt.Sprintf("n=%d p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms",
		ds.len(), ms(ds.pct(50)), ms(ds.pct(90)), ms(ds.pct(99)), ms(ds.pct(100)))
}

// mib converts bytes to MiB.
func mib(b int64) float64 { return float64(b) / (1 << 20) }

// mbps is megabytes (10^6) per second.
func mbps(bytes int64, d time.Duration) float64 {
	return float64(bytes) / 1e6 / d.Seconds()
}
