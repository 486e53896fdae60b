package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLeftoverErrorSaysWhatWasLeftAndWhetherTheCommandFailed(t *testing.T) {
	cases := []struct {
		name string
		err  *LeftoverError
		want string
	}{
		{"one process of a successful command", &LeftoverError{Step: "make", Count: 1, Names: []string{"sleep"}},
			`step "make" left 1 background process running (sleep); they were killed`},
		{"more processes than names", &LeftoverError{Step: "make", Count: 9, Names: []string{"a", "b"}},
			`step "make" left 9 background processes running (a, b, …); they were killed`},
		{"a failed command", &LeftoverError{Step: "make", Code: 2, Count: 2, Names: []string{"x", "y"}},
			`step "make" exited with status 2 and left 2 background processes running (x, y); they were killed`},
		{"a command that interfered with the check", &LeftoverError{Step: "make"},
			`step "make" interfered with the check for background processes it left running; any were killed`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.err.Error(); got != c.want {
				t.Errorf("Error() = %q, want %q", got, c.want)
			}
			var exit *ExitError
			if got := errors.As(error(c.err), &exit); got != (c.err.Code != 0) || (got && exit.Code != c.err.Code) {
				t.Errorf("errors.As ExitError = %v (%v) for status %d", got, exit, c.err.Code)
			}
		})
	}
}

func TestParseStatReadsCommandNamesWithParenthesesAndSpaces(t *testing.T) {
	st, ok := parseStat([]byte("4242 (my (odd) name) S 1 4200 4200 0 -1 4194560 1 2 3"))
	if !ok || st.comm != "my (odd) name" || st.state != 'S' || st.pgrp != 4200 {
		t.Errorf("parseStat = %+v, %v", st, ok)
	}
	if _, ok := parseStat([]byte("garbage")); ok {
		t.Error("parseStat accepted garbage")
	}
}

func TestParseReportAcceptsOnlyOneIntactBlockStartingWithTheNonce(t *testing.T) {
	const nonce = "0123456789abcdef0123456789abcdef"
	const other = "fedcba9876543210fedcba9876543210"
	block := func(n string, count int, names ...string) string {
		s := fmt.Sprintf("%s %d\n", n, count)
		for _, name := range names {
			s += n + " " + name + "\n"
		}
		return s + n + ".\n"
	}
	cases := []struct {
		name   string
		report string
		ok     bool
		count  int
		names  []string
	}{
		{"a clean report", block(nonce, 0), true, 0, nil},
		{"three sleeps", block(nonce, 3, "sleep", "sleep", "sleep"), true, 3, []string{"sleep", "sleep", "sleep"}},
		{"more processes than names", block(nonce, 10, "a", "b", "c", "d", "e", "f", "g", "h"), true, 10,
			[]string{"a", "b", "c", "d", "e", "f", "g", "h"}},
		{"names with spaces, parentheses and dots", block(nonce, 2, "my (odd) name", "."), true, 2, []string{"my (odd) name", "."}},
		{"garbage before the report", "0\nrubbish\n" + nonce[:10] + "\n" + block(nonce, 1, "sleep"), true, 1, []string{"sleep"}},
		{"garbage after the report", block(nonce, 1, "sleep") + "0\n" + block(other, 0), true, 1, []string{"sleep"}},
		{"garbage without a newline before the report", "junk" + block(nonce, 1, "sleep"), false, 0, nil},
		{"a report under the wrong nonce", block(other, 0), false, 0, nil},
		{"an old-style report", "0\n", false, 0, nil},
		{"the nonce inside a later line", "forged " + block(nonce, 0), false, 0, nil},
		{"the nonce only in a name line", nonce + " sleep\n" + nonce + ".\n", false, 0, nil},
		{"a report truncated before its end line", block(nonce, 1, "sleep")[:len(block(nonce, 1, "sleep"))-len(nonce)-2], false, 0, nil},
		{"a report whose end line lacks its newline", strings.TrimSuffix(block(nonce, 0), "\n"), false, 0, nil},
		{"a report cut inside its count", nonce + " 1", false, 0, nil},
		{"a fake name line inside the report", nonce + " 1\nsleep\n" + nonce + " sleep\n" + nonce + ".\n", false, 0, nil},
		{"more name lines than the count", block(nonce, 1, "sleep", "sleep"), false, 0, nil},
		{"a count that is not a number", nonce + " x\n" + nonce + ".\n", false, 0, nil},
		{"a negative count", block(nonce, -1), false, 0, nil},
		{"a count with a sign", nonce + " +0\n" + nonce + ".\n", false, 0, nil},
		{"two reports", block(nonce, 0) + block(nonce, 2, "sleep", "sleep"), false, 0, nil},
		{"a forged report before the real one", block(nonce, 0) + block(nonce, 1, "sleep"), false, 0, nil},
		{"nothing", "", false, 0, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, ok := parseReport([]byte(c.report), nonce)
			if ok != c.ok || l.count != c.count || !slices.Equal(l.names, c.names) {
				t.Errorf("parseReport(%q) = %+v, %v; want count %d, names %q, %v", c.report, l, ok, c.count, c.names, c.ok)
			}
		})
	}
	if _, ok := parseReport([]byte(" 0\n.\n"), ""); ok {
		t.Error("parseReport accepted a report for the empty nonce")
	}
}

func TestReadReportFindsTheReportAfterGarbageAndBoundsWhatItReads(t *testing.T) {
	ours, theirs, nonce, err := newReportChannel()
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	got := make([]byte, len(nonce)+1)
	if _, err := io.ReadFull(theirs, got); err != nil || string(got) != nonce+"\n" {
		t.Fatalf("nonce line %q, %v; want %q", got, err, nonce+"\n")
	}
	if len(nonce) != 32 || strings.Trim(nonce, "0123456789abcdef") != "" {
		t.Errorf("nonce %q is not 16 bytes of hex", nonce)
	}
	junk := strings.Repeat("0\nsleep\n", 1000)
	if _, err := theirs.WriteString(junk + nonce + " 1\n" + nonce + " sleep\n" + nonce + ".\n" + junk); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	if l, ok := readReport(ours, nonce); !ok || l.count != 1 || !slices.Equal(l.names, []string{"sleep"}) {
		t.Errorf("readReport = %+v, %v; want one sleep", l, ok)
	}

	// A report beyond maxReportSize is not read.
	ours2, theirs2, nonce2, err := newReportChannel()
	if err != nil {
		t.Fatal(err)
	}
	defer ours2.Close()
	flood := strings.Repeat("x", maxReportSize) + "\n" + nonce2 + " 0\n" + nonce2 + ".\n"
	go func() {
		defer theirs2.Close()
		_, _ = theirs2.WriteString(flood)
	}()
	// Wait until everything is buffered (the socket takes it all).
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := unix.IoctlGetInt(int(ours2.Fd()), unix.SIOCINQ)
		if err != nil {
			t.Fatal(err)
		}
		if n >= len(flood) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d bytes arrived", n)
		}
		time.Sleep(time.Millisecond)
	}
	if l, ok := readReport(ours2, nonce2); ok {
		t.Errorf("readReport read past %d bytes: %+v", maxReportSize, l)
	}
}

func TestLeftoverProcessesFailTheStepAndAreKilled(t *testing.T) {
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			marker := fmt.Sprintf("1000.%d%d", os.Getpid(), time.Now().UnixNano()%1000000)
			cases := []struct {
				name    string
				command string
				code    int
				count   int
				// escapes: the process leaves the process group, found only
				// through the PID namespace or a cgroup.
				escapes bool
			}{
				{"a daemon started with setsid", "setsid sleep " + marker + " >/dev/null 2>&1 </dev/null & echo started", 0, 1, true},
				{"a failing command with background jobs", "sleep " + marker + " & sleep " + marker + " & sleep " + marker + " & exit 3", 3, 3, false},
				{"a command that execs at the end", "sleep " + marker + " & exec true", 0, 1, false},
				{"a command whose EXIT trap is its own", "trap 'echo bye' EXIT; sleep " + marker + " & trap - EXIT", 0, 1, false},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					parent, _ := cgroupParent()
					if c.escapes && rc.name == "unsandboxed" && parent == "" {
						t.Skip("without a pids cgroup an unsandboxed step cannot find a process that left its group")
					}
					out, err := run(t, rc.r, Step{Command: c.command})
					var le *LeftoverError
					if !errors.As(err, &le) || le.Count != c.count || le.Code != c.code {
						t.Fatalf("Run: %v (%q); want a LeftoverError counting %d processes, status %d", err, out, c.count, c.code)
					}
					for _, n := range le.Names {
						if n != "sleep" {
							t.Errorf("names %q, want sleep", le.Names)
						}
					}
					if !waitUntil(time.Second, func() bool { return len(liveProcessesWith(marker)) == 0 }) {
						pids := liveProcessesWith(marker)
						for _, p := range pids {
							_ = (&os.Process{Pid: p}).Kill()
						}
						t.Errorf("processes %v survived the step", pids)
					}
				})
			}
		})
	}
}

func TestProcessesThatEndRightAfterTheCommandAreNotLeftovers(t *testing.T) {
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			for _, command := range []string{
				"true",
				"sleep 0.05 &",
				"sleep 1000 & kill $!",
				"sleep 1000 & a=$!; sleep 1000 & kill $a $!",
			} {
				if out, err := run(t, rc.r, Step{Command: command}); err != nil {
					t.Errorf("%q: %v (%q); want success", command, err, out)
				}
			}
		})
	}
}

func TestForgedLeftoverReportsDoNotHideWhatAStepLeft(t *testing.T) {
	b := needBwrap(t)
	marker := fmt.Sprintf("1000.%d%d", os.Getpid(), time.Now().UnixNano()%1000000)
	// Each command leaves a sleep and wants to succeed: it ignores SIGPIPE
	// (some descriptors of init are pipes nobody reads) and failed writes.
	leave := "trap '' PIPE; sleep " + marker + " & "
	// The checking shell's descriptors but 0, 1 and 2: its fd 4, and where
	// dash keeps fd 4 (moved to fd 10 or above) while the command runs.
	const reports = "/proc/$PPID/fd/[3-9] /proc/$PPID/fd/[1-9][0-9]"
	const quiet = " 2>/dev/null; true"
	cases := []struct {
		name    string
		command string
	}{
		{"a clean report written to the checking shell's fd 4",
			leave + "printf '0\\n' >/proc/$PPID/fd/4" + quiet},
		{"a clean report written to every other descriptor of the checking shell",
			leave + "for f in " + reports + "; do printf '0\\n' >$f; done" + quiet},
		{"a clean report written to every descriptor of the checking shell and of init",
			leave + "for f in /proc/$PPID/fd/* /proc/1/fd/*; do printf '0\\n' >$f; done" + quiet},
		{"garbage and a clean report before the real report",
			leave + "for f in " + reports + "; do printf 'rubbish\\n\\n0\\n' >$f; done" + quiet},
		{"many fake name lines",
			leave + "for f in " + reports + "; do i=0; while [ $i -lt 2000 ]; do echo 0; echo sleep; i=$((i+1)); done >$f; done" + quiet},
		{"a flood of the report channel",
			leave + "for f in " + reports + "; do head -c 1000000 /dev/zero >$f; done" + quiet},
		{"a leftover that steals the real report to forge another",
			leave + "p=$PPID; (while :; do for f in " + strings.ReplaceAll(reports, "$PPID", "$p") + "; do " +
				"r=$(head -n 1 <$f) && printf '%s 0\\n%s.\\n' \"${r%% *}\" \"${r%% *}\" >$f; done; done) </dev/null >/dev/null 2>&1 &"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := run(t, b, Step{Command: c.command, Timeout: 30 * time.Second})
			var le *LeftoverError
			if !errors.As(err, &le) || le.Count < 1 || !slices.Contains(le.Names, "sleep") || le.Code != 0 {
				t.Fatalf("Run: %v (output %q); want a LeftoverError naming sleep", err, out)
			}
			if !strings.Contains(err.Error(), "background process") || !strings.Contains(err.Error(), "sleep") {
				t.Errorf("error %q does not name the leftover sleep", err)
			}
			if !waitUntil(time.Second, func() bool { return len(liveProcessesWith(marker)) == 0 }) {
				pids := liveProcessesWith(marker)
				for _, p := range pids {
					_ = (&os.Process{Pid: p}).Kill()
				}
				t.Errorf("processes %v survived the step", pids)
			}
		})
	}
}

func TestAStepThatLeavesNothingSucceedsWhateverItWritesToTheChecker(t *testing.T) {
	b := needBwrap(t)
	for _, command := range []string{
		"true",
		"for f in /proc/$PPID/fd/[3-9] /proc/$PPID/fd/[1-9][0-9]; do printf '5\\nsleep\\n' >$f; done 2>/dev/null; true",
	} {
		if out, err := run(t, b, Step{Command: command}); err != nil {
			t.Errorf("%q: %v (output %q); want success", command, err, out)
		}
	}
}

func TestTheLeftoverReportCannotBeOpenedThroughProc(t *testing.T) {
	b := needBwrap(t)
	// Every socket among the checking shell's descriptors (the report
	// channel) refuses open(2) for writing and for reading.
	command := `n=0; for f in /proc/$PPID/fd/*; do case $(readlink $f) in socket:*)
n=$((n+1)); if (: >$f) 2>/dev/null || (: <$f) 2>/dev/null; then echo opened $f; fi;; esac; done; echo sockets=$n`
	out, err := run(t, b, Step{Command: command})
	if err != nil || out != "sockets=1\n" {
		t.Errorf("Run: %v, output %q; want one socket that cannot be opened", err, out)
	}
}

func TestAStepThatKillsOrStopsItsCheckerFails(t *testing.T) {
	b := needBwrap(t)
	marker := fmt.Sprintf("1000.%d%d", os.Getpid(), time.Now().UnixNano()%1000000)
	t.Run("killed: by its exit status", func(t *testing.T) {
		out, err := run(t, b, Step{Command: "sleep " + marker + " & kill -9 $PPID"})
		var exit *ExitError
		if !errors.As(err, &exit) || exit.Code != 128+9 {
			t.Fatalf("Run: %v (output %q); want an ExitError of status 137", err, out)
		}
	})
	t.Run("stopped: by its timeout", func(t *testing.T) {
		out, err := run(t, b, Step{Command: "sleep " + marker + " & kill -STOP $PPID", Timeout: time.Second})
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Run: %v (output %q); want a timeout", err, out)
		}
	})
	if !waitUntil(time.Second, func() bool { return len(liveProcessesWith(marker)) == 0 }) {
		pids := liveProcessesWith(marker)
		for _, p := range pids {
			_ = (&os.Process{Pid: p}).Kill()
		}
		t.Errorf("processes %v survived the steps", pids)
	}
}

func TestAStepThatLeavesASelfReplacingProcessAlwaysFails(t *testing.T) {
	b := needBwrap(t)
	marker := fmt.Sprintf("1000.%d%d", os.Getpid(), time.Now().UnixNano()%1000000)
	// A hopper: each generation starts the next in the background and
	// exits, so the one live process keeps changing its pid. A scan that
	// trusted its first empty pass missed it in 2 to 6 of 20 steps (it
	// listed one generation, gone before its stat was read, and not the
	// next); 20 steps make such a miss all but certain.
	command := `export H=': ` + marker + `; sh -c "$H" </dev/null >/dev/null 2>&1 &'; sh -c "$H"`
	const runs = 20
	for i := range runs {
		out, err := run(t, b, Step{Command: command, Timeout: 30 * time.Second})
		var le *LeftoverError
		if !errors.As(err, &le) || le.Code != 0 {
			t.Errorf("step %d of %d: Run: %v (output %q); want a LeftoverError", i+1, runs, err, out)
		}
	}
	if !waitUntil(time.Second, func() bool { return len(liveProcessesWith(marker)) == 0 }) {
		pids := liveProcessesWith(marker)
		for _, p := range pids {
			_ = (&os.Process{Pid: p}).Kill()
		}
		t.Errorf("processes %v survived the steps", pids)
	}
}
