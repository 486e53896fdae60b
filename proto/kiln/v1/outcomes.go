package kilnv1

// This file is written by hand, beside the generated code: the one table
// of what each attempt outcome does to its build and to the build server
// that ended the attempt. The metaserver's lifecycle applies it
// (internal/server/lifecycle.go, standing.go), startcompile's progress and
// the status pages read it; nothing else decides by outcome.
//
// Adding an outcome costs: the value in build.proto (and `buf generate`),
// a row in outcomeRules (TestOutcomeRules fails without one), the code that
// reports it (the build server, internal/worker) or decides it (the
// metaserver, internal/server/session.go), and its word in docs/ where
// outcomes are listed. A row says everything the metaserver does about it:
// whether the build ends and how, whether the attempt counts against the
// build's infrastructure budget and the build server's standing, whether
// the build server is kept from the build, whether the retry waits.

// OutcomeRule is what one attempt outcome does. The zero rule is that of
// RUNNING and UNSPECIFIED: the attempt has not ended.
type OutcomeRule struct {
	// Build is the state the build takes when its attempt ends so: a final
	// state, or QUEUED when it is queued again for another attempt (until
	// the build's infrastructure budget, the metaserver's
	// MaxInfraAttempts, is spent: then ERROR).
	Build BuildState
	// Result says the outcome is the build's own result, not the build
	// server's or a requester's doing: counted in the build server's record
	// (builds succeeded or failed), it ends the server's losses in a row.
	Result bool
	// Infra counts the attempt toward the build's MaxInfraAttempts, once
	// per build server: a server that lost the build before does not count
	// again, so one volunteer cannot make a build ERROR.
	Infra bool
	// Loss counts the attempt against the build server's standing: enough
	// losses in a row put it aside (no new work) for a while.
	Loss bool
	// Exclude says when the build server is kept from the build for the
	// metaserver's ExcludeFor.
	Exclude Exclusion
	// Backoff delays the build's next attempt by a time that grows with
	// its infrastructure failures; without it the build is queued at once.
	Backoff bool
	// Prefix introduces the attempt's reason where it is quoted alone (the
	// build's failure, a put-aside reason): "timed out: ".
	Prefix string
	// DefaultReason stands for an empty reason in the build's failure.
	DefaultReason string
}

// Exclusion says when an ended attempt keeps its build server from its
// build.
type Exclusion int

const (
	// ExcludeNever leaves the build server free to take the build again.
	ExcludeNever Exclusion = iota
	// ExcludeAlways keeps the build server from the build.
	ExcludeAlways
	// ExcludeOnRepeat keeps the build server from the build when it lost
	// an earlier attempt of it (an outcome with Loss) or ended one with
	// the same outcome.
	ExcludeOnRepeat
)

// outcomeRules is the table; every value of AttemptOutcome has a row.
var outcomeRules = map[AttemptOutcome]OutcomeRule{
	AttemptOutcome_ATTEMPT_OUTCOME_UNSPECIFIED: {},
	AttemptOutcome_ATTEMPT_OUTCOME_RUNNING:     {},
	// The steps succeeded and the artifact was uploaded.
	AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED: {Build: BuildState_BUILD_STATE_SUCCEEDED, Result: true},
	// A build or check step failed: the build's own failure.
	AttemptOutcome_ATTEMPT_OUTCOME_FAILED: {Build: BuildState_BUILD_STATE_FAILED, Result: true,
		DefaultReason: "a build step failed"},
	// The manifest's or the volunteer's time limit: the build's own too.
	AttemptOutcome_ATTEMPT_OUTCOME_TIMED_OUT: {Build: BuildState_BUILD_STATE_FAILED, Result: true,
		Prefix: "timed out: ", DefaultReason: "time limit reached"},
	// Stopped by an administrator, or by the last requester withdrawing:
	// nobody's result, the build server's standing unchanged.
	AttemptOutcome_ATTEMPT_OUTCOME_CANCELLED: {Build: BuildState_BUILD_STATE_CANCELLED,
		DefaultReason: "cancelled"},
	// The build server could not set up: a broken server, retried
	// elsewhere after a growing delay.
	AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED: {Build: BuildState_BUILD_STATE_QUEUED,
		Infra: true, Loss: true, Exclude: ExcludeAlways, Backoff: true, Prefix: "setup failed: "},
	// Lease lapsed, reconnected without it, or held past the time limit
	// (the metaserver cancels the holder and excludes it itself).
	AttemptOutcome_ATTEMPT_OUTCOME_LOST: {Build: BuildState_BUILD_STATE_QUEUED,
		Infra: true, Loss: true, Exclude: ExcludeOnRepeat},
	// The volunteer's policy said no: not a broken server, but asking it
	// again is pointless.
	AttemptOutcome_ATTEMPT_OUTCOME_REFUSED: {Build: BuildState_BUILD_STATE_QUEUED,
		Exclude: ExcludeAlways},
	// The metaserver refused the result (its ELF files are for another
	// machine than the target's): the volunteer's doing, counted against
	// it like a loss, and never asked again.
	AttemptOutcome_ATTEMPT_OUTCOME_REJECTED: {Build: BuildState_BUILD_STATE_QUEUED,
		Infra: true, Loss: true, Exclude: ExcludeAlways, Prefix: "result rejected: "},
	// Handed back on a graceful stop: free, unless it happens again (a
	// server must not burn a build's attempt numbers).
	AttemptOutcome_ATTEMPT_OUTCOME_RETURNED: {Build: BuildState_BUILD_STATE_QUEUED,
		Exclude: ExcludeOnRepeat},
}

// Rule returns what o does; the zero rule for values without a row.
func (o AttemptOutcome) Rule() OutcomeRule { return outcomeRules[o] }

// Known reports whether o has a row in the table (RUNNING and UNSPECIFIED
// have one: they end nothing).
func (o AttemptOutcome) Known() bool {
	_, ok := outcomeRules[o]
	return ok
}

// Ended reports whether o ends an attempt: every known outcome but
// RUNNING and UNSPECIFIED.
func (o AttemptOutcome) Ended() bool { return o.Rule().Build != BuildState_BUILD_STATE_UNSPECIFIED }

// Final reports whether an attempt ending with o makes its build final.
func (o AttemptOutcome) Final() bool { return o.Rule().Build.Final() }

// Retried reports whether an attempt ending with o queues its build again.
func (o AttemptOutcome) Retried() bool { return o.Rule().Build == BuildState_BUILD_STATE_QUEUED }

// Word is the lower-case name of o that output, JSON, CSS classes, metric
// labels, logs and an ERROR build's failure use: "succeeded",
// "setup_failed". UNSPECIFIED and values this version does not know are
// "unknown".
func (o AttemptOutcome) Word() string {
	return enumWord(AttemptOutcome_name, int32(o), "ATTEMPT_OUTCOME_")
}

// Reason quotes an attempt's reason as the build's failure or a put-aside
// reason does: Prefix, then reason or, when reason is empty,
// DefaultReason.
func (r OutcomeRule) Reason(reason string) string {
	if reason == "" {
		reason = r.DefaultReason
	}
	return r.Prefix + reason
}
