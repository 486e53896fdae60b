package manifest

import "fmt"

// ParseError is why a kiln.yaml was refused. Line is the 1-based line the
// problem is on, or 0 when it concerns the whole file.
type ParseError struct {
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", FileName, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", FileName, e.Msg)
}

// OptionError is why a requester's compile option was refused by
// [Manifest.Normalize]: the option's name as given, its value as given, and
// the reason in words. Option is empty when the problem concerns the options
// as a whole (too many of them).
type OptionError struct {
	Option string
	Value  string
	Reason string
}

func (e *OptionError) Error() string {
	switch {
	case e.Option == "":
		return "options: " + e.Reason
	case e.Value == "":
		return fmt.Sprintf("option %q: %s", clip(e.Option), e.Reason)
	default:
		return fmt.Sprintf("option %q = %q: %s", clip(e.Option), clip(e.Value), e.Reason)
	}
}

// clip shortens what a requester typed for an error message.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
