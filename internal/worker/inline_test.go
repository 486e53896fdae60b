package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestAnArtifactWithinWelcomesInlineLimitGoesWithTheResultAndALargerOneIsUploaded(t *testing.T) {
	for _, tc := range []struct {
		name      string
		inlineMax uint64
		inline    bool
	}{
		{"the limit allows it", 1 << 20, true},
		{"the artifact is larger than the limit", 64, false},
		{"the metaserver allows none", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t)
			f.inlineMax = tc.inlineMax
			url, commit := makeRepo(t, map[string]string{"kiln.yaml": "build: [make]\n", "hello.in": "hello\n"})
			startClient(t, testConfig(t, f))

			f.push(t, assign(assignment(7, url, commit, recipe([]string{"cp hello.in hello"}, "hello"))))
			res := f.waitResult(t, 7)
			if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
				t.Fatalf("outcome %v: %s\nlog:\n%s", res.GetOutcome(), res.GetReason(), f.log(7))
			}
			f.mu.Lock()
			uploads, uploaded := f.uploadCalls, f.blobs[res.GetArtifact().GetSha256()]
			f.mu.Unlock()
			data := res.GetArtifactData()
			if !tc.inline {
				if len(data) != 0 || uploads != 1 || uint64(len(uploaded)) != res.GetArtifact().GetSize() {
					t.Fatalf("%d bytes with the result, %d uploads (%d bytes); want the artifact uploaded once", len(data), uploads, len(uploaded))
				}
				return
			}
			if uploads != 0 {
				t.Fatalf("%d uploads; want the artifact with the result only", uploads)
			}
			sum := sha256.Sum256(data)
			if hex.EncodeToString(sum[:]) != res.GetArtifact().GetSha256() || uint64(len(data)) != res.GetArtifact().GetSize() {
				t.Fatalf("the result's %d bytes do not match its artifact %v", len(data), res.GetArtifact())
			}
			if files := untar(t, data); files["hello"] != "hello\n" {
				t.Fatalf("inline artifact holds %q", files)
			}
		})
	}
}
