//go:build !linux

package sysinfo

import "errors"

// mountBinfmt: binfmt_misc is Linux's.
func mountBinfmt() error { return errors.New("binfmt_misc exists only on Linux") }
