package compilecli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Pace of a transfer meter: a terminal's bar is redrawn at most every
// meterRedraw; elsewhere (a log file, a CI job) a plain line is written at
// each quarter of the transfer and at most every meterPlainEvery, so a
// slow download still shows life without flooding the log.
const (
	meterRedraw     = 100 * time.Millisecond
	meterPlainEvery = 10 * time.Second
	meterBarWidth   = 24
)

// meter shows one transfer's progress on w: on a terminal a bar redrawn in
// place with the rate and the time left, otherwise plain lines. It is not
// safe for concurrent use. A nil *meter shows nothing.
type meter struct {
	w     io.Writer
	tty   bool
	label string // "downloading artifact 3f2a…"
	total uint64
	now   func() time.Time

	done      uint64
	start     time.Time
	drawn     time.Time // last redraw or plain line
	quarter   uint64    // quarters announced (plain lines)
	barOnLine bool      // a bar is on the current terminal line
}

// newMeter starts a meter for a transfer of total bytes (0: unknown).
func newMeter(w io.Writer, tty bool, label string, total uint64, now func() time.Time) *meter {
	if now == nil {
		now = time.Now
	}
	t := now()
	return &meter{w: w, tty: tty, label: label, total: total, now: now, start: t, drawn: t}
}

// add counts n more bytes transferred and shows them when it is time.
func (m *meter) add(n int) {
	if m == nil {
		return
	}
	m.done += uint64(n)
	t := m.now()
	if m.tty {
		if t.Sub(m.drawn) >= meterRedraw {
			m.drawBar(t)
		}
		return
	}
	q := uint64(0)
	if m.total > 0 {
		q = min(4, m.done*4/m.total)
	}
	if (q > m.quarter && q < 4) || t.Sub(m.drawn) >= meterPlainEvery {
		m.quarter = max(m.quarter, q)
		m.drawn = t
		fmt.Fprintf(m.w, "%s: %s\n", m.label, m.status(t))
	}
}

// finish ends the meter's output with one summary line; ok false says the
// transfer broke off (the caller reports why).
func (m *meter) finish(ok bool) {
	if m == nil {
		return
	}
	t := m.now()
	if m.tty {
		m.drawBar(t)
		fmt.Fprintln(m.w)
		m.barOnLine = false
		return
	}
	if !ok {
		fmt.Fprintf(m.w, "%s: stopped at %s\n", m.label, m.status(t))
		return
	}
	el := t.Sub(m.start)
	fmt.Fprintf(m.w, "%s: %s in %s (%s)\n", m.label, humanSize(m.done), roundDuration(el), rateText(m.done, el))
}

// drawBar redraws the bar in place: "\r" then the line, padded so a
// shorter line hides the longer one it replaces.
func (m *meter) drawBar(t time.Time) {
	m.drawn = t
	bar := strings.Repeat("-", meterBarWidth)
	if m.total > 0 {
		full := int(min(m.done, m.total) * meterBarWidth / m.total)
		bar = strings.Repeat("#", full) + strings.Repeat("-", meterBarWidth-full)
	}
	fmt.Fprintf(m.w, "\r%s [%s] %-60s", m.label, bar, m.status(t))
	m.barOnLine = true
}

// status is "45% 12.3 MiB of 27.0 MiB, 5.1 MiB/s, 3s left".
func (m *meter) status(t time.Time) string {
	el := t.Sub(m.start)
	var b strings.Builder
	if m.total > 0 {
		fmt.Fprintf(&b, "%3d%% %s of %s", min(m.done, m.total)*100/m.total, humanSize(m.done), humanSize(m.total))
	} else {
		b.WriteString(humanSize(m.done))
	}
	b.WriteString(", " + rateText(m.done, el))
	if eta, ok := m.eta(el); ok {
		b.WriteString(", " + roundDuration(eta) + " left")
	}
	return b.String()
}

// eta estimates the time left from the average rate so far; false while
// nothing was measured or the total is unknown.
func (m *meter) eta(el time.Duration) (time.Duration, bool) {
	if m.total == 0 || m.done == 0 || el <= 0 || m.done >= m.total {
		return 0, m.total > 0 && m.done >= m.total
	}
	left := float64(m.total-m.done) / (float64(m.done) / el.Seconds())
	return time.Duration(left * float64(time.Second)), true
}

// rateText is the average rate of n bytes over el ("5.1 MiB/s").
func rateText(n uint64, el time.Duration) string {
	if el <= 0 {
		return "- B/s"
	}
	return humanSize(uint64(float64(n)/el.Seconds())) + "/s"
}

// humanSize writes n in binary units with one decimal.
func humanSize(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// roundDuration shortens d for a person: whole seconds from 10 s on,
// tenths below.
func roundDuration(d time.Duration) string {
	if d >= 10*time.Second {
		return d.Round(time.Second).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// isTerminal reports whether w is a character device (a terminal), the
// default of Env.Terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
