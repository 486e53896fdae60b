package manifest

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, fails only with a *ParseError,
// and that whatever it accepts is self-consistent.
func FuzzParse(f *testing.F) {
	inputs, _ := filepath.Glob("testdata/*.yaml")
	for _, in := range inputs {
		if data, err := os.ReadFile(in); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Msg == "" || pe.Line < 0 {
				t.Fatalf("Parse error %#v is not a proper *ParseError", err)
			}
			return
		}
		if len(m.Build) == 0 || m.Timeout < MinTimeout || m.Timeout > MaxTimeout || m.Default {
			t.Fatalf("accepted an invalid manifest: %+v", m)
		}
		if m.InstallTree == (len(m.Artifacts) > 0) {
			t.Fatalf("accepted artifacts %q with install_tree %v", m.Artifacts, m.InstallTree)
		}
		if len(m.Options) > MaxOptions || !slices.IsSortedFunc(m.Options, func(a, b Option) int { return strings.Compare(a.Name, b.Name) }) {
			t.Fatalf("options not sorted or too many: %d", len(m.Options))
		}
		for _, o := range m.Options {
			if c, err := o.Canonical(o.Default); err != nil || c != o.Default {
				t.Fatalf("option %q default %q is not canonical: %q, %v", o.Name, o.Default, c, err)
			}
		}
		defaults, err := m.Normalize(nil)
		if err != nil || len(defaults) != len(m.Options) {
			t.Fatalf("Normalize(nil) = %v, %v", defaults, err)
		}
		if again, err := m.Normalize(defaults); err != nil || !maps.Equal(again, defaults) {
			t.Fatalf("Normalize not idempotent on defaults: %v, %v", again, err)
		}
		if r := m.Recipe(); len(r.GetBuildSteps()) != len(m.Build) {
			t.Fatalf("Recipe lost build steps")
		}
	})
}

// FuzzNormalize checks that Normalize fails only with an *OptionError and
// that what it returns is complete and a fixed point.
func FuzzNormalize(f *testing.F) {
	f.Add("level", "007", "debug", "yes")
	f.Add("flavor", "fancy", "name", "")
	f.Add("nope", "1", "level", "x")
	m := fullManifest(f)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		in := map[string]string{k1: v1, k2: v2}
		got, err := m.Normalize(in)
		if err != nil {
			var oe *OptionError
			if !errors.As(err, &oe) || oe.Reason == "" || got != nil {
				t.Fatalf("Normalize(%q) = %v, %#v", in, got, err)
			}
			return
		}
		if len(got) != len(m.Options) {
			t.Fatalf("Normalize(%q) = %v: not every declared option", in, got)
		}
		for _, o := range m.Options {
			if v, ok := in[o.Name]; !ok && got[o.Name] != o.Default {
				t.Fatalf("option %q absent from the request is %q, want default %q", o.Name, got[o.Name], o.Default)
			} else if ok && len(v) > MaxOptionValueLen {
				t.Fatalf("accepted an overlong value for %q", o.Name)
			}
		}
		again, err := m.Normalize(got)
		if err != nil || !maps.Equal(again, got) {
			t.Fatalf("Normalize(Normalize(%q)) = %v, %v; want %v", in, again, err, got)
		}
	})
}
