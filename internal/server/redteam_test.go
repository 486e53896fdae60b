package server

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Red team: one volunteer claims a success (its own artifact) for a build
// that fails for everyone else. The operators that agree on the failure
// settle it: the build FAILS, its verification is VERIFIED (of the
// failure), and the lone success's artifact must not ride on that
// verdict: no default download, no record of it as the build's artifact.
func TestQuorum_AVerifiedFailureNeverServesTheLoneSuccessesArtifact(t *testing.T) {
	ts := startTestServer(t, Config{Quorum: 2}, queuedBuild(1, "hello", 60))
	trojan := tarGz(t, file{"bin/hello", []byte("pwned\n")})
	cheat := ts.connectOf("mallory", "cheat")
	runOn(cheat, trojan)
	ts.waitBuild(1, "unverified", func(b *kilnv1.Build) bool { return b.GetState() == kilnv1.BuildState_BUILD_STATE_QUEUED })
	cheat.stream.CloseSend()

	for _, who := range [][2]string{{"alice", "a1"}, {"bob", "b1"}} {
		ss := ts.connectOf(who[0], who[1])
		ss.report(&kilnv1.AttemptResult{AttemptId: ss.assignment().GetAttemptId(),
			Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "make exited 2", FailingStep: "build"})
	}
	b := ts.waitBuild(1, "final", func(b *kilnv1.Build) bool { return b.GetState().Final() })
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED {
		t.Fatalf("build %s, want failed (two operators agree on the failure)", b.GetState().Word())
	}
	if got, err := ts.download(1, false); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("default download of a failed build served %d bytes (%v): the lone cheater's artifact", len(got), err)
	}
	if b.GetArtifact() != nil {
		t.Fatalf("the failed build names artifact %s, the lone success's", b.GetArtifact().GetSha256())
	}
}
