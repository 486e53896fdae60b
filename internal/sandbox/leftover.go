package sandbox

import (
	"fmt"
	"strings"
)

// maxLeftoverNames bounds the names a LeftoverError lists.
const maxLeftoverNames = 8

// LeftoverError reports that the step's command exited while other
// processes it started were still running (a daemon, a `cmd &` never
// waited for): the build's own failure, final. Those processes were
// killed before Run returned, like every process of a step.
//
// When the command itself also failed, Code is its status and Unwrap
// returns the equivalent *ExitError, so callers that only know ExitError
// still see a failed command.
type LeftoverError struct {
	// Step is the Step.Name.
	Step string
	// Code is the command's own exit status; 0 when it succeeded.
	Code int
	// Count is how many processes were left running; 0 when that is
	// unknown: the command exited 0 but the check for leftovers sent no
	// valid report, which only the step's interference with the check
	// causes (see leftover_linux.go). Such a step fails all the same.
	Count int
	// Names are the command names (as in /proc/PID/comm, at most 15 bytes)
	// of the first few of them, at most 8.
	Names []string
}

func (e *LeftoverError) Error() string {
	what := fmt.Sprintf("step %q", e.Step)
	if e.Count == 0 {
		return what + " interfered with the check for background processes it left running; any were killed"
	}
	if e.Code != 0 {
		what += fmt.Sprintf(" exited with status %d and", e.Code)
	}
	return fmt.Sprintf("%s left %s; they were killed", what, e.Processes())
}

// Processes describes what was left, e.g. "3 background processes running
// (sleep, sleep, sleep)", or "an unknown number of background processes"
// when Count is 0.
func (e *LeftoverError) Processes() string {
	if e.Count == 0 {
		return "an unknown number of background processes"
	}
	noun := "processes"
	if e.Count == 1 {
		noun = "process"
	}
	names := strings.Join(e.Names, ", ")
	if e.Count > len(e.Names) {
		names += ", …"
	}
	return fmt.Sprintf("%d background %s running (%s)", e.Count, noun, names)
}

// Unwrap returns the *ExitError of a command that also failed, else nil.
func (e *LeftoverError) Unwrap() error {
	if e.Code == 0 {
		return nil
	}
	return &ExitError{Step: e.Step, Code: e.Code}
}

// leftovers is what a step left running when its command exited.
type leftovers struct {
	count int
	names []string
	// unknown: the step interfered with the check, count is 0.
	unknown bool
}

func (l *leftovers) add(name string) {
	l.count++
	if len(l.names) < maxLeftoverNames {
		l.names = append(l.names, name)
	}
}

// attach turns the result err of a step that left l running into a
// *LeftoverError; err is returned as is when nothing was left, or when it
// is not the command's own result (a setup failure).
func (l leftovers) attach(step string, err error) error {
	if l.count == 0 && !l.unknown {
		return err
	}
	le := &LeftoverError{Step: step, Count: l.count, Names: l.names}
	switch e := err.(type) {
	case nil:
	case *ExitError:
		le.Code = e.Code
	default:
		return err
	}
	return le
}
