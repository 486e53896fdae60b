// Package config holds the command-line helpers Kiln's programs share.
// Each program keeps its own configuration struct and Validate.
package config

import (
	"flag"
	"fmt"
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
