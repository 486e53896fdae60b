package worker

import (
	"os"
	"runtime"
	"strconv"
	"strings"
)

// machineBusy reports, for the idle-only policy, whether the machine is busy
// with work of its owner: the 1-minute load average, less one per build of
// ours, above half the CPUs.
func machineBusy(ourBuilds int) bool {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return false
	}
	load, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return false
	}
	return load-float64(ourBuilds) > float64(runtime.NumCPU())/2
}
