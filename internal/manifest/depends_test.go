package manifest

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const dependsBase = "build: [make]\nartifacts: [app]\n"

func TestParse_Depends(t *testing.T) {
	m, err := Parse([]byte(dependsBase + "depends: [zlib, \"libpng@v1.6.43\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Dependency{{Project: "zlib"}, {Project: "libpng", Revision: "v1.6.43"}}
	if !slices.Equal(m.Depends, want) {
		t.Fatalf("Depends = %+v, want %+v", m.Depends, want)
	}
	if got := m.Depends[1].String(); got != "libpng@v1.6.43" {
		t.Errorf("String = %q", got)
	}
}

func TestParse_DependsRefused(t *testing.T) {
	many := make([]string, MaxDepends+1)
	for i := range many {
		many[i] = "p" + strings.Repeat("x", i)
	}
	for name, tc := range map[string]struct{ yaml, want string }{
		"bad name":    {"depends: [Zlib]\n", `"Zlib" is not a project name`},
		"empty rev":   {"depends: [\"zlib@\"]\n", "revision after @"},
		"twice":       {"depends: [zlib, \"zlib@v1\"]\n", "listed twice"},
		"not a list":  {"depends: zlib\n", "must be a list"},
		"empty entry": {"depends: [\"\"]\n", "is empty"},
		"too many":    {"depends: [" + strings.Join(many, ", ") + "]\n", "at most 16"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(dependsBase + tc.yaml))
			var pe *ParseError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a ParseError containing %q", err, tc.want)
			}
			if pe.Line != 3 {
				t.Errorf("line = %d, want 3", pe.Line)
			}
		})
	}
}

func TestDefault_NoDepends(t *testing.T) {
	if d := Default().Depends; d != nil {
		t.Fatalf("default recipe depends on %v", d)
	}
}
