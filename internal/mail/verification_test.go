package mail

import (
	"strings"
	"testing"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestComposeSaysWhetherTheArtifactIsVerified(t *testing.T) {
	b := succeededBuild()
	b.Verification = kilnv1.Verification_VERIFICATION_UNVERIFIED
	b.AgreeingBuildServers = []string{"volunteer-1"}
	subject, text, _ := Compose(b, ComposeOptions{})
	for _, want := range []string{"succeeded (unverified)", "verification", "volunteer-1", "--accept unverified"} {
		if !strings.Contains(subject+"\n"+text, want) {
			t.Errorf("unverified mail lacks %q:\n%s\n%s", want, subject, text)
		}
	}
	b.Verification = kilnv1.Verification_VERIFICATION_VERIFIED
	b.AgreeingBuildServers = []string{"volunteer-1", "volunteer-2"}
	subject, text, _ = Compose(b, ComposeOptions{})
	if !strings.Contains(subject, "succeeded (verified)") || !strings.Contains(text, "volunteer-1, volunteer-2") || strings.Contains(text, "--accept") {
		t.Errorf("verified mail:\n%s\n%s", subject, text)
	}
	f := failedBuild()
	f.Verification = kilnv1.Verification_VERIFICATION_NOT_REPRODUCIBLE
	f.DifferingFiles = []string{"share/stamp"}
	subject, text, _ = Compose(f, ComposeOptions{})
	if !strings.Contains(subject, "(not_reproducible)") || !strings.Contains(text, "share/stamp") {
		t.Errorf("not-reproducible mail lacks its words or the differing file:\n%s\n%s", subject, text)
	}
}
