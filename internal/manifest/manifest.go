package manifest

import (
	"slices"
	"strings"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// FileName is the manifest's name at the root of a project's tree.
const FileName = "kiln.yaml"

// Limits of a manifest and of the options a request may carry.
const (
	MaxFileSize       = 64 << 10 // bytes of kiln.yaml
	MaxOptions        = 64       // declared options, and options in one request
	MaxOptionNameLen  = 32       // bytes of an option name
	MaxOptionValueLen = 256      // bytes of an option value (and of a choice)
	MaxSteps          = 64       // steps in each of build, check and package
	MaxDescriptionLen = 1024     // bytes of an option's description
	MinTimeout        = time.Second
	MaxTimeout        = 24 * time.Hour
	DefaultTimeout    = time.Hour
)

// Manifest is a parsed kiln.yaml, or the default recipe.
type Manifest struct {
	// Requires names tools the build needs on the target, in the order
	// written (e.g. "make", "cc").
	Requires []string
	// Depends are the projects this one builds against (kiln.yaml
	// depends:), in the order written; none for the default recipe.
	Depends []Dependency `json:",omitempty"`
	// Options are the declared compile options, sorted by name.
	Options []Option
	// Build, Check and Package are shell commands run with sh -c in the
	// build directory, in this order; Build has at least one step.
	Build, Check, Package []string
	// Artifacts are slash-separated paths or globs relative to the build
	// directory that make the artifact; empty when InstallTree is set.
	Artifacts []string
	// InstallTree makes the artifact the whole tree under $KILN_DESTDIR.
	InstallTree bool
	// Timeout is the wall-time limit for the whole build.
	Timeout time.Duration
	// Default is true for the default recipe ([Detect]), used when a
	// project has no kiln.yaml.
	Default bool
	// Kind and Why are, for the default recipe, the build system Detect
	// recognised (KindCMake, ...) and what it found ("found
	// CMakeLists.txt"); empty for a kiln.yaml.
	Kind, Why string
}

// Default returns the default recipe of a tree whose files are not known:
// Detect(nil), the make recipe (make, make check if the Makefile has a check
// target, make install into $KILN_DESTDIR if it has an install target, whose
// tree is the artifact). It declares no options. Each call returns a new
// value.
func Default() *Manifest { return Detect(nil) }

// Option returns the declared option called name.
func (m *Manifest) Option(name string) (Option, bool) {
	i, ok := slices.BinarySearchFunc(m.Options, name, func(o Option, n string) int {
		return strings.Compare(o.Name, n)
	})
	if !ok {
		return Option{}, false
	}
	return m.Options[i], true
}

// Recipe returns the manifest as the wire's recipe. The slices are copies.
func (m *Manifest) Recipe() *kilnv1.Recipe {
	return &kilnv1.Recipe{
		BuildSteps:     slices.Clone(m.Build),
		CheckSteps:     slices.Clone(m.Check),
		PackageSteps:   slices.Clone(m.Package),
		Artifacts:      slices.Clone(m.Artifacts),
		InstallTree:    m.InstallTree,
		TimeoutSeconds: uint32(m.Timeout / time.Second),
		Requires:       slices.Clone(m.Requires),
		Summary:        m.Summary(),
	}
}

// EnvName returns the environment variable through which build steps see
// an option: "KILN_OPT_" and the option's name in upper case ("level" gives
// KILN_OPT_LEVEL).
func EnvName(option string) string {
	return "KILN_OPT_" + strings.ToUpper(option)
}
