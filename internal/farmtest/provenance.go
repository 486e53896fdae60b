package farmtest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/internal/provenance"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// SimulatedKey returns the signing key of a simulated build server (a test
// that speaks the worker protocol itself): derived from seed, so the same
// seed always gives the same key, as a build server's key file does.
func SimulatedKey(seed string) ed25519.PrivateKey {
	s := sha256.Sum256([]byte("kiln simulated build server key: " + seed))
	return ed25519.NewKeyFromSeed(s[:])
}

// SignStatement returns the DSSE envelope a build server named builder
// sends with the successful result of asg whose artifact has sha256.
func SignStatement(key ed25519.PrivateKey, builder string, asg *kilnv1.Assignment, sha256 string) []byte {
	f := provenance.AssignmentFacts(asg, builder, sha256)
	f.Started, f.Ended, f.LogSHA256 = time.Now(), time.Now(), strings.Repeat("0", 64)
	env, err := provenance.SignFacts(key, f)
	if err != nil {
		panic(err) // only a programming error makes an invalid statement
	}
	return env
}
