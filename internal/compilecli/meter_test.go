package compilecli

import (
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// stepClock is a fake clock that moves by step on every reading.
func stepClock(step time.Duration) func() time.Time {
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return func() time.Time { t = t.Add(step); return t }
}

func TestMeterOnATerminalRedrawsABarWithRateAndTimeLeft(t *testing.T) {
	var out bytes.Buffer
	// 1 MiB in 16 chunks, one clock step of 250 ms per reading.
	m := newMeter(&out, true, "dl", 1<<20, stepClock(250*time.Millisecond))
	for range 16 {
		m.add(64 << 10)
	}
	m.finish(true)
	s := out.String()
	draws := strings.Split(s, "\r")[1:]
	if len(draws) < 16 || !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
		t.Fatalf("%d redraws, output %q", len(draws), s)
	}
	// After the first chunk: 64 KiB in 250 ms (one step from the start).
	if first := draws[0]; !strings.Contains(first, "[#-----------------------]   6% 64.0 KiB of 1.0 MiB, 256.0 KiB/s, 3.8s left") {
		t.Errorf("first redraw %q", first)
	}
	if last := draws[len(draws)-1]; !strings.Contains(last, "[########################] 100% 1.0 MiB of 1.0 MiB") || !strings.Contains(last, "0s left") {
		t.Errorf("last redraw %q", last)
	}
}

func TestMeterElsewhereWritesPlainLinesAtEachQuarter(t *testing.T) {
	var out bytes.Buffer
	m := newMeter(&out, false, "dl", 1000, stepClock(time.Millisecond))
	for range 100 {
		m.add(10)
	}
	m.finish(true)
	s := out.String()
	if strings.Contains(s, "\r") {
		t.Fatalf("a carriage return in plain output %q", s)
	}
	got := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(got) != 4 || !strings.HasPrefix(got[0], "dl:  25% ") || !strings.HasPrefix(got[2], "dl:  75% ") ||
		!strings.HasPrefix(got[3], "dl: 1000 B in ") {
		t.Fatalf("lines %q", got)
	}
}

func TestMeterElsewhereShowsASlowTransferEveryTenSeconds(t *testing.T) {
	var out bytes.Buffer
	m := newMeter(&out, false, "dl", 1<<30, stepClock(4*time.Second))
	for range 10 { // 10 readings 4 s apart: a line at 12 s, 24 s, 36 s
		m.add(1)
	}
	if n := strings.Count(out.String(), "\n"); n != 3 {
		t.Fatalf("%d lines:\n%s", n, out.String())
	}
	m.finish(false)
	if !strings.Contains(out.String(), "dl: stopped at") {
		t.Fatalf("no stop line:\n%s", out.String())
	}
}

func TestANilMeterShowsNothing(_ *testing.T) {
	var m *meter
	m.add(5)
	m.finish(true)
}

func TestDownloadShowsProgressOnATerminalOnly(t *testing.T) {
	for _, tty := range []bool{true, false} {
		f := startFake(t)
		f.submit = answerQueued(5)
		f.watch = script(upd(final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)))
		data := goodArchive(t)
		f.downloads["build:5"] = artifactStream(5, data, data, 100, nil)
		dir := filepath.Join(t.TempDir(), "out")
		env := Env{Getenv: envWith(EnvMetaserver, f.addr), Measure: measured(x86Info()),
			Terminal: func(io.Writer) bool { return tty }}
		_, stderr, code := runWith(t, env, "--project", "hello", "--download", dir, email)
		if code != 0 {
			t.Fatalf("tty %v: exit %d; stderr:\n%s", tty, code, stderr)
		}
		bar := strings.Contains(stderr, "\r[build 5] downloading ") && strings.Contains(stderr, "[########################] 100%")
		plain := strings.Contains(stderr, "\n[build 5] downloading ") && strings.Contains(stderr, " B in ")
		if bar != tty || plain == tty || strings.Contains(stderr, "\r") != tty {
			t.Fatalf("tty %v: stderr %q", tty, stderr)
		}
	}
}

func TestLogDashFFollowsWhereverTheFlagsGo(t *testing.T) {
	for _, args := range [][]string{
		{"log", "-f", "9"},
		{"log", "9", "-f"},
		{"-f", "log", "9"},
		{"--metaserver", "ADDR", "log", "-f", "9"},
		{"log", "-f", "--metaserver", "ADDR", "9"},
	} {
		f := startFake(t)
		f.logs = []*kilnv1.GetLogResponse{{Offset: 0, Data: []byte("one\n")}}
		for i := range args {
			if args[i] == "ADDR" {
				args[i] = f.addr
			}
		}
		stdout, stderr, code := f.run(t, args...)
		if code != 0 || stdout != "one\n" || len(f.logReqs) != 1 || !f.logReqs[0].GetFollow() || f.logReqs[0].GetBuildId() != 9 {
			t.Fatalf("%q: exit %d stdout %q stderr %s requests %v", args, code, stdout, stderr, f.logReqs)
		}
	}
}
