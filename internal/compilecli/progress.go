package compilecli

import (
	"fmt"
	"io"
	"strings"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// progress renders a build's updates as one line per change, interleaved
// with the raw build log. It is not safe for concurrent use.
type progress struct {
	w io.Writer
	// midLine is true when the last log byte written was not a newline, so a
	// status line must first end the log line.
	midLine bool

	state    kilnv1.BuildState
	verified kilnv1.Verification
	position uint32
	reasons  string
	attempt  uint64 // store id of the running attempt shown
	phase    kilnv1.Phase
	outcomes map[uint64]kilnv1.AttemptOutcome
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, outcomes: map[uint64]kilnv1.AttemptOutcome{}}
}

// line writes one status line about build b.
func (p *progress) line(b *kilnv1.Build, format string, args ...any) {
	if p.midLine {
		fmt.Fprintln(p.w)
		p.midLine = false
	}
	fmt.Fprintf(p.w, "[build %d] %s\n", b.GetId(), fmt.Sprintf(format, args...))
}

// log writes raw build log bytes.
func (p *progress) log(data []byte) {
	if len(data) == 0 {
		return
	}
	p.w.Write(data)
	p.midLine = data[len(data)-1] != '\n'
}

// update writes what changed since the previous update of the same build.
func (p *progress) update(b *kilnv1.Build) {
	for i, a := range b.GetAttempts() {
		o := a.GetOutcome()
		if o == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RUNNING || o == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_UNSPECIFIED {
			continue
		}
		if prev, seen := p.outcomes[a.GetId()]; seen && prev == o {
			continue
		}
		p.outcomes[a.GetId()] = o
		if b.GetState().Final() && o.Final() {
			continue // the final line says it
		}
		msg := fmt.Sprintf("attempt %d on %s: %s", i+1, attemptWhere(a), o.Word())
		if a.GetReason() != "" {
			msg += ": " + a.GetReason()
		}
		p.line(b, "%s", msg)
	}

	if v := b.GetVerification(); v != p.verified && !b.GetState().Final() {
		p.verified = v
		p.line(b, "%s: %d result(s) so far, quorum %d; agreeing: %s", v.Word(), len(b.GetReplicas()), b.GetQuorum(),
			strings.Join(b.GetAgreeingBuildServers(), ", "))
	}
	st := b.GetState()
	stateChanged := st != p.state
	p.state = st
	switch st {
	case kilnv1.BuildState_BUILD_STATE_QUEUED:
		reasons := strings.Join(b.GetWaitingReasons(), "; ")
		if stateChanged || b.GetQueuePosition() != p.position {
			if b.GetQueuePosition() > 0 {
				p.line(b, "queued, position %d", b.GetQueuePosition())
			} else {
				p.line(b, "queued")
			}
		}
		if reasons != p.reasons && reasons != "" {
			for _, r := range b.GetWaitingReasons() {
				p.line(b, "waiting: %s", r)
			}
		}
		p.position, p.reasons = b.GetQueuePosition(), reasons
		p.attempt, p.phase = 0, 0
	case kilnv1.BuildState_BUILD_STATE_RUNNING:
		p.position, p.reasons = 0, ""
		a := lastAttempt(b)
		if stateChanged || a.GetId() != p.attempt {
			msg := "running on " + attemptWhere(a)
			if b.GetPlatform() != nil {
				msg += " (" + platform.Describe(b.GetPlatform()) + ")"
			}
			if n := b.AttemptNumber(a.GetId()); n != 0 {
				msg += fmt.Sprintf(", attempt %d", n)
			}
			p.line(b, "%s", msg)
			p.attempt, p.phase = a.GetId(), 0
		}
		if ph := a.GetPhase(); ph != p.phase && ph != kilnv1.Phase_PHASE_UNSPECIFIED {
			p.line(b, "%s", ph.Word())
			p.phase = ph
		}
	default:
		if stateChanged && st.Final() {
			p.line(b, "%s", finalSummary(b))
		}
	}
}

// finalSummary is the one line that ends a build's progress.
func finalSummary(b *kilnv1.Build) string {
	msg := b.GetState().Word()
	if b.GetState() == kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
		if a := b.GetArtifact(); a != nil {
			msg += fmt.Sprintf(": artifact %s (%d bytes, %d files)", shortHash(a.GetSha256()), a.GetSize(), len(a.GetFiles()))
		}
		if b.GetPlatform() != nil {
			msg += " on " + platform.Describe(b.GetPlatform())
		}
		if v := b.GetVerification().Word(); v != "" {
			msg += ", " + v
			if s := b.GetAgreeingBuildServers(); len(s) > 0 {
				msg += " by " + strings.Join(s, ", ")
			}
		}
		return msg
	}
	if b.GetFailure() != "" {
		msg += ": " + b.GetFailure()
	}
	if b.GetFailingStep() != "" {
		msg += " (step: " + b.GetFailingStep() + ")"
	}
	return msg
}

func lastAttempt(b *kilnv1.Build) *kilnv1.Attempt {
	as := b.GetAttempts()
	if len(as) == 0 {
		return nil
	}
	return as[len(as)-1]
}

func attemptWhere(a *kilnv1.Attempt) string {
	if a == nil || a.GetBuildServer() == "" {
		return "a build server"
	}
	if a.GetTargetId() != "" {
		return a.GetBuildServer() + "/" + a.GetTargetId()
	}
	return a.GetBuildServer()
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
