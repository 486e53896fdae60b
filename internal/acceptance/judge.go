package acceptance

import (
	"fmt"
	"path"
	"regexp"
	"strings"
)

// JudgeArtifact turns a succeeded build's inspection into the cell's
// outcome: Wrong when an ELF file does not fit the platform or the artifact
// holds no ELF file at all, OK otherwise.
func JudgeArtifact(c *Cell, in Inspection) {
	c.ELFs, c.SharedLibs = in.ELFs, in.SharedLibs
	switch {
	case len(in.Problems) > 0:
		c.Outcome = Wrong
		c.Reason = fmt.Sprintf("%d ELF file(s) do not fit %s", len(in.Problems), c.Platform)
		c.Problems = limitLines(in.Problems, 20)
	case in.ELFs == 0:
		c.Outcome = Wrong
		c.Reason = "the artifact holds no ELF file: nothing built was installed"
	default:
		c.Outcome = OK
	}
}

// JudgeSharedLibs marks Wrong every succeeded cell without a shared library
// whose project's native build has one (libtool that believed the host was
// another machine turns shared libraries off).
func JudgeSharedLibs(cells []Cell) {
	native := map[string][]string{}
	for _, c := range cells {
		if c.Platform == "native" && c.Outcome == OK && len(c.SharedLibs) > 0 {
			native[c.Project] = c.SharedLibs
		}
	}
	for i := range cells {
		c := &cells[i]
		libs := native[c.Project]
		if c.Outcome != OK || c.Platform == "native" || len(libs) == 0 || len(c.SharedLibs) > 0 {
			continue
		}
		names := make([]string, len(libs))
		for j, l := range libs {
			names[j] = path.Base(l)
		}
		c.Outcome = Wrong
		c.Reason = "no shared library in the artifact; the native build has " + strings.Join(limitLines(names, 5), ", ")
	}
}

// limitLines keeps the first n lines and says how many were left out.
func limitLines(lines []string, n int) []string {
	if len(lines) <= n {
		return lines
	}
	out := append([]string(nil), lines[:n]...)
	return append(out, fmt.Sprintf("… and %d more", len(lines)-n))
}

// symptomPattern matches log lines that say what went wrong.
var symptomPattern = regexp.MustCompile(`(?i)(\berror\b[^.]|cannot|can't|not found|no such file|\bfailed\b|^FAIL\b|exec format|undefined reference|no targets specified|\*\*\*|segmentation fault|timed out)`)

// noisePattern matches lines that only echo a failure reported above them
// (recursive make's bookkeeping, Kiln's own step summary, automake's test
// summary counts such as "# ERROR: 0").
var noisePattern = regexp.MustCompile(`^(\[kiln\]|make(\[\d+\])?: (\*\*\* \[|Leaving|Entering)|make(\[\d+\])?: \*\*\* .*Error \d+$|# [A-Z]+: +\d+$)`)

// Symptom picks, from a failed build's log, the last two distinct lines
// that say what went wrong, in log order ("" when none does).
func Symptom(lines []string) string {
	var picked []string
	for i := len(lines) - 1; i >= 0 && len(picked) < 2; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || noisePattern.MatchString(l) || !symptomPattern.MatchString(l) {
			continue
		}
		if len(picked) > 0 && picked[0] == l {
			continue
		}
		picked = append([]string{l}, picked...)
	}
	return strings.Join(picked, " · ")
}
