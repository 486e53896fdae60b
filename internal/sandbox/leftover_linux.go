package sandbox

import (
	"bytes"
	"os"
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
// itself that is not a zombie was left by the step. It writes the count and
// the first names to fd 4, a pipe to Run that the command does not get,
// and exits with the command's status. The command cannot skip the check
// (it runs in another process); at worst it kills the checking shell, which
// fails the step anyway. This costs one more exec of /bin/sh per step.
//
// Unsandboxed looks from the host while the command's shell is exited but
// not reaped: the members of the step's pids cgroup when it has one (root;
// this also finds processes that left the process group), else the
// members of the step's process group (scanning /proc).
//
// Both wait up to leftoverGrace for processes that are already on their way
// out, e.g. a test server the command's last line sent SIGTERM to.

// reportFD is the descriptor of the leftover report inside bwrap.
const reportFD = 4

// leftoverGrace bounds the wait for leftover processes that exit by
// themselves right after the command.
const leftoverGrace = 200 * time.Millisecond

// leftoverScript runs "$1" as the command and then reports leftovers to fd
// 4 as "COUNT\nNAME\nNAME…" (nothing when none). The retry sleeps use the
// external sleep(1), only when something was found.
const leftoverScript = `/bin/sh -c "$1" 4>&-
r=$?
k=0
while :; do
n=0 l=
for p in /proc/[1-9]*; do
p=${p#/proc/}
case $p in 1|$$|*[!0-9]*) continue;; esac
read -r s 2>/dev/null </proc/$p/stat || continue
t=${s##*) }
case ${t%% *} in Z|X) continue;; esac
n=$((n+1))
if [ $n -le 8 ]; then c=${s#*(}; l="$l
${c%)*}"; fi
done
if [ $n = 0 ] || [ $k -ge 10 ]; then break; fi
k=$((k+1))
sleep 0.02 2>/dev/null || k=10
done
if [ $n != 0 ]; then printf '%s%s\n' "$n" "$l" >&4; fi
exit $r`

// checkedArgv returns the argv that runs command under the limits, wrapped
// in leftoverScript.
func checkedArgv(l Limits, command string) ([]string, error) {
	return shellArgv(l, leftoverScript, "sh", command)
}

// readReport reads the leftover report from r, whose writers have all
// exited: what is there is all there is, so a non-blocking read suffices.
func readReport(r *os.File) leftovers {
	_ = unix.SetNonblock(int(r.Fd()), true)
	buf := make([]byte, 4096)
	n, _ := unix.Read(int(r.Fd()), buf)
	if n <= 0 {
		return leftovers{}
	}
	return parseReport(buf[:n])
}

// parseReport parses leftoverScript's report.
func parseReport(b []byte) leftovers {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	count, err := strconv.Atoi(lines[0])
	if err != nil || count <= 0 {
		return leftovers{}
	}
	names := lines[1:]
	if len(names) > maxLeftoverNames {
		names = names[:maxLeftoverNames]
	}
	return leftovers{count: count, names: names}
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
