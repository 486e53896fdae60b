package acceptance

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/internal/artifactdiff"
)

// Reproducibility outcomes of one project on one platform.
const (
	// Reproduces: both build servers made the same bytes.
	Reproduces Outcome = "reproduces"
	// Differs: both succeeded, with different artifacts.
	Differs Outcome = "differs"
	// NotBuilt: a build failed on either side, nothing to compare.
	NotBuilt Outcome = "not built"
)

// Side is one of the two build servers of a reproducibility run, what
// differs between them: what a leaked path or name would show.
type Side struct {
	// Name is "a" or "b".
	Name string
	// DataDir is the build server's data directory.
	DataDir string
	// Hostname is the host name it ran under.
	Hostname string
	// BuildUID is the first uid of its --build-uid range.
	BuildUID uint32
}

// ReproCell is one project on one platform built by both build servers.
type ReproCell struct {
	Project, Platform string
	Outcome           Outcome
	// BuildA and BuildB are the builds on each side, SHA256A and SHA256B
	// their artifacts' hashes ("" when it failed).
	BuildA, BuildB   uint64
	SHA256A, SHA256B string
	// Reason says why it was not built, or what artifactdiff found
	// beyond the files (an order difference, an error).
	Reason string
	// Files are the differing files, each with what tells them apart
	// (Explain); at most maxReproFiles.
	Files []string
	// Total counts the differing files (Files may hold fewer).
	Total int
	// Diffoscope is the start of diffoscope's output when it is installed.
	Diffoscope string
}

// maxReproFiles bounds the differing files a cell lists.
const maxReproFiles = 12

// ReproReport is a reproducibility run: every project on every platform
// built on two build servers that differ in data directory, host name
// and build uid.
type ReproReport struct {
	Kiln      string
	Started   time.Time
	Elapsed   time.Duration
	Machine   string
	Sides     [2]Side
	Projects  []Project
	Platforms []string
	Cells     []ReproCell
}

// Reproduced counts the cells that reproduce and those built on both sides.
func (r *ReproReport) Reproduced() (same, built int) {
	for _, c := range r.Cells {
		if c.Outcome != NotBuilt {
			built++
		}
		if c.Outcome == Reproduces {
			same++
		}
	}
	return same, built
}

// Compare fills c's outcome from the two artifacts: Reproduces when
// their sha256 agree, else Differs with the differing files, each
// explained from the unpacked trees dirA and dirB (Explain).
func Compare(ctx context.Context, c *ReproCell, a, b []byte, dirA, dirB string, sides [2]Side) {
	if c.SHA256A == c.SHA256B {
		c.Outcome = Reproduces
		return
	}
	c.Outcome = Differs
	rep, err := artifactdiff.Diff(ctx, bytes.NewReader(a), bytes.NewReader(b), artifactdiff.Limits{MaxDifferences: 1000})
	if err != nil {
		c.Reason = "artifactdiff: " + err.Error()
		return
	}
	c.Total = len(rep.Differences)
	switch {
	case rep.Same():
		c.Reason = "same entries and contents; the archives differ in their encoding"
	case rep.OrderDiffers:
		c.Reason = "same files in another order"
	}
	for _, d := range rep.Differences {
		if len(c.Files) == maxReproFiles {
			break
		}
		line := d.String()
		if d.A != nil && d.B != nil && d.A.SHA256 != d.B.SHA256 {
			line += "; " + Explain(filepath.Join(dirA, d.Path), filepath.Join(dirB, d.Path), sides)
		}
		c.Files = append(c.Files, line)
	}
}

// explainMaxBytes bounds the bytes Explain reads of one file.
const explainMaxBytes = 64 << 20

// Explain says what tells two versions of one file apart: how many bytes
// differ and where the first is, and which of the sides' own names
// (data directory, host name, build uid) each version holds, as that
// side's and not the other's: the usual reasons a build is not
// reproducible.
func Explain(pathA, pathB string, sides [2]Side) string {
	a, errA := readCapped(pathA)
	b, errB := readCapped(pathB)
	if errA != nil || errB != nil {
		return fmt.Sprintf("not compared: %v %v", errA, errB)
	}
	var parts []string
	n, first := 0, -1
	for i := 0; i < min(len(a), len(b)); i++ {
		if a[i] != b[i] {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	if len(a) == len(b) {
		parts = append(parts, fmt.Sprintf("%d bytes differ, the first at offset %d", n, first))
	} else {
		parts = append(parts, fmt.Sprintf("sizes %d and %d, the first difference at offset %d", len(a), len(b), max(first, min(len(a), len(b)))))
	}
	data := [2][]byte{a, b}
	for i, s := range sides {
		other := sides[1-i]
		for _, leak := range []struct{ what, own, others string }{
			{"its data directory", s.DataDir, other.DataDir},
			{"its host name", s.Hostname, other.Hostname},
			{"its build uid", fmt.Sprint(s.BuildUID), fmt.Sprint(other.BuildUID)},
		} {
			if leak.own == "" || leak.own == leak.others || s.BuildUID == 0 && strings.Contains(leak.what, "uid") {
				continue
			}
			if bytes.Contains(data[i], []byte(leak.own)) && !bytes.Contains(data[1-i], []byte(leak.own)) {
				parts = append(parts, fmt.Sprintf("%s's holds %s (%q)", s.Name, leak.what, leak.own))
			}
		}
	}
	return strings.Join(parts, "; ")
}

func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, explainMaxBytes))
}

// Diffoscope runs diffoscope on two artifacts when it is installed
// (bounded in time and output), else returns "".
func Diffoscope(ctx context.Context, a, b string) string {
	bin, err := exec.LookPath("diffoscope")
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "--text", "-", "--max-text-report-size", "20000", a, b).CombinedOutput()
	const keep = 4000
	if len(out) > keep {
		out = append(out[:keep], "\n…"...)
	}
	return string(out)
}

// reproBegin and reproEnd mark the reproducibility section in
// ACCEPTANCE.md: a repro run replaces what is between them, and a full
// run keeps it (SpliceSection).
const (
	reproBegin = "<!-- repro:begin (scripts/acceptance.sh --repro writes this section) -->"
	reproEnd   = "<!-- repro:end -->"
)

// SpliceSection returns doc with the marked reproducibility section
// replaced by section (added at the end when doc has none; removed when
// section is "").
func SpliceSection(doc, section string) string {
	block := ""
	if section != "" {
		block = reproBegin + "\n" + strings.TrimRight(section, "\n") + "\n" + reproEnd + "\n"
	}
	i := strings.Index(doc, reproBegin)
	j := strings.Index(doc, reproEnd)
	if i >= 0 && j > i {
		return doc[:i] + block + strings.TrimPrefix(doc[j+len(reproEnd):], "\n")
	}
	if block == "" {
		return doc
	}
	if doc != "" && !strings.HasSuffix(doc, "\n\n") {
		doc = strings.TrimRight(doc, "\n") + "\n\n"
	}
	return doc + block
}

// ReproSection returns the marked section of doc ("" when it has none).
func ReproSection(doc string) string {
	i := strings.Index(doc, reproBegin)
	j := strings.Index(doc, reproEnd)
	if i < 0 || j < i {
		return ""
	}
	return strings.TrimSpace(doc[i+len(reproBegin) : j])
}

// cell returns the cell of project on platform, nil when not run.
func (r *ReproReport) cell(project, platform string) *ReproCell {
	for i := range r.Cells {
		if r.Cells[i].Project == project && r.Cells[i].Platform == platform {
			return &r.Cells[i]
		}
	}
	return nil
}

// WriteMarkdown writes the report as the reproducibility section of
// ACCEPTANCE.md.
func (r *ReproReport) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	same, built := r.Reproduced()
	pct := 0.0
	if built > 0 {
		pct = 100 * float64(same) / float64(built)
	}
	b.WriteString("## Reproducibility: two build servers, one artifact\n\n")
	fmt.Fprintf(&b, "**%d of %d cells built on both sides reproduce (%.0f%%)**, bit for bit (the artifacts' sha256).\n\n", same, built, pct)
	fmt.Fprintf(&b, "Run of %s, Kiln %s, on %s; it took %s. ", r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Kiln, r.Machine, r.Elapsed.Round(time.Second))
	b.WriteString("Produced by `scripts/acceptance.sh --repro` (TestAcceptanceRepro): two farms, each a metaserver and one build server, " +
		"build every cell from the same commit with the default recipe, side b after side a. The two build servers differ as two volunteers' would:\n\n")
	b.WriteString("| side | data directory | host name | build uids from |\n|---|---|---|---|\n")
	for _, s := range r.Sides {
		fmt.Fprintf(&b, "| %s | `%s` | `%s` | %d |\n", s.Name, s.DataDir, s.Hostname, s.BuildUID)
	}
	b.WriteString("\nCommits built: ")
	for i, p := range r.Projects {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s `%.12s`", p.Name, p.Commit)
	}
	b.WriteString(".\n")
	b.WriteString("\nA differing cell lists its differing files (internal/artifactdiff: content, mode, owner, time, link), " +
		"each with how many bytes differ and which side's own names it holds.\n\n")
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
			case c.Outcome == Reproduces:
				fmt.Fprintf(&b, " ✅ `%.12s` |", c.SHA256A)
			case c.Outcome == Differs:
				fmt.Fprintf(&b, " ❌ %d files differ |", c.Total)
			default:
				fmt.Fprintf(&b, " – %s |", c.Outcome)
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n### What breaks the others\n")
	n := 0
	for _, p := range r.Projects {
		for _, pl := range r.Platforms {
			c := r.cell(p.Name, pl)
			if c == nil || c.Outcome == Reproduces {
				continue
			}
			n++
			fmt.Fprintf(&b, "\n#### %s on %s: %s\n\n", p.Name, pl, c.Outcome)
			fmt.Fprintf(&b, "Builds %s and %s", buildRef(c.BuildA), buildRef(c.BuildB))
			if c.SHA256A != "" || c.SHA256B != "" {
				fmt.Fprintf(&b, ", artifacts `%.12s` and `%.12s`", orDash(c.SHA256A), orDash(c.SHA256B))
			}
			b.WriteString(".")
			if c.Reason != "" {
				fmt.Fprintf(&b, " %s", mdEscape(c.Reason))
			}
			b.WriteString("\n")
			if len(c.Files) > 0 {
				b.WriteString("\n")
			}
			for _, f := range c.Files {
				fmt.Fprintf(&b, "- %s\n", mdEscape(f))
			}
			if c.Total > len(c.Files) {
				fmt.Fprintf(&b, "- … and %d more\n", c.Total-len(c.Files))
			}
			if c.Diffoscope != "" {
				fmt.Fprintf(&b, "\n```text\n%s\n```\n", strings.TrimRight(strings.ReplaceAll(c.Diffoscope, "```", "'''"), "\n"))
			}
		}
	}
	if n == 0 {
		b.WriteString("\nNothing: every cell built on both sides reproduces.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
