package web

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// matrixFields are the fields that make two builds' platforms distinct
// columns of a project's matrix: what startcompile pins by default and
// check builds one request for (os, arch, endian, data_model, libc).
var matrixFields = platform.DefaultPinnedFields

// maxMatrixCommits bounds the rows of a project's matrix: the commits of
// its most recent builds.
const maxMatrixCommits = 12

// matrix is a project's recent builds arranged by commit and platform,
// with each platform's history. It is computed from builds alone (newest
// first, as ListBuilds returns them), so it knows the order builds were
// asked for, not the order of the commits in the repository.
type matrix struct {
	Platforms []platformColumn `json:"platforms"`
	Commits   []commitRow      `json:"commits"`
}

// platformColumn is one platform of a project: a column of the matrix.
type platformColumn struct {
	// Platform names the column: the matrixFields values joined, "any"
	// for a field a queued build left free ("linux x86_64 little LP64 glibc").
	Platform string `json:"platform"`
	// Constraints are the matrixFields values, the fields "any" omitted.
	Constraints map[string]string `json:"constraints"`
	// State is "succeeded" or "failed" after the newest build on the
	// platform that ended so, "" when none did.
	State string `json:"state"`
	// LastSuccess is the newest SUCCEEDED build; BrokenSince, set when the
	// newest final build FAILED, is the oldest FAILED build since the last
	// success (or ever): "broken since commit X". Builds that ended in
	// ERROR, CANCELLED or EXPIRED say nothing of the project and are
	// skipped.
	LastSuccess *buildRef `json:"last_success"`
	BrokenSince *buildRef `json:"broken_since"`
	// Command is the startcompile line that builds the project there.
	Command string `json:"command"`
}

// Broken reports whether the platform's newest final build failed.
func (c platformColumn) Broken() bool { return c.BrokenSince != nil }

// buildRef points at one build from a project page.
type buildRef struct {
	BuildID uint64 `json:"build_id"`
	Commit  string `json:"commit"`
	// At is when the build finished (created, when it never finished).
	At  *time.Time `json:"at"`
	URL string     `json:"url"`
}

// commitRow is one commit of the matrix: a cell per platform column.
type commitRow struct {
	Commit string `json:"commit"`
	// Revision is how the newest build of the commit was asked for.
	Revision string       `json:"revision"`
	Cells    []matrixCell `json:"cells"`
}

// matrixCell is the newest build of one commit on one platform; the zero
// cell means none.
type matrixCell struct {
	BuildID uint64 `json:"build_id,omitempty"`
	State   string `json:"state,omitempty"`
	// Cached is true when the build's artifact is in the cache: SUCCEEDED,
	// with a cache key, not withdrawn. A request for the same commit,
	// options and platform is answered at once.
	Cached bool   `json:"cached"`
	URL    string `json:"url,omitempty"`
	// Builds counts the builds of the commit on the platform (other
	// options, retries by other requesters).
	Builds int `json:"builds"`
}

// platformKey returns the column of build b: its built platform once
// dispatched, else what its requester pinned.
func platformKey(b *kilnv1.Build) (string, map[string]string) {
	vals := make([]string, 0, len(matrixFields))
	c := map[string]string{}
	for _, f := range matrixFields {
		v := platform.Get(b.GetConstraints(), f)
		if b.GetPlatform() != nil {
			v = platform.Value(b.GetPlatform(), f)
		}
		if v == "" {
			v = platform.Any
		} else {
			c[f] = v
		}
		vals = append(vals, v)
	}
	return strings.Join(vals, " "), c
}

// systemKey is platformKey of a target's system info.
func systemKey(si *kilnv1.SystemInfo) string {
	key, _ := platformKey(&kilnv1.Build{Platform: si})
	return key
}

// newMatrix arranges builds (one project's, newest first) by platform and
// commit. Columns are sorted by name, rows keep the builds' order.
func newMatrix(project string, builds []*kilnv1.Build) matrix {
	col := map[string]int{}
	var cols []platformColumn
	keys := make([]string, len(builds))
	for i, b := range builds {
		key, c := platformKey(b)
		keys[i] = key
		if _, ok := col[key]; !ok {
			col[key] = len(cols)
			cols = append(cols, platformColumn{Platform: key, Constraints: c, Command: submitCommand(project, c)})
		}
	}
	slices.SortFunc(cols, func(a, b platformColumn) int { return strings.Compare(a.Platform, b.Platform) })
	for i, c := range cols {
		col[c.Platform] = i
	}
	// Newest first: the first SUCCEEDED or FAILED build per platform sets
	// State; failures then walk BrokenSince back until a success.
	settled := make([]bool, len(cols))
	for i, b := range builds {
		n := col[keys[i]]
		c := &cols[n]
		switch st := b.GetState(); {
		case settled[n]:
		case st == kilnv1.BuildState_BUILD_STATE_SUCCEEDED:
			if c.State == "" {
				c.State = st.Word()
			}
			c.LastSuccess = newBuildRef(b)
			settled[n] = true
		case st == kilnv1.BuildState_BUILD_STATE_FAILED:
			c.State = st.Word()
			c.BrokenSince = newBuildRef(b)
		}
	}

	var rows []commitRow
	row := map[string]int{}
	for i, b := range builds {
		commit := b.GetCommit()
		r, ok := row[commit]
		if !ok {
			if len(rows) == maxMatrixCommits {
				continue
			}
			r = len(rows)
			row[commit] = r
			rows = append(rows, commitRow{Commit: commit, Revision: b.GetRevision(), Cells: make([]matrixCell, len(cols))})
		}
		cell := &rows[r].Cells[col[keys[i]]]
		cell.Builds++
		if cell.BuildID == 0 {
			*cell = matrixCell{BuildID: b.GetId(), State: b.GetState().Word(), Cached: isCached(b), URL: buildURL(b.GetId()), Builds: 1}
		}
	}
	return matrix{Platforms: cols, Commits: rows}
}

// isCached reports whether b's artifact answers requests from the cache.
func isCached(b *kilnv1.Build) bool {
	return b.GetState() == kilnv1.BuildState_BUILD_STATE_SUCCEEDED && b.GetCacheKey() != "" && b.GetWithdrawn() == ""
}

func newBuildRef(b *kilnv1.Build) *buildRef {
	ts := b.GetFinishedAt()
	if ts == nil {
		ts = b.GetCreatedAt()
	}
	ref := &buildRef{BuildID: b.GetId(), Commit: b.GetCommit(), URL: buildURL(b.GetId())}
	if ts != nil {
		t := ts.AsTime().UTC()
		ref.At = &t
	}
	return ref
}

func buildURL(id uint64) string { return "/build/" + strconv.FormatUint(id, 10) }

// projectURL is the page of project name.
func projectURL(name string) string { return "/project/" + url.PathEscape(name) }

// submitCommand is the startcompile line that requests a build of project
// on the platform c pins (matrixFields; nil pins nothing beyond the
// defaults, which are the requester's own machine).
func submitCommand(project string, c map[string]string) string {
	parts := []string{"startcompile", "--project", shellQuote(project)}
	for _, f := range matrixFields {
		if v, ok := c[f]; ok {
			parts = append(parts, "--"+platform.FlagName(f), shellQuote(v))
		}
	}
	return strings.Join(append(parts, "YOUR_EMAIL"), " ")
}

// checkCommand is the startcompile line that builds project on every
// connected platform.
func checkCommand(project string) string {
	return "startcompile check --project " + shellQuote(project) + " YOUR_EMAIL"
}

// shellQuote quotes s for a POSIX shell unless it is made of characters
// no shell treats specially.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-/=:,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
