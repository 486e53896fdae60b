package manifest

import (
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxDepends bounds the projects one manifest may depend on directly; the
// metaserver bounds the whole tree (depth and count) when it resolves it.
const MaxDepends = 16

// Dependency is one entry of depends: a registered project, built for the
// dependent's platform before it, whose artifact is staged read-only in the
// dependent's sandbox.
type Dependency struct {
	// Project is the registered project's name.
	Project string
	// Revision is what to build of it ("v1.2", a branch, a commit); empty:
	// the project's default branch (HEAD), resolved when the dependent is
	// requested.
	Revision string
}

// String writes d as it is written in depends: ("zlib" or "zlib@v1.3").
func (d Dependency) String() string {
	if d.Revision == "" {
		return d.Project
	}
	return d.Project + "@" + d.Revision
}

// dependProjectRE is the metaserver's rule for project names.
var dependProjectRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// maxDependRevisionLen bounds a revision in depends:, like a request's.
const maxDependRevisionLen = 256

func (p *parser) depends(n *yaml.Node) error {
	items, ss, err := list(n, "depends")
	if err != nil {
		return err
	}
	if len(ss) > MaxDepends {
		return errAt(n, "depends: %d projects, at most %d allowed", len(ss), MaxDepends)
	}
	out := make([]Dependency, 0, len(ss))
	for i, s := range ss {
		name, rev, hasRev := strings.Cut(s, "@")
		switch {
		case !dependProjectRE.MatchString(name):
			return errAt(items[i], "depends: %q is not a project name (lower-case letters, digits, '.', '_', '-'; at most 64), optionally followed by @revision", name)
		case hasRev && (rev == "" || len(rev) > maxDependRevisionLen || strings.ContainsAny(rev, " \t\n\x00")):
			return errAt(items[i], "depends: %q: the revision after @ must be 1 to %d characters without spaces", s, maxDependRevisionLen)
		}
		for _, d := range out {
			if d.Project == name {
				return errAt(items[i], "depends: project %q is listed twice", name)
			}
		}
		out = append(out, Dependency{Project: name, Revision: rev})
	}
	p.m.Depends = out
	return nil
}
