package worker

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/kilnbuild/kiln/internal/provenance"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// A successful result carries a statement signed with the key of the
// Hello, naming the artifact, the attempt and the log as sent.
func TestClientSignsTheStatementOfASuccess(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"kiln.yaml": "build: [make]\n", "hello.in": "hello\n"})
	cfg := testConfig(t, f)
	startClient(t, cfg)
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
	pub := ed25519.PublicKey(f.hellos[0].GetPublicKey())
	key, err := provenance.LoadOrCreateKey(filepath.Join(cfg.DataDir, provenance.KeyFile))
	if err != nil || !key.Public().(ed25519.PublicKey).Equal(pub) {
		t.Fatalf("Hello's key is not the one in the data directory (%v)", err)
	}

	f.push(t, assign(assignment(9, url, commit, recipe([]string{"cp hello.in hello"}, "hello"))))
	res := f.waitResult(t, 9)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("outcome %v: %s", res.GetOutcome(), res.GetReason())
	}
	st, err := provenance.Open(res.GetStatement(), pub)
	if err != nil {
		t.Fatalf("statement: %v", err)
	}
	if why := provenance.CheckStatement(st, provenance.Claim{ArtifactSHA256: res.GetArtifact().GetSha256(),
		Project: "hello", Commit: commit, BuildServer: "fake", AttemptID: 9}); why != "" {
		t.Fatalf("statement does not describe the attempt: %s", why)
	}
	p, err := provenance.Provenance(st)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(f.log(9)))
	if got := p.GetRunDetails().GetByproducts()[0].GetDigest()["sha256"]; got != hex.EncodeToString(sum[:]) {
		t.Fatalf("statement's log sha256 %s, want that of the log sent (%d bytes)", got, len(f.log(9)))
	}
	// Another key does not open it.
	_, other, _ := ed25519.GenerateKey(nil)
	if _, err := provenance.Open(res.GetStatement(), other.Public().(ed25519.PublicKey)); err == nil {
		t.Fatal("statement opens with another key")
	}
}
