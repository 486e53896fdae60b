package manifest

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// render is the golden text of Parse's result: the manifest as indented
// JSON, or the error.
func render(m *Manifest, err error) string {
	if err != nil {
		var pe *ParseError
		if !errors.As(err, &pe) {
			return "unexpected error type: " + err.Error() + "\n"
		}
		return "error: " + err.Error() + "\n"
	}
	view := struct {
		*Manifest
		Timeout string
	}{m, m.Timeout.String()}
	out, jerr := json.MarshalIndent(view, "", "  ")
	if jerr != nil {
		return "marshal: " + jerr.Error()
	}
	return string(out) + "\n"
}

func TestParseGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			m, perr := Parse(data)
			got := render(m, perr)
			if strings.HasPrefix(name, "err_") != (perr != nil) {
				t.Errorf("inputs named err_* must fail and only those; got %q", got)
			}
			golden := strings.TrimSuffix(in, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Parse(%s) =\n%s\nwant\n%s", in, got, want)
			}
		})
	}
}

func TestParseRejectsAFileOverTheSizeLimit(t *testing.T) {
	data := []byte("build: [make]\nartifacts: [a]\n#" + strings.Repeat("x", MaxFileSize))
	_, err := Parse(data)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 0 || !strings.Contains(pe.Msg, "larger") {
		t.Fatalf("Parse(oversized) = %v, want a ParseError about size", err)
	}
}

func TestParseLimitsTheNumberOfOptions(t *testing.T) {
	manifest := func(n int) []byte {
		var b strings.Builder
		b.WriteString("build: [make]\nartifacts: [a]\noptions:\n")
		for i := range n {
			b.WriteString("  o" + strings.Repeat("x", i/26) + string(rune('a'+i%26)) + ": {type: bool}\n")
		}
		return []byte(b.String())
	}
	if m, err := Parse(manifest(MaxOptions)); err != nil || len(m.Options) != MaxOptions {
		t.Errorf("Parse(%d options) = %v; want success", MaxOptions, err)
	}
	_, err := Parse(manifest(MaxOptions + 1))
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 3+MaxOptions+1 {
		t.Errorf("Parse(%d options) = %v; want a ParseError on line %d", MaxOptions+1, err, 3+MaxOptions+1)
	}
}

func TestParseSortsOptionsByName(t *testing.T) {
	m, err := Parse([]byte("options:\n  zeta: {type: int}\n  alpha: {type: int}\n  mid: {type: int}\nbuild: [make]\nartifacts: [a]\n"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range m.Options {
		names = append(names, o.Name)
	}
	if strings.Join(names, ",") != "alpha,mid,zeta" {
		t.Errorf("option order = %v, want alpha,mid,zeta", names)
	}
	if _, ok := m.Option("mid"); !ok {
		t.Error("Option(mid) not found")
	}
	if _, ok := m.Option("nope"); ok {
		t.Error("Option(nope) found")
	}
}

func TestDefaultRecipe(t *testing.T) {
	d := Default()
	if !d.Default || !d.InstallTree || d.Timeout != DefaultTimeout || len(d.Options) != 0 || d.Kind != KindMake {
		t.Errorf("Default() = %+v", d)
	}
	if len(d.Build) != 1 || !strings.HasPrefix(d.Build[0], `make -j"$KILN_JOBS" ${CC:+"CC=$CC"}`) {
		t.Errorf("Default().Build = %q", d.Build)
	}
	if len(d.Check) != 1 || !strings.Contains(d.Check[0], " check; fi") {
		t.Errorf("Default().Check = %q", d.Check)
	}
	if len(d.Package) != 1 || !strings.Contains(d.Package[0], `DESTDIR="$KILN_DESTDIR"`) {
		t.Errorf("Default().Package = %q", d.Package)
	}
	d.Build[0] = "changed"
	if Default().Build[0] == "changed" {
		t.Error("Default() shares its slices between calls")
	}
}

func TestRecipeCarriesEveryField(t *testing.T) {
	data, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	r := m.Recipe()
	if r.GetTimeoutSeconds() != 600 || r.GetInstallTree() ||
		strings.Join(r.GetRequires(), ",") != "make,cc" ||
		strings.Join(r.GetBuildSteps(), ";") != `make CFLAGS="-O$KILN_OPT_LEVEL"` ||
		strings.Join(r.GetCheckSteps(), ";") != "make check" ||
		len(r.GetPackageSteps()) != 0 ||
		strings.Join(r.GetArtifacts(), ",") != "hello" || r.GetSummary() != "kiln.yaml" {
		t.Errorf("Recipe() = %v", r)
	}
	d := Default().Recipe()
	if !d.GetInstallTree() || d.GetTimeoutSeconds() != 3600 || len(d.GetBuildSteps()) != 1 || len(d.GetPackageSteps()) != 1 ||
		d.GetSummary() != "make — no configure, configure.ac, meson.build or CMakeLists.txt" {
		t.Errorf("Default().Recipe() = %v", d)
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{"level": "KILN_OPT_LEVEL", "with_x11": "KILN_OPT_WITH_X11"} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}
