//go:build !kiln_cheat

package worker

import "io"

// tamper is what packing reads a file's content through: the content as
// it is. A build made with the kiln_cheat tag (tamper_cheat.go, tests
// only) flips a byte instead, to play a cheating volunteer.
func tamper(r io.Reader) io.Reader { return r }
