package worker

import (
	"testing"

	"google.golang.org/grpc/codes"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// An upload cut by a lost connection (a metaserver restarted or replaced
// by its standby) is sent again whole; the attempt succeeds and nothing
// counts against the build server. Any other refusal ends it at once.
func TestAnUploadCutByALostConnectionIsSentAgainAndAnyOtherRefusalIsNot(t *testing.T) {
	for _, tc := range []struct {
		name  string
		code  codes.Code
		cuts  int
		want  kilnv1.AttemptOutcome
		calls int // uploads stored
	}{
		{"cut twice: sent a third time", codes.Unavailable, 2, kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED, 1},
		{"cut on every try: gives up", codes.Unavailable, maxUploadTries, kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, 0},
		{"refused as damaged: not sent again", codes.DataLoss, 1, kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t)
			f.inlineMax = 0 // every artifact is uploaded
			f.cutUploads, f.cutCode = tc.cuts, tc.code
			url, commit := makeRepo(t, map[string]string{"kiln.yaml": "build: [make]\n", "hello.in": "hello\n"})
			startClient(t, testConfig(t, f))

			f.push(t, assign(assignment(7, url, commit, recipe([]string{"cp hello.in hello"}, "hello"))))
			res := f.waitResult(t, 7)
			f.mu.Lock()
			cuts, stored := f.cuts, f.uploadCalls
			f.mu.Unlock()
			if res.GetOutcome() != tc.want || stored != tc.calls {
				t.Fatalf("outcome %v (%s) with %d uploads stored; want %v and %d\nlog:\n%s",
					res.GetOutcome(), res.GetReason(), stored, tc.want, tc.calls, f.log(7))
			}
			if cuts != tc.cuts {
				t.Fatalf("%d uploads were cut; want %d (each try ran until cut)", cuts, tc.cuts)
			}
		})
	}
}
