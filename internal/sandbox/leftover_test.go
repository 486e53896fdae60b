package sandbox

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
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

func TestParseReportKeepsTheCountAndAtMostEightNames(t *testing.T) {
	l := parseReport([]byte("10\na\nb\nc\nd\ne\nf\ng\nh\ni\nj\n"))
	if l.count != 10 || len(l.names) != maxLeftoverNames || l.names[0] != "a" {
		t.Errorf("parseReport = %+v", l)
	}
	if l := parseReport([]byte("rubbish\n")); l.count != 0 {
		t.Errorf("parseReport of rubbish = %+v", l)
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
