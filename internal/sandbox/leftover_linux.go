package sandbox

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Finding what a step left running.
//
// Under Bwrap the step's PID namespace dies as soon as the command's shell
// exits (bwrap's monitor exits and --die-with-parent kills the namespace's
// init), so the host cannot look afterwards. The step's first process is
// therefore a small shell (leftoverScript) that runs the command as
// `/bin/sh -c COMMAND`, exactly as before (same $0, positional parameters,
// line numbers, limits), and after it exits lists the namespace's /proc
// with shell builtins only: every process but the namespace's init and
// itself that is not a zombie was left by the step. It reports the count
// and the first names on fd 4 and exits with the command's status. The
// command cannot skip the check (it runs in another process); at worst it
// kills the checking shell, which fails the step by its exit status (128+N
// for signal N) anyway. This costs one more exec of /bin/sh per step.
//
// The report must not be forgeable by the command, which runs as the same
// user as the checking shell and can open what /proc/$PPID/fd shows (dash
// keeps the shell's fd 4 there, moved to fd 10 or above, while the
// command runs). A forged "0" would make a step that left processes
// succeed (they would still be killed with the namespace; only the failure
// would be lost).
// Two measures, each sufficient against such a command on its own:
//
//   - fd 4 is one end of a Unix socket pair, not a pipe. open(2) of a
//     socket's /proc/PID/fd link fails (ENXIO), so the command can neither
//     write a report into it nor read, and so learn, the real one. The
//     command does not inherit fd 4 (`4>&-`), the shell's copy is
//     close-on-exec.
//   - Run sends a fresh random nonce (16 bytes, hex) down the socket
//     before the sandbox starts; the shell reads it with the read builtin
//     before it starts the command, so it is neither in any argv or
//     environment (/proc/$PPID/cmdline, environ) nor left in the socket.
//     Every line of the report starts with it: "NONCE COUNT", a line
//     "NONCE NAME" for each of the first names, and "NONCE." to end it, all
//     in one write of a few hundred bytes. Run reads everything there is, at
//     most maxReportSize bytes, and accepts exactly one such block, intact
//     and contiguous; garbage before or after it, or lines that look like
//     names, change nothing.
//
// A step whose command exited 0 and whose report is missing, forged,
// truncated or doubled fails with a *LeftoverError of unknown Count: only
// interference with the check causes that (including a process that keeps
// the scan from ever being conclusive, below). With a non-zero status the
// *ExitError stands alone as before (the command may have killed the
// checking shell, which then wrote nothing). A check that cannot write its
// report (its socket buffer full, which only a process holding the socket
// could cause) blocks, and the step ends by its Timeout: a timeout, never a
// success.
//
// What remains: a process that may ptrace the checking shell can subvert
// it entirely, e.g. read the nonce from /proc/$PPID/mem, take the socket
// with pidfd_getfd(2), or rewrite the shell's variables. Ptrace access
// needs only the same uid and a dumpable target unless Yama
// (kernel.yama.ptrace_scope >= 1) or a seccomp filter forbids it; bwrap
// installs no seccomp filter here and dropping capabilities does not
// prevent same-uid ptrace. The project's machine has no Yama (there is no
// /proc/sys/kernel/yama), and both /proc/$PPID/mem and pidfd_getfd work
// from inside a step there. Even then a forged block written while the
// checking shell still runs is followed by the real one, which Run's
// "exactly one block" rule rejects; a forger must also stop the shell's own
// report, which again takes ptrace (killing it fails the step).
//
// A scan of /proc is not atomic: a process that keeps replacing itself
// (forks a child and exits, again and again) can be listed as one pid that
// is gone when its stat is read, while its child, born after the listing,
// is not listed at all; the old check, which stopped at the first pass
// that found nothing, missed such a hopper in 2 to 6 of 20 steps on the
// project's machine. So a pass that finds nothing only counts when the
// last pid allocated in the step's PID namespace is the same before and
// after it: a process alive before the listing and through the reads is
// listed and read, and any process born during the pass moves the last pid
// (it would have to wrap around pid_max to come back); the pass itself
// forks nothing. An inconclusive pass is retried like one that found
// something, at most 10 times with 20 ms between; if the last pass is
// still empty and inconclusive, something the scan cannot see is forking,
// and the shell writes no report: a command that exited 0 fails with the
// *LeftoverError of unknown Count (below), the existing verdict for a step
// that defeats the check, since how many processes and which are unknown;
// a failed command keeps its *ExitError. A hopper seen in the last pass is
// reported with its count and names as usual.
//
// The last pid is the fifth field of /proc/loadavg, which the kernel takes
// from the reader's PID namespace (inside bwrap: the step's), readable by
// anyone and always there. /proc/sys/kernel/ns_last_pid holds the same
// number but cannot be read with the read builtin: dash reads one byte at
// a time, and a sysctl file answers any read past offset 0 with EOF, so
// only its first digit arrives. Should /proc/loadavg be unreadable, both
// reads are empty and the check is the old one, gap included.
//
// Unsandboxed looks from the host while the command's shell is exited but
// not reaped: the members of the step's pids cgroup when it has one (root;
// this also finds processes that left the process group), else the
// members of the step's process group (scanning /proc).
//
// Both wait up to leftoverGrace for processes that are already on their way
// out, e.g. a test server the command's last line sent SIGTERM to.

// maxReportSize bounds what Run reads of the leftover report channel. The
// checking shell's report of at most maxLeftoverNames names of 15 bytes is
// well below it.
const maxReportSize = 64 << 10

// leftoverGrace bounds the wait for leftover processes that exit by
// themselves right after the command.
const leftoverGrace = 200 * time.Millisecond

// leftoverScript reads the step's nonce from fd 4, runs "$1" as the
// command and then reports leftovers to fd 4 as "NONCE COUNT\n", then
// "NONCE NAME\n" for each of the first 8 names, then "NONCE.\n"; also
// when COUNT is 0, but not at all when its last scan found nothing while
// the namespace's last pid changed (a process it could not see forked:
// unknown). A scan pass is only builtins (a and b are the last pid from
// /proc/loadavg before and after it); the retry sleeps use the external
// sleep(1), only when a pass found something or was inconclusive.
const leftoverScript = `read -r nonce <&4 || nonce=
/bin/sh -c "$1" 4>&-
r=$?
k=0
while :; do
n=0 l=
read -r x x x x a 2>/dev/null </proc/loadavg || a=
for p in /proc/[1-9]*; do
p=${p#/proc/}
case $p in 1|$$|*[!0-9]*) continue;; esac
read -r s 2>/dev/null </proc/$p/stat || continue
t=${s##*) }
case ${t%% *} in Z|X) continue;; esac
n=$((n+1))
if [ $n -le 8 ]; then c=${s#*(}; l="$l$nonce ${c%)*}
"; fi
done
read -r x x x x b 2>/dev/null </proc/loadavg || b=
if [ $n = 0 ] && [ "$a" = "$b" ]; then break; fi
if [ $k -ge 10 ]; then break; fi
k=$((k+1))
sleep 0.02 2>/dev/null || k=10
done
if [ $n = 0 ] && [ "$a" != "$b" ]; then exit $r; fi
printf '%s %s\n%s%s.\n' "$nonce" "$n" "$l" "$nonce" >&4
exit $r`

// checkedArgv returns the argv that runs command under the limits, wrapped
// in leftoverScript.
func checkedArgv(l Limits, command string) ([]string, error) {
	return shellArgv(l, leftoverScript, "sh", command)
}

// newReportChannel returns the two ends of a step's leftover report
// channel, a Unix socket pair, with a fresh nonce already sent to theirs:
// theirs becomes the checking shell's fd 4, ours is read by readReport.
func newReportChannel() (ours, theirs *os.File, nonce string, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, "", fmt.Errorf("socketpair: %w", err)
	}
	ours, theirs = os.NewFile(uintptr(fds[0]), "report"), os.NewFile(uintptr(fds[1]), "report")
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand crashes the program instead)
	nonce = hex.EncodeToString(b)
	// An empty socket's buffer takes 33 bytes without blocking.
	if _, err := unix.Write(fds[0], []byte(nonce+"\n")); err != nil {
		ours.Close()
		theirs.Close()
		return nil, nil, "", fmt.Errorf("send nonce: %w", err)
	}
	return ours, theirs, nonce, nil
}

// readReport reads the leftover report from r, whose peers have all exited:
// what is there is all there is, so non-blocking reads suffice. At most
// maxReportSize bytes are read. ok is false when no valid report for nonce
// is there (see parseReport).
func readReport(r *os.File, nonce string) (l leftovers, ok bool) {
	fd := int(r.Fd())
	_ = unix.SetNonblock(fd, true)
	buf := make([]byte, 0, 512)
	for len(buf) < maxReportSize {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), maxReportSize-len(buf)))
		}
		n, err := unix.Read(fd, buf[len(buf):min(cap(buf), maxReportSize)])
		if n <= 0 {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			break // EOF, EAGAIN or an error: nothing more to read
		}
		buf = buf[:len(buf)+n]
	}
	return parseReport(buf, nonce)
}

// parseReport finds leftoverScript's report for nonce in b: the one line
// "NONCE COUNT" (at the start of b or of a line), followed directly by at
// most COUNT lines "NONCE NAME" and the line "NONCE.". Anything else in b is
// ignored, but ok is false when there is no such block, when it is
// truncated or interrupted by another line, or when a second line starting
// with the nonce follows it: only the checking shell knows the nonce, and
// it writes one block at once.
func parseReport(b []byte, nonce string) (l leftovers, ok bool) {
	if nonce == "" {
		return leftovers{}, false
	}
	lines := strings.Split(string(b), "\n")
	// The last element follows the last newline: an unterminated line,
	// never part of a report.
	lines = lines[:len(lines)-1]
	head := nonce + " "
	for i, line := range lines {
		count, found := strings.CutPrefix(line, head)
		if !found {
			continue
		}
		n, err := strconv.Atoi(count)
		if err != nil || n < 0 || count != strconv.Itoa(n) {
			return leftovers{}, false
		}
		l = leftovers{count: n}
		for j, line := range lines[i+1:] {
			if line == nonce+"." {
				return l, !anyHasPrefix(lines[i+1+j+1:], nonce)
			}
			name, found := strings.CutPrefix(line, head)
			if !found || j >= n {
				return leftovers{}, false
			}
			if len(l.names) < maxLeftoverNames {
				l.names = append(l.names, name)
			}
		}
		return leftovers{}, false // truncated
	}
	return leftovers{}, false
}

func anyHasPrefix(lines []string, prefix string) bool {
	for _, line := range lines {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}

// groupLeftovers returns what is left of an unsandboxed step whose command
// (pid, exited, not reaped) led the process group: the processes in cg
// when not nil, else those of the process group. It waits up to
// leftoverGrace for them to go.
func groupLeftovers(pid int, cg *stepCgroup) leftovers {
	deadline := time.Now().Add(leftoverGrace)
	for {
		var l leftovers
		if cg != nil {
			l = cgroupLeftovers(cg)
		} else {
			l = processGroupLeftovers(pid)
		}
		if l.count == 0 || time.Now().After(deadline) {
			return l
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func cgroupLeftovers(cg *stepCgroup) leftovers {
	var l leftovers
	pids, err := cg.procs()
	if err != nil {
		return l
	}
	for _, p := range pids {
		if st, ok := readStat(p); ok && st.live() {
			l.add(st.comm)
		}
	}
	return l
}

func processGroupLeftovers(pgid int) leftovers {
	var l leftovers
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return l
	}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == pgid {
			continue
		}
		if st, ok := readStat(p); ok && st.pgrp == pgid && st.live() {
			l.add(st.comm)
		}
	}
	return l
}

// procStat is the part of /proc/PID/stat leftovers need.
type procStat struct {
	comm  string
	state byte
	pgrp  int
}

// live reports whether the process still runs (is not a zombie or dead).
func (s procStat) live() bool { return s.state != 'Z' && s.state != 'X' }

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	return parseStat(b)
}

// parseStat parses "PID (COMM) STATE PPID PGRP …"; COMM may hold spaces
// and parentheses, so it ends at the last ')'.
func parseStat(b []byte) (procStat, bool) {
	open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || close < open {
		return procStat{}, false
	}
	f := strings.Fields(string(b[close+1:]))
	if len(f) < 3 || len(f[0]) != 1 {
		return procStat{}, false
	}
	pgrp, err := strconv.Atoi(f[2])
	if err != nil {
		return procStat{}, false
	}
	return procStat{comm: string(b[open+1 : close]), state: f[0][0], pgrp: pgrp}, true
}
