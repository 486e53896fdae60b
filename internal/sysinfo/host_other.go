//go:build !linux

package sysinfo

import "errors"

// errUnsupported is returned by host measurements off Linux.
var errUnsupported = errors.New("sysinfo: host measurement is implemented for Linux only")

func memoryBytes() (uint64, error) { return 0, errUnsupported }

func unameMachine() (string, error) { return "", errUnsupported }
