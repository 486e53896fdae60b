package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/kilnbuild/kiln/internal/provenance"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// signResult adds to a successful result the build server's signed
// statement of the attempt (package provenance). A statement that cannot be
// made turns the result into SETUP_FAILED: the metaserver would refuse a
// success without one.
func (c *Client) signResult(a *attempt, r *kilnv1.AttemptResult) {
	c.mu.Lock()
	asg, started, name := a.asg, a.started, c.name
	c.mu.Unlock()
	env, err := c.statement(a.dir, asg, started, name, r)
	if err != nil {
		c.log.Error("signing the attempt's statement failed", "attempt_id", a.id, "err", err)
		r.Outcome = kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED
		r.Reason = "signing the provenance statement: " + err.Error()
		r.Artifact, r.ArtifactData = nil, nil
		return
	}
	r.Statement = env
}

// statement makes and signs the statement of one successful attempt.
func (c *Client) statement(dir string, asg *kilnv1.Assignment, started time.Time, name string, r *kilnv1.AttemptResult) ([]byte, error) {
	if asg == nil || name == "" {
		return nil, fmt.Errorf("attempt %d has no assignment or session", r.GetAttemptId())
	}
	logSum, err := fileSHA256(filepath.Join(dir, logName), int64(r.GetLogSize()))
	if err != nil {
		return nil, fmt.Errorf("hashing the build log: %w", err)
	}
	var toolchain *kilnv1.SystemInfo
	if t := c.runner.targets[asg.GetTargetId()]; t != nil {
		toolchain = t.Info.GetSystem()
	}
	st, err := provenance.NewStatement(provenance.Facts{
		ArtifactSHA256: r.GetArtifact().GetSha256(),
		Project:        asg.GetProject(), GitURL: asg.GetGitUrl(), Commit: asg.GetCommit(),
		Options: asg.GetOptions(), Constraints: asg.GetConstraints(), Dependencies: asg.GetDependencies(),
		Toolchain:   toolchain,
		BuildServer: name, AttemptID: asg.GetAttemptId(),
		Started: started, Ended: time.Now(), LogSHA256: logSum, LogSize: r.GetLogSize(),
	})
	if err != nil {
		return nil, err
	}
	return provenance.Seal(c.key, st)
}

// fileSHA256 hashes the first n bytes of path (all of an empty or missing
// log: a refused attempt has none).
func fileSHA256(path string, n int64) (string, error) {
	h := sha256.New()
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) && n == 0 {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		return "", err
	}
	defer f.Close()
	if _, err := io.CopyN(h, f, n); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
