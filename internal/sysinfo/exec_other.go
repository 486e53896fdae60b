//go:build !linux

package sysinfo

import "os/exec"

// setProcessGroup is a no-op off Linux: cancellation kills the direct child
// only.
func setProcessGroup(cmd *exec.Cmd) {}
