package sysinfo

import (
	"os"

	"golang.org/x/sys/unix"
)

// mountBinfmt mounts binfmt_misc where it is expected unless it is there.
func mountBinfmt() error {
	if _, err := os.Stat(binfmtDir + "/register"); err == nil {
		return nil
	}
	return unix.Mount("binfmt_misc", binfmtDir, "binfmt_misc", 0, "")
}
