package worker

import (
	"os"
	"strconv"
	"strings"
)

// readLoadAverage returns the 1-minute load average from /proc/loadavg; ok
// is false when it cannot be read.
func readLoadAverage() (load float64, ok bool) {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, false
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return 0, false
	}
	load, err = strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return 0, false
	}
	return load, true
}
