package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// volunteer answers every assignment of ss at once with the artifact
// made of the build id (tampered: one byte flipped), until the session ends.
func volunteer(tb testing.TB, ss *testSession, tampered bool) {
	for msg := range ss.msgs {
		a := msg.GetAssignment()
		if a == nil {
			continue
		}
		content := []byte(fmt.Sprintf("build %d\n", a.GetBuildId()))
		if tampered {
			content[0] ^= 1
		}
		data := tarGz(tb, file{"bin/out", content})
		if err := ss.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{
			Result: inlineResult(a.GetAttemptId(), data, data)}}); err != nil {
			return
		}
	}
}

// BenchmarkVerification_BuildsPerVerifiedArtifact measures what trust
// costs at the default policy (quorum 2, at most 3 results): the results
// (builds run) per verified artifact, on a farm of three honest
// operators, and with a fourth operator whose every artifact is tampered.
func BenchmarkVerification_BuildsPerVerifiedArtifact(b *testing.B) {
	for _, tc := range []struct {
		name    string
		cheater bool
	}{{"3 honest operators", false}, {"3 honest operators and 1 cheater", true}} {
		b.Run(tc.name, func(b *testing.B) {
			builds := make([]*store.Build, b.N)
			for i := range builds {
				builds[i] = queuedBuild(uint64(i+1), fmt.Sprintf("p%d", i+1), 60)
			}
			ts := startTestServer(b, Config{Quorum: 2}, builds...)
			b.ResetTimer()
			for _, op := range []string{"alice", "bob", "carol"} {
				go volunteer(b, ts.connectOf(op, op+"-1"), false)
			}
			if tc.cheater {
				go volunteer(b, ts.connectOf("mallory", "cheat"), true)
			}
			results, verified, wrong := 0, 0, 0
			for i := range builds {
				id := uint64(i + 1)
				deadline := time.Now().Add(time.Minute)
				for {
					bb := ts.build(id)
					if bb.GetState().Final() {
						results += len(bb.GetReplicas())
						if bb.GetVerification() == kilnv1.Verification_VERIFICATION_VERIFIED {
							verified++
							if bb.GetArtifact().GetSha256() != digest(tarGz(b, file{"bin/out", []byte(fmt.Sprintf("build %d\n", id))})) {
								wrong++
							}
						}
						break
					}
					if time.Now().After(deadline) {
						b.Fatalf("build %d not final within a minute: %v", id, bb)
					}
					time.Sleep(time.Millisecond)
				}
			}
			b.StopTimer()
			if verified != b.N || wrong != 0 {
				b.Fatalf("%d of %d builds verified, %d with a tampered artifact", verified, b.N, wrong)
			}
			b.ReportMetric(float64(results)/float64(verified), "builds/verified")
		})
	}
}
