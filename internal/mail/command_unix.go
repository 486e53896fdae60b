//go:build unix

package mail

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts cmd in a process group of its own and makes the
// context's cancellation kill the whole group, so a hook's children die
// with it.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
