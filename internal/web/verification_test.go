package web

import (
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestBuildView_OffersOnlyAVerifiedArtifact(t *testing.T) {
	for _, tc := range []struct {
		v        kilnv1.Verification
		word     string
		artifact bool
	}{
		{kilnv1.Verification_VERIFICATION_VERIFIED, "verified", true},
		{kilnv1.Verification_VERIFICATION_UNVERIFIED, "unverified", false},
		{kilnv1.Verification_VERIFICATION_DISPUTED, "disputed", false},
		{kilnv1.Verification_VERIFICATION_NOT_REPRODUCIBLE, "not_reproducible", false},
		{kilnv1.Verification_VERIFICATION_UNSPECIFIED, "", false},
	} {
		t.Run(tc.word, func(t *testing.T) {
			b := &kilnv1.Build{Id: 7, Project: "hello", State: kilnv1.BuildState_BUILD_STATE_SUCCEEDED, Verification: tc.v,
				Artifact: &kilnv1.Artifact{Sha256: "ab", Size: 1}, AgreeingBuildServers: []string{"a1"}}
			v := newBuildView(b, time.Now())
			if v.Verification != tc.word || (v.ArtifactURL != "") != tc.artifact || len(v.AgreeingBuildServers) != 1 {
				t.Fatalf("view: verification %q, artifact URL %q, agreeing %v; want %q, link %v", v.Verification, v.ArtifactURL,
					v.AgreeingBuildServers, tc.word, tc.artifact)
			}
		})
	}
}
