package worker

import (
	"fmt"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// check decides, before anything runs, whether this build server takes the
// assignment. It returns ATTEMPT_OUTCOME_UNSPECIFIED when it does; REFUSED
// when the volunteer's policy or the target does not allow it (the
// metaserver queues it for someone else); SETUP_FAILED when the assignment
// is malformed.
func (r *attemptRunner) check(a *kilnv1.Assignment) (kilnv1.AttemptOutcome, string) {
	if a.GetRecipe() == nil {
		return kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, "assignment carries no recipe"
	}
	if a.GetGitUrl() == "" {
		return kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, "assignment carries no git URL"
	}
	if !isCommitID(a.GetCommit()) {
		return kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, fmt.Sprintf("assignment commit %q is not a full commit id", a.GetCommit())
	}
	if reason := refusal(r.policy, r.targets[a.GetTargetId()], a); reason != "" {
		return kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_REFUSED, reason
	}
	return kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_UNSPECIFIED, ""
}

// refusal returns why policy p or target t refuses a, or "" when both allow it.
// t is nil when the assignment names a target this build server does not offer.
func refusal(p *kilnv1.BuildServerPolicy, t *Target, a *kilnv1.Assignment) string {
	if t == nil {
		return fmt.Sprintf("target %q is not offered by this build server", a.GetTargetId())
	}
	if reason := p.Refusal(a.GetProject(), a.GetOptions(), a.GetRecipe().GetTimeoutSeconds()); reason != "" {
		return "policy: " + reason
	}
	if tool := t.Info.GetSystem().MissingTool(a.GetRecipe().GetRequires()); tool != "" {
		return fmt.Sprintf("required tool %q is missing on target %q", tool, t.Info.GetId())
	}
	return ""
}

// buildTimeout is the wall-time limit of a's steps: the recipe's, else the
// policy's cap, else def.
func buildTimeout(p *kilnv1.BuildServerPolicy, a *kilnv1.Assignment, def time.Duration) time.Duration {
	if s := a.GetRecipe().GetTimeoutSeconds(); s > 0 {
		return time.Duration(s) * time.Second
	}
	if s := p.GetMaxBuildSeconds(); s > 0 {
		return time.Duration(s) * time.Second
	}
	return def
}

// isCommitID reports whether s is a full hexadecimal commit id (SHA-1 or
// SHA-256), which also keeps it from being read as a git option.
func isCommitID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
