package farmtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperProcess prepares the test binary as a child in the given mode.
func helperProcess(t *testing.T, mode string) *Process {
	t.Helper()
	p := NewProcess(t, "helper-"+mode, os.Args[0])
	p.Env = append(os.Environ(), helperEnv+"="+mode)
	return p
}

func waitLog(t *testing.T, p *Process, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	Eventually(t, 10*time.Second, func() error {
		if m = rx.FindStringSubmatch(p.Logs()); m == nil {
			return fmt.Errorf("log of %s has no %q yet:\n%s", p.Name(), re, p.Logs())
		}
		return nil
	})
	return m
}

// gone reports whether pid no longer runs (absent or a zombie).
func gone(pid int) error {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	// The state follows the parenthesized command name.
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return nil
	}
	return fmt.Errorf("pid %d still runs", pid)
}

func TestProcessStopEndsAGracefulProgramWithSIGTERM(t *testing.T) {
	p := helperProcess(t, "serve")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p, "ready")
	pid := p.PID()
	if pid == 0 || !p.Running() {
		t.Fatalf("PID %d, Running %v after Start", pid, p.Running())
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop of a graceful program: %v, want nil (exit 0)", err)
	}
	if p.Running() {
		t.Fatal("Running after Stop")
	}
	if !strings.Contains(p.Logs(), "terminated gracefully") {
		t.Fatalf("log lacks the SIGTERM handler's line:\n%s", p.Logs())
	}
	if err := gone(pid); err != nil {
		t.Fatal(err)
	}
}

func TestProcessStopKillsAProgramThatIgnoresSIGTERM(t *testing.T) {
	p := helperProcess(t, "stubborn")
	p.StopTimeout = 300 * time.Millisecond
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p, "ready")
	start := time.Now()
	err := p.Stop()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("Stop: %v, want death by SIGKILL", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Stop took %s with a 300ms StopTimeout", d)
	}
	if !strings.Contains(p.Logs(), "ignoring SIGTERM") {
		t.Fatalf("SIGTERM was not sent first:\n%s", p.Logs())
	}
}

func TestProcessKillTakesTheWholeProcessGroup(t *testing.T) {
	p := helperProcess(t, "parent")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	m := waitLog(t, p, `ready child=(\d+)`)
	child, _ := strconv.Atoi(m[1])
	if err := gone(child); err == nil {
		t.Fatalf("grandchild %d not running before Kill", child)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	err := p.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("Wait after Kill: %v, want death by SIGKILL", err)
	}
	Eventually(t, 5*time.Second, func() error { return gone(child) })
}

func TestProcessRestartRunsTheSameCommandAgainAndKeepsTheLog(t *testing.T) {
	p := helperProcess(t, "serve")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p, "ready")
	first := p.PID()
	if err := p.Start(); err == nil {
		t.Fatal("second Start of a running process succeeded")
	}
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p, `(?s)start #2.*ready`)
	if p.PID() == first || p.PID() == 0 {
		t.Fatalf("PID after Restart %d, before %d", p.PID(), first)
	}
	if got := strings.Count(p.Logs(), "ready"); got != 2 {
		t.Fatalf("log holds %d runs, want 2:\n%s", got, p.Logs())
	}
	if err := gone(first); err != nil {
		t.Fatal(err)
	}
}

func TestProcessWaitReportsTheExitStatus(t *testing.T) {
	p := helperProcess(t, "exit3")
	if err := p.Wait(); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Wait before Start: %v", err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	err := p.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Wait: %v, want exit status 3", err)
	}
	if !strings.Contains(p.Logs(), "failing on purpose") {
		t.Fatalf("stderr not in the log:\n%s", p.Logs())
	}
	if !strings.HasPrefix(p.LogPath(), os.TempDir()) && !strings.Contains(p.LogPath(), t.Name()) {
		t.Fatalf("log %s is not in the test's temp dir", p.LogPath())
	}
}

func TestTailKeepsTheLastLines(t *testing.T) {
	tests := []struct {
		name, in string
		n        int
		want     string
	}{
		{"fewer lines than asked are all kept", "a\nb\n", 5, "a\nb\n"},
		{"only the last n lines are kept", "a\nb\nc\n", 2, "b\nc\n"},
		{"an unterminated last line counts", "a\nb\nc", 2, "b\nc"},
		{"empty stays empty", "", 3, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tail(tt.in, tt.n); got != tt.want {
				t.Fatalf("tail(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
			}
		})
	}
}
