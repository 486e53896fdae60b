//go:build !unix

package mail

import "os/exec"

// setProcessGroup leaves cmd as is: without process groups only the shell
// is killed on timeout.
func setProcessGroup(*exec.Cmd) {}
