package acceptance

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Project is one row of the suite: an upstream tree imported by
// scripts/acceptance.sh.
type Project struct {
	// Name is the registered project's name ("zlib").
	Name string
	// Package is the Debian source package it comes from ("zlib").
	Package string
	// Dir is the git repository the script made.
	Dir string
	// Covers says what the project exercises (shown in the report).
	Covers string
	// Commit is the repository's HEAD, the revision built.
	Commit string
}

// Outcome classifies a cell.
type Outcome string

// The outcomes of a cell. Only OK counts as a success.
const (
	OK Outcome = "ok"
	// Failed: the build failed (a step exited non-zero, a limit was hit).
	Failed Outcome = "build failed"
	// Wrong: the build succeeded but its artifact is wrong for the
	// platform (ELF check, no ELF file, no shared library).
	Wrong Outcome = "wrong artifact"
	// Refused: the metaserver refused the request (e.g. a kiln.yaml it
	// cannot parse).
	Refused Outcome = "refused"
	// NoTarget: the build server does not offer the platform.
	NoTarget Outcome = "no target"
	// Broken: the harness or the farm failed (timeout, exit 3).
	Broken Outcome = "infrastructure"
)

// Cell is one project on one platform.
type Cell struct {
	Project, Platform string
	Outcome           Outcome
	BuildID           uint64
	// Reason is one line: why the cell failed ("" when OK).
	Reason string
	// Problems are the artifact's faults, one per line (ELF check).
	Problems []string
	// Step is the failing step, when the build reported one.
	Step string
	// Symptom is the log's own word for what went wrong (Symptom).
	Symptom string
	// LogTail is the end of the build's log, for failures.
	LogTail string
	// Recipe is the default recipe chosen and why ("cmake — found
	// CMakeLists.txt"), or "kiln.yaml".
	Recipe string
	// Target is the build server target that built it.
	Target string
	// BuildTime is the last attempt's duration (0 when unknown).
	BuildTime time.Duration
	// ELFs and SharedLibs summarise the artifact.
	ELFs       int
	SharedLibs []string
}

// Report is a run of the suite.
type Report struct {
	// Note is a paragraph put under the title (e.g. "Baseline: ...").
	Note string
	// Kiln is the revision of Kiln that ran ("git describe").
	Kiln      string
	Started   time.Time
	Elapsed   time.Duration
	Machine   string
	Projects  []Project
	Platforms []string
	Cells     []Cell
}

// cell returns the cell of project on platform, nil when not run.
func (r *Report) cell(project, platform string) *Cell {
	for i := range r.Cells {
		if r.Cells[i].Project == project && r.Cells[i].Platform == platform {
			return &r.Cells[i]
		}
	}
	return nil
}

// Passed counts the cells that succeeded and the cells run.
func (r *Report) Passed() (ok, total int) {
	for _, c := range r.Cells {
		total++
		if c.Outcome == OK {
			ok++
		}
	}
	return ok, total
}

// anchor is the id of a failed cell's section.
func anchor(project, platform string) string {
	return "fail-" + project + "-" + platform
}

// WriteMarkdown writes the report as ACCEPTANCE.md.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	ok, total := r.Passed()
	b.WriteString("# Kiln acceptance: real projects on every platform\n\n")
	if r.Note != "" {
		b.WriteString(r.Note + "\n\n")
	}
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(ok) / float64(total)
	}
	fmt.Fprintf(&b, "**%d of %d cells succeed (%.0f%%)**; the target is at least 90%%, every failure the project's own, and no success with a wrong-architecture artifact.\n\n", ok, total, pct)
	fmt.Fprintf(&b, "Run of %s, Kiln %s, on %s; the suite took %s. ", r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Kiln, r.Machine, r.Elapsed.Round(time.Second))
	b.WriteString("Produced by `make acceptance` (scripts/acceptance.sh, internal/acceptance): each project is the upstream tree of a Debian 12 source package " +
		"(`apt-get source`: upstream's tarball with Debian's patches, debian/ removed), a git repository without kiln.yaml, built by a real farm with the default recipe " +
		"and its own tests on one buildserver offering every target below. A cell succeeds when the build succeeded, the artifact holds an ELF file, " +
		"every ELF file in it (static archives' members included) has the platform's machine, class, byte order and ABI, and it has a shared library " +
		"when the project's native build has one.\n\n")

	b.WriteString("| project | ")
	b.WriteString(strings.Join(r.Platforms, " | "))
	b.WriteString(" |\n|---|")
	b.WriteString(strings.Repeat("---|", len(r.Platforms)))
	b.WriteString("\n")
	for _, p := range r.Projects {
		fmt.Fprintf(&b, "| %s |", p.Name)
		for _, pl := range r.Platforms {
			c := r.cell(p.Name, pl)
			switch {
			case c == nil:
				b.WriteString(" – |")
			case c.Outcome == OK:
				b.WriteString(" ✅ |")
			default:
				fmt.Fprintf(&b, " ❌ [%s](#%s) |", c.Outcome, anchor(p.Name, pl))
			}
		}
		b.WriteString("\n")
	}

	b.WriteString("\n## Projects\n\n| project | Debian source | commit | what it exercises |\n|---|---|---|---|\n")
	for _, p := range r.Projects {
		fmt.Fprintf(&b, "| %s | %s | %.12s | %s |\n", p.Name, p.Package, p.Commit, p.Covers)
	}

	b.WriteString("\n## Cells\n\n| project | platform | outcome | build | target | build time | ELF files | shared libraries | recipe |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range r.Projects {
		for _, pl := range r.Platforms {
			c := r.cell(p.Name, pl)
			if c == nil {
				continue
			}
			bt := "–"
			if c.BuildTime > 0 {
				bt = c.BuildTime.Round(time.Second).String()
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %d | %d | %s |\n", p.Name, pl, c.Outcome, buildRef(c.BuildID),
				orDash(c.Target), bt, c.ELFs, len(c.SharedLibs), orDash(mdEscape(c.Recipe)))
		}
	}

	b.WriteString("\n## Failures\n")
	failures := 0
	for _, p := range r.Projects {
		for _, pl := range r.Platforms {
			c := r.cell(p.Name, pl)
			if c == nil || c.Outcome == OK {
				continue
			}
			failures++
			fmt.Fprintf(&b, "\n<a id=\"%s\"></a>\n### %s on %s: %s\n\n", anchor(p.Name, pl), p.Name, pl, c.Outcome)
			if c.BuildID != 0 {
				fmt.Fprintf(&b, "Build %d", c.BuildID)
				if c.Step != "" {
					fmt.Fprintf(&b, ", failing step `%s`", strings.ReplaceAll(c.Step, "`", "'"))
				}
				b.WriteString(". ")
			}
			fmt.Fprintf(&b, "Reason: %s\n", mdEscape(c.Reason))
			if c.Symptom != "" {
				fmt.Fprintf(&b, "\nSymptom: `%s`\n", strings.ReplaceAll(c.Symptom, "`", "'"))
			}
			for _, prob := range c.Problems {
				fmt.Fprintf(&b, "- %s\n", mdEscape(prob))
			}
			if c.LogTail != "" {
				fmt.Fprintf(&b, "\n```text\n%s\n```\n", strings.TrimRight(strings.ReplaceAll(c.LogTail, "```", "'''"), "\n"))
			}
		}
	}
	if failures == 0 {
		b.WriteString("\nNone.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func buildRef(id uint64) string {
	if id == 0 {
		return "–"
	}
	return fmt.Sprint(id)
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// mdEscape keeps one line of text from breaking a table or a list.
func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "|", "\\|")
}
