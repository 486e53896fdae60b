package compilecli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestValidateRefusesAnUnknownAccept(t *testing.T) {
	o := SubmitOptions{Connection: Connection{Metaserver: "127.0.0.1:7070", DialTimeout: time.Second}, Project: "hello", Email: "dev@example.com", Accept: "trusted"}
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--accept must be verified or unverified") {
		t.Fatalf("Validate = %v, want the --accept refusal", err)
	}
	for _, ok := range []string{"", AcceptVerified, AcceptUnverified} {
		o.Accept = ok
		if err := o.Validate(); err != nil {
			t.Fatalf("--accept %q: %v", ok, err)
		}
	}
}

func TestAnsweredTakesAFirstResultOnlyWhenAccepted(t *testing.T) {
	art := &kilnv1.Artifact{Sha256: "ab"}
	queued := &kilnv1.Build{State: kilnv1.BuildState_BUILD_STATE_QUEUED, Artifact: art, Verification: kilnv1.Verification_VERIFICATION_UNVERIFIED}
	if answered(queued, false) || !answered(queued, true) {
		t.Fatalf("an unverified first result: answered %v by default, %v with --accept unverified; want false, true",
			answered(queued, false), answered(queued, true))
	}
	noResult := &kilnv1.Build{State: kilnv1.BuildState_BUILD_STATE_RUNNING}
	if answered(noResult, true) {
		t.Fatal("a running build without a result answered --accept unverified")
	}
	done := &kilnv1.Build{State: kilnv1.BuildState_BUILD_STATE_SUCCEEDED, Verification: kilnv1.Verification_VERIFICATION_VERIFIED}
	if !answered(done, false) {
		t.Fatal("a final build did not answer")
	}
}

func TestResultJSONSaysWhetherTheArtifactIsVerified(t *testing.T) {
	var r Result
	r.setBuild(&kilnv1.Build{Id: 3, State: kilnv1.BuildState_BUILD_STATE_SUCCEEDED, Verification: kilnv1.Verification_VERIFICATION_VERIFIED,
		AgreeingBuildServers: []string{"a1", "b1"}})
	var buf bytes.Buffer
	if err := r.write(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"verification":"verified","agreeing_build_servers":["a1","b1"]`) {
		t.Fatalf("JSON %s lacks the verification", buf.String())
	}
	var empty Result
	buf.Reset()
	if err := empty.write(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"verification":"","agreeing_build_servers":[]`) {
		t.Fatalf("JSON %s: agreeing_build_servers must never be null", buf.String())
	}
}
