package acceptance

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSpliceSection_ReplacesKeepsAndAppends(t *testing.T) {
	doc := "# Acceptance\n\ntable\n"
	one := SpliceSection(doc, "## Repro\n\nfirst\n")
	if !strings.HasPrefix(one, doc) || ReproSection(one) != "## Repro\n\nfirst" {
		t.Fatalf("appended:\n%s", one)
	}
	two := SpliceSection(one, "## Repro\n\nsecond\n")
	if strings.Contains(two, "first") || ReproSection(two) != "## Repro\n\nsecond" || strings.Count(two, reproBegin) != 1 {
		t.Fatalf("replaced:\n%s", two)
	}
	// A full run rewrites the document and keeps the section.
	kept := SpliceSection("# Acceptance\n\nnew table\n", ReproSection(two))
	if !strings.Contains(kept, "new table") || ReproSection(kept) != ReproSection(two) {
		t.Fatalf("kept:\n%s", kept)
	}
	if got := SpliceSection(doc, ""); got != doc {
		t.Errorf("no section: %q", got)
	}
}

// gzTar packs name → content as a gzip-compressed tar.
func gzTar(t *testing.T, files map[string]string, names ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, n := range names {
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n]))})
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func shaOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestCompare_ExplainsADifferenceByTheSidesOwnNames: a file that holds
// side a's data directory where b's holds b's is listed with that
// reason; identical artifacts reproduce.
func TestCompare_ExplainsADifferenceByTheSidesOwnNames(t *testing.T) {
	sides := [2]Side{{Name: "a", DataDir: "/srv/a/data", Hostname: "host-a"}, {Name: "b", DataDir: "/var/lib/kiln-b", Hostname: "host-b"}}
	fa := map[string]string{"lib/x.pc": "prefix=/srv/a/data/sysroot\n", "bin/same": "same"}
	fb := map[string]string{"lib/x.pc": "prefix=/var/lib/kiln-b/sysroot\n", "bin/same": "same"}
	a, b := gzTar(t, fa, "bin/same", "lib/x.pc"), gzTar(t, fb, "bin/same", "lib/x.pc")
	dirA, dirB := t.TempDir(), t.TempDir()
	for dir, files := range map[string]map[string]string{dirA: fa, dirB: fb} {
		for n, c := range files {
			os.MkdirAll(filepath.Join(dir, filepath.Dir(n)), 0o755)
			os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644)
		}
	}
	c := ReproCell{SHA256A: shaOf(a), SHA256B: shaOf(b)}
	Compare(context.Background(), &c, a, b, dirA, dirB, sides)
	if c.Outcome != Differs || c.Total != 1 || len(c.Files) != 1 {
		t.Fatalf("cell %+v, want one differing file", c)
	}
	for _, want := range []string{`"lib/x.pc": content`, `a's holds its data directory ("/srv/a/data")`, `b's holds its data directory ("/var/lib/kiln-b")`} {
		if !strings.Contains(c.Files[0], want) {
			t.Errorf("%q lacks %q", c.Files[0], want)
		}
	}
	same := ReproCell{SHA256A: shaOf(a), SHA256B: shaOf(a)}
	Compare(context.Background(), &same, a, a, dirA, dirA, sides)
	if same.Outcome != Reproduces {
		t.Errorf("identical artifacts: %v", same.Outcome)
	}

	rep := &ReproReport{Sides: sides, Projects: []Project{{Name: "p"}, {Name: "q"}}, Platforms: []string{"native"},
		Cells: []ReproCell{{Project: "p", Platform: "native", Outcome: Reproduces, SHA256A: same.SHA256A}, withNames(c, "q", "native")}}
	var md strings.Builder
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"**1 of 2 cells built on both sides reproduce (50%)**", "| q | ❌ 1 files differ |", "#### q on native: differs", "/var/lib/kiln-b"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
}

func withNames(c ReproCell, project, platform string) ReproCell {
	c.Project, c.Platform = project, platform
	return c
}
