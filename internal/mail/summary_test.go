package mail

import (
	"strings"
	"testing"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestComposeSummaryListsEveryBuildByOutcome(t *testing.T) {
	x86 := &kilnv1.SystemInfo{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", Libc: "glibc"}
	s390x := &kilnv1.SystemInfo{Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", Libc: "glibc"}
	builds := []*kilnv1.Build{
		{Id: 7, Project: "hello", Revision: "main", State: kilnv1.BuildState_BUILD_STATE_SUCCEEDED, Platform: x86},
		{Id: 8, Project: "hello", Revision: "main", State: kilnv1.BuildState_BUILD_STATE_FAILED, Platform: s390x,
			Failure: "step make exited 2\n<b>boom</b>\x1b[31m", FailingStep: "make"},
		{Id: 9, Project: "hello", Revision: "main", State: kilnv1.BuildState_BUILD_STATE_EXPIRED,
			Constraints: &kilnv1.PlatformConstraints{Arch: "ppc"}, Failure: "no target matches"},
	}
	subject, text, html := ComposeSummary(builds, ComposeOptions{PublicURL: "http://127.0.0.1:8080/"})
	if subject != "[kiln] hello main on 3 platforms : 2 of 3 failed" {
		t.Errorf("subject %q", subject)
	}
	for _, w := range []string{
		"FAILURE (2)\n  build #8 on linux/s390x big LP64 glibc: failed: step make exited 2 <b>boom</b> [31m (step: make)\n    http://127.0.0.1:8080/build/8\n",
		"  build #9 on ", ": expired: no target matches\n",
		"SUCCESS (1)\n  build #7 on linux/x86_64 little LP64 glibc: succeeded\n    http://127.0.0.1:8080/build/7\n",
	} {
		if !strings.Contains(text, w) {
			t.Errorf("text lacks %q:\n%s", w, text)
		}
	}
	if strings.Contains(text, "\x1b") {
		t.Error("a control character in the text")
	}
	if strings.Contains(html, "<b>boom") || !strings.Contains(html, "&lt;b&gt;boom") || !strings.Contains(html, `<a href="http://127.0.0.1:8080/build/8">`) {
		t.Errorf("html:\n%s", html)
	}
	allOK, _, _ := ComposeSummary(builds[:1], ComposeOptions{})
	if allOK != "[kiln] hello main on 1 platforms : all succeeded" {
		t.Errorf("subject %q", allOK)
	}
}
