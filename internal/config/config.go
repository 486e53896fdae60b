// Package config holds the command-line helpers Kiln's programs share.
// Each program keeps its own configuration struct and Validate.
package config

import (
	"flag"
	"fmt"
	"path/filepath"
)

// ApplyEnv gives environment variables the middle precedence between flags
// and defaults: for each flag name in fallbacks that was not set on the
// command line, the named environment variable (when non-empty) sets it.
// Call it after fs.Parse. The error names the variable and its value.
func ApplyEnv(fs *flag.FlagSet, fallbacks map[string]string, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, env := range fallbacks {
		if v := getenv(env); v != "" && !given[name] {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("%s=%q: %w", env, v, err)
			}
		}
	}
	return nil
}

// AbsPaths makes the named flags of fs that hold a path absolute, once,
// against the working directory at start: a program that later runs
// commands in other directories (git, a sandboxed probe) or hands a path
// to another process (over the admin socket) then means the same file
// everywhere. Call it after fs.Parse and ApplyEnv; flags left empty, and
// names fs does not define, are skipped.
func AbsPaths(fs *flag.FlagSet, names ...string) error {
	for _, name := range names {
		f := fs.Lookup(name)
		if f == nil || f.Value.String() == "" {
			continue
		}
		abs, err := filepath.Abs(f.Value.String())
		if err != nil {
			return fmt.Errorf("--%s %q: %w", name, f.Value.String(), err)
		}
		if err := fs.Set(name, abs); err != nil {
			return fmt.Errorf("--%s %q: %w", name, abs, err)
		}
	}
	return nil
}
