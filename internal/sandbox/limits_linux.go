package sandbox

import (
	"fmt"
	"os/exec"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// shellPath is the shell every step runs in.
const shellPath = "/bin/sh"

var prlimitPath = sync.OnceValues(func() (string, error) {
	return exec.LookPath("prlimit")
})

// commandArgv returns the argv that runs command under the limits: a prlimit
// wrapper around `sh -c command` when any limit is set, else just the shell.
// It fails with a *SetupError when prlimit is missing or a limit exceeds the
// buildserver's own hard limit (prlimit would then fail with an exit status
// indistinguishable from the command's).
func commandArgv(l Limits, command string) ([]string, error) {
	shell := []string{shellPath, "-c", command}
	if l.isZero() {
		return shell, nil
	}
	path, err := prlimitPath()
	if err != nil {
		return nil, setupErrorf("limits need util-linux prlimit: %w", err)
	}
	argv := []string{path}
	for _, lim := range []struct {
		flag     string
		resource int
		value    uint64
	}{
		{"--cpu", unix.RLIMIT_CPU, l.CPUSeconds},
		{"--nproc", unix.RLIMIT_NPROC, l.Processes},
		{"--nofile", unix.RLIMIT_NOFILE, l.OpenFiles},
		{"--fsize", unix.RLIMIT_FSIZE, l.FileSizeBytes},
	} {
		if lim.value == 0 {
			continue
		}
		if err := checkHardLimit(lim.resource, lim.value); err != nil {
			return nil, &SetupError{Err: fmt.Errorf("%s=%d: %w", lim.flag, lim.value, err)}
		}
		argv = append(argv, lim.flag+"="+strconv.FormatUint(lim.value, 10))
	}
	return append(append(argv, "--"), shell...), nil
}

// checkHardLimit reports whether value may be set as the hard limit of
// resource by this process's children: raising a hard limit needs
// CAP_SYS_RESOURCE, so only root may exceed the current one.
func checkHardLimit(resource int, value uint64) error {
	if unix.Geteuid() == 0 {
		return nil
	}
	var cur unix.Rlimit
	if err := unix.Getrlimit(resource, &cur); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	if cur.Max != unix.RLIM_INFINITY && value > cur.Max {
		return fmt.Errorf("above the hard limit %d of the buildserver", cur.Max)
	}
	return nil
}
