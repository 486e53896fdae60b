package acceptance

import (
	"strings"
	"testing"
)

func TestJudgeArtifact_NoELF_Wrong(t *testing.T) {
	c := Cell{Project: "tree", Platform: "s390x"}
	JudgeArtifact(&c, Inspection{})
	if c.Outcome != Wrong || !strings.Contains(c.Reason, "no ELF file") {
		t.Fatalf("got %s %q, want wrong artifact with no ELF file", c.Outcome, c.Reason)
	}
}

func TestJudgeArtifact_Problem_Wrong(t *testing.T) {
	c := Cell{Project: "cjson", Platform: "s390x"}
	JudgeArtifact(&c, Inspection{ELFs: 2, Problems: []string{"lib/libcjson.so.1 is EM_X86_64 64-bit little-endian, s390x needs ..."}})
	if c.Outcome != Wrong || len(c.Problems) != 1 {
		t.Fatalf("got %s %q, want wrong artifact with its problem", c.Outcome, c.Problems)
	}
}

func TestJudgeSharedLibs_CrossWithoutSharedLib_Wrong(t *testing.T) {
	cells := []Cell{
		{Project: "popt", Platform: "native", Outcome: OK, SharedLibs: []string{"usr/local/lib/libpopt.so.0.0.2"}},
		{Project: "popt", Platform: "s390x", Outcome: OK},
		{Project: "popt", Platform: "ppc", Outcome: OK, SharedLibs: []string{"usr/local/lib/libpopt.so.0.0.2"}},
		{Project: "tree", Platform: "native", Outcome: OK},
		{Project: "tree", Platform: "s390x", Outcome: OK},
	}
	JudgeSharedLibs(cells)
	want := []Outcome{OK, Wrong, OK, OK, OK}
	for i, c := range cells {
		if c.Outcome != want[i] {
			t.Errorf("%s/%s: %s, want %s", c.Project, c.Platform, c.Outcome, want[i])
		}
	}
	if !strings.Contains(cells[1].Reason, "libpopt.so.0.0.2") {
		t.Errorf("reason %q does not name the native build's library", cells[1].Reason)
	}
}

func TestReport_WriteMarkdown_TableAndFailures(t *testing.T) {
	r := &Report{
		Projects:  []Project{{Name: "zlib", Package: "zlib", Commit: "0123456789abcdef", Covers: "configure"}},
		Platforms: []string{"native", "s390x"},
		Cells: []Cell{
			{Project: "zlib", Platform: "native", Outcome: OK, BuildID: 1},
			{Project: "zlib", Platform: "s390x", Outcome: Failed, BuildID: 2, Step: "make check", Reason: "step exited | 2", LogTail: "boom"},
		},
	}
	var b strings.Builder
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"**1 of 2 cells succeed (50%)**",
		"| zlib | ✅ | ❌ [build failed](#fail-zlib-s390x) |",
		`<a id="fail-zlib-s390x"></a>`,
		"failing step `make check`. Reason: step exited \\| 2",
		"```text\nboom\n```",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestSymptom_PicksTheErrorNotMakesEcho(t *testing.T) {
	log := []string{
		"gcc -c x.c",
		"../src/x86/sysv.S:1226: Error: junk at end of line, first unrecognized character is `,'",
		"make[3]: *** [Makefile:1296: src/x86/sysv.lo] Error 1",
		"make[3]: Leaving directory '/tmp/b'",
		"make: *** [Makefile:594: all-all] Error 2",
		`[kiln] step "make" exited with status 2`,
	}
	got := Symptom(log)
	want := "../src/x86/sysv.S:1226: Error: junk at end of line, first unrecognized character is `,'"
	if got != want {
		t.Fatalf("Symptom = %q, want %q", got, want)
	}
	if got := Symptom([]string{"./minigzip: not found", "\t\t*** zlib test FAILED ***", "make: *** [Makefile:85: teststatic] Error 1"}); got != "./minigzip: not found · *** zlib test FAILED ***" {
		t.Fatalf("Symptom = %q", got)
	}
	if got := Symptom([]string{"all fine"}); got != "" {
		t.Fatalf("Symptom of a clean log = %q, want empty", got)
	}
}

func TestSymptom_AutomakeSummary_PicksTheFailedTest(t *testing.T) {
	log := []string{
		"libtool: link: ar cr .libs/libjansson.a dump.o error.o hashtable.o",
		"FAIL: run-suites",
		"# TOTAL: 1",
		"# FAIL:  1",
		"# ERROR: 0",
		"See test/test-suite.log",
		"make[4]: *** [Makefile:679: test-suite.log] Error 1",
	}
	if got := Symptom(log); got != "FAIL: run-suites" {
		t.Fatalf("Symptom = %q, want the failed test", got)
	}
}
