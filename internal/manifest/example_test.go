package manifest_test

import (
	"fmt"
	"maps"
	"slices"

	"github.com/kilnbuild/kiln/internal/manifest"
)

func ExampleParse() {
	m, err := manifest.Parse([]byte(`
options:
  level: {type: int, default: 2}
  debug: {type: bool}
build:
  - make CFLAGS="-O$KILN_OPT_LEVEL"
artifacts: [hello]
timeout: 10m
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	opts, err := m.Normalize(map[string]string{"debug": "yes", "level": "03"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, name := range slices.Sorted(maps.Keys(opts)) {
		fmt.Printf("%s=%s\n", manifest.EnvName(name), opts[name])
	}
	_, err = m.Normalize(map[string]string{"level": "high"})
	fmt.Println(err)
	// Output:
	// KILN_OPT_DEBUG=true
	// KILN_OPT_LEVEL=3
	// option "level" = "high": not a decimal integer
}

func ExampleParse_error() {
	_, err := manifest.Parse([]byte("build: [make]\nartifacts: [hello]\ntiemout: 10m\n"))
	fmt.Println(err)
	// Output:
	// kiln.yaml:3: unknown key "tiemout" (known: requires, depends, options, build, check, package, artifacts, install_tree, timeout)
}
