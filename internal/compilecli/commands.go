package compilecli

import (
	"flag"
	"strings"
)

// commandSynopses are the subcommands of startcompile (besides submit,
// which has no name) and how each is typed.
var commandSynopses = map[string]string{
	"status": statusSynopsis,
	"cancel": cancelSynopsis,
	"log":    logSynopsis,
	"check":  checkSynopsis,
	"verify": verifySynopsis,
	"help":   "startcompile help",
}

// commandFlags returns the flag set of each named command, for findCommand
// (the values it binds are thrown away).
var commandFlags = map[string]func(getenv func(string) string) *flag.FlagSet{
	"":       func(g func(string) string) *flag.FlagSet { return SubmitFlags(&SubmitOptions{}, g) },
	"status": func(g func(string) string) *flag.FlagSet { return StatusFlags(&StatusOptions{}, g) },
	"cancel": func(g func(string) string) *flag.FlagSet { return CancelFlags(&CancelOptions{}, g) },
	"log":    func(g func(string) string) *flag.FlagSet { return LogFlags(&LogOptions{}, g) },
	"check":  func(g func(string) string) *flag.FlagSet { return CheckFlags(&CheckOptions{}, g) },
	"verify": func(g func(string) string) *flag.FlagSet { return VerifyFlags(&VerifyOptions{}, g) },
	"help":   func(func(string) string) *flag.FlagSet { return newFlagSet("startcompile help") },
}

// findCommand returns the subcommand args name and the args that are its
// own: the flags before the name followed by everything after it. The name
// is the first argument that is neither a flag nor a flag's value, so
// "--metaserver ADDR status 5" is the status command with "--metaserver
// ADDR 5". It returns "" and args unchanged for a submit: when the first
// positional is no command name, when a flag before it is not one of the
// command's ("--project hello status" is a submit that misplacedCommand
// refuses, saying what to type), and when an unknown flag comes first,
// which submit's parser then reports.
func findCommand(args []string, getenv func(string) string) (string, []string) {
	known := allFlags(getenv)
	var before []string // names of the flags before the command's name
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || a == "-" || !strings.HasPrefix(a, "-") {
			if _, ok := commandSynopses[a]; !ok || !hasFlags(commandFlags[a](getenv), before) {
				return "", args
			}
			return a, append(args[:i:i], args[i+1:]...)
		}
		name, _, withValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		f := known.Lookup(name)
		if f == nil {
			return "", args
		}
		before = append(before, name)
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); withValue || (ok && b.IsBoolFlag()) {
			continue
		}
		i++ // the flag's value
	}
	return "", args
}

// hasFlags reports whether fs defines every flag in names.
func hasFlags(fs *flag.FlagSet, names []string) bool {
	for _, n := range names {
		if fs.Lookup(n) == nil {
			return false
		}
	}
	return true
}

// allFlags is the union of every command's flags, for findCommand to tell
// the flags that take a value from the booleans.
func allFlags(getenv func(string) string) *flag.FlagSet {
	all := newFlagSet("startcompile")
	for _, mk := range commandFlags {
		mk(getenv).VisitAll(func(f *flag.Flag) {
			if all.Lookup(f.Name) == nil {
				all.Var(f.Value, f.Name, f.Usage)
			}
		})
	}
	return all
}

// misplacedCommand refuses a command name where a positional argument
// (an email address, a build id) was expected, saying what to type:
// "startcompile --project hello status" most likely meant the status
// command, and no email address or build id is a command name.
func misplacedCommand(pos []string, synopsis string) error {
	for _, p := range pos {
		syn, ok := commandSynopses[p]
		if !ok {
			continue
		}
		what := synopsis[strings.LastIndexByte(synopsis, ' ')+1:]
		return usageError("%q is a command, not %s: to run it, type %q (flags may come before or after the command's name)",
			p, placeholderName(what), syn)
	}
	return nil
}

// placeholderName reads a synopsis placeholder ("EMAIL") as words.
func placeholderName(p string) string {
	switch p {
	case "EMAIL":
		return "an email address"
	case "BUILD_ID":
		return "a build id"
	}
	return p
}
