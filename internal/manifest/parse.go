package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

var requireRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)

// Parse reads a kiln.yaml. It accepts exactly the documented format (see
// docs/manifest.md) and fails with a *[ParseError] naming the line of the
// first problem: a syntax error, an unknown or duplicate key, a value of the
// wrong shape, an invalid option declaration, no build step, an artifact
// path that is absolute or climbs out with "..", an invalid timeout, a file
// larger than MaxFileSize. Omitted fields take their defaults: no options,
// no check or package steps, a one-hour timeout.
func Parse(data []byte) (*Manifest, error) {
	if len(data) > MaxFileSize {
		return nil, &ParseError{Msg: fmt.Sprintf("file is %d bytes, larger than the %d-byte limit", len(data), MaxFileSize)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ParseError{Msg: "file is empty: at least one build step is required"}
		}
		return nil, syntaxError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return nil, syntaxError(err)
		}
		return nil, &ParseError{Line: line, Msg: "only one YAML document is allowed (remove the \"---\")"}
	}
	p := &parser{m: &Manifest{Timeout: DefaultTimeout}}
	if err := p.document(&doc); err != nil {
		return nil, err
	}
	return p.m, nil
}

// yamlLineRE finds the line number in the YAML library's syntax errors,
// which carry it only in their text.
var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func syntaxError(err error) *ParseError {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &ParseError{Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return &ParseError{Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// parser walks the YAML node tree into a Manifest.
type parser struct {
	m *Manifest
}

func errAt(n *yaml.Node, format string, args ...any) *ParseError {
	return &ParseError{Line: n.Line, Msg: fmt.Sprintf(format, args...)}
}

// kindName names a node's shape for error messages.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "empty"
		}
		return "a single value"
	case yaml.AliasNode:
		return "an alias"
	}
	return "something else"
}

// mapping checks that n is a mapping without aliases or duplicate keys and
// calls field for each key in order; field reports unknown keys.
func mapping(n *yaml.Node, what string, field func(key string, k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return errAt(n, "%s must be a mapping of keys to values, not %s", what, kindName(n))
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return errAt(k, "%s: keys must be plain words", what)
		}
		if first, dup := seen[k.Value]; dup {
			return errAt(k, "%s: key %q appears twice (first on line %d)", what, k.Value, first)
		}
		seen[k.Value] = k.Line
		if err := noAliases(v); err != nil {
			return err
		}
		if err := field(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

// noAliases refuses anchors and aliases anywhere below n: they make a
// manifest harder to read and allow exponential expansion.
func noAliases(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return errAt(n, "YAML anchors and aliases (& and *) are not supported")
	}
	for _, c := range n.Content {
		if err := noAliases(c); err != nil {
			return err
		}
	}
	return nil
}

// scalar returns the text of a single value; null counts as absent.
func scalar(n *yaml.Node, what string) (string, bool, error) {
	if n.Kind != yaml.ScalarNode {
		return "", false, errAt(n, "%s must be a single value, not %s", what, kindName(n))
	}
	switch n.Tag {
	case "!!null":
		return "", false, nil
	case "!!str", "!!int", "!!float", "!!bool":
		return n.Value, true, nil
	}
	return "", false, errAt(n, "%s: YAML tag %s is not supported", what, n.Tag)
}

// list returns the texts of a list of single values, each required
// non-blank.
func list(n *yaml.Node, what string) ([]*yaml.Node, []string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, nil, errAt(n, "%s must be a list, not %s", what, kindName(n))
	}
	out := make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		s, ok, err := scalar(item, fmt.Sprintf("%s item %d", what, i+1))
		if err != nil {
			return nil, nil, err
		}
		if !ok || strings.TrimSpace(s) == "" {
			return nil, nil, errAt(item, "%s item %d is empty", what, i+1)
		}
		out = append(out, s)
	}
	return n.Content, out, nil
}

func (p *parser) document(doc *yaml.Node) error {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return &ParseError{Msg: "file is empty: at least one build step is required"}
	}
	top := doc.Content[0]
	if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
		return &ParseError{Line: top.Line, Msg: "file is empty: at least one build step is required"}
	}
	var artifactsLine, installLine int
	err := mapping(top, "the manifest", func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "requires":
			err = p.requires(v)
		case "options":
			err = p.options(v)
		case "build":
			p.m.Build, err = steps(v, key)
		case "check":
			p.m.Check, err = steps(v, key)
		case "package":
			p.m.Package, err = steps(v, key)
		case "artifacts":
			artifactsLine = k.Line
			err = p.artifacts(v)
		case "install_tree":
			installLine = k.Line
			err = p.installTree(v)
		case "timeout":
			err = p.timeout(v)
		case "depends":
			err = p.depends(v)
		default:
			err = errAt(k, "unknown key %q (known: requires, depends, options, build, check, package, artifacts, install_tree, timeout)", key)
		}
		return err
	})
	if err != nil {
		return err
	}
	switch {
	case len(p.m.Build) == 0:
		return &ParseError{Line: top.Line, Msg: "build: at least one build step is required"}
	case p.m.InstallTree && len(p.m.Artifacts) > 0:
		return &ParseError{Line: artifactsLine, Msg: "artifacts: not allowed with install_tree: true (the artifact is then the whole $KILN_DESTDIR tree)"}
	case !p.m.InstallTree && len(p.m.Artifacts) == 0:
		return &ParseError{Line: max(installLine, top.Line), Msg: "artifacts: at least one artifact path is required (or install_tree: true)"}
	}
	return nil
}

func steps(n *yaml.Node, what string) ([]string, error) {
	items, ss, err := list(n, what)
	if err != nil {
		return nil, err
	}
	if len(ss) > MaxSteps {
		return nil, errAt(n, "%s: %d steps, at most %d allowed", what, len(ss), MaxSteps)
	}
	for i, s := range ss {
		if strings.ContainsRune(s, 0) {
			return nil, errAt(items[i], "%s item %d contains a NUL character", what, i+1)
		}
	}
	return ss, nil
}

func (p *parser) requires(n *yaml.Node) error {
	items, ss, err := list(n, "requires")
	if err != nil {
		return err
	}
	for i, s := range ss {
		if !requireRE.MatchString(s) {
			return errAt(items[i], "requires: %q is not a tool name (letters, digits, '.', '_', '+', '-'; at most 64)", s)
		}
		if j := slices.Index(ss[:i], s); j >= 0 {
			return errAt(items[i], "requires: %q is listed twice", s)
		}
	}
	p.m.Requires = ss
	return nil
}

func (p *parser) artifacts(n *yaml.Node) error {
	items, ss, err := list(n, "artifacts")
	if err != nil {
		return err
	}
	for i, s := range ss {
		if err := checkArtifact(s); err != nil {
			return errAt(items[i], "artifacts: %q %s", s, err)
		}
		if slices.Contains(ss[:i], s) {
			return errAt(items[i], "artifacts: %q is listed twice", s)
		}
	}
	p.m.Artifacts = ss
	return nil
}

// checkArtifact accepts clean relative slash-separated paths and globs that
// stay inside the build directory.
func checkArtifact(s string) error {
	if err := checkText(s); err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(s, "/"):
		return errors.New("is absolute: artifact paths are relative to the build directory")
	case slices.Contains(strings.Split(s, "/"), ".."):
		return errors.New("climbs out of the build directory with \"..\"")
	case strings.Contains(s, `\`):
		return errors.New(`contains a backslash: use "/" and plain names`)
	case s == "." || path.Clean(s) != s:
		return fmt.Errorf("is not a clean path (write %q)", path.Clean(s))
	}
	if _, err := path.Match(s, ""); err != nil {
		return errors.New("is not a valid glob pattern")
	}
	return nil
}

func (p *parser) installTree(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		return errAt(n, "install_tree must be true or false")
	}
	p.m.InstallTree = n.Value == "true" || n.Value == "True" || n.Value == "TRUE"
	return nil
}

func (p *parser) timeout(n *yaml.Node) error {
	s, ok, err := scalar(n, "timeout")
	if err != nil {
		return err
	}
	if !ok {
		return errAt(n, "timeout is empty (write a duration such as 10m or 1h30m)")
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return errAt(n, "timeout %q is not a duration such as 10m or 1h30m", s)
	}
	switch {
	case d < MinTimeout || d > MaxTimeout:
		return errAt(n, "timeout %s is out of range (%s to %s)", s, shortDuration(MinTimeout), shortDuration(MaxTimeout))
	case d%time.Second != 0:
		return errAt(n, "timeout %s is not a whole number of seconds", s)
	}
	p.m.Timeout = d
	return nil
}

// shortDuration writes d without zero minutes and seconds ("24h", not
// "24h0m0s").
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
