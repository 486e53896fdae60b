package kilnv1

// This file is written by hand, beside the generated code: the one
// definition of what the build states and phases of build.proto mean to
// the programs (which states are final, the words they are shown and
// filtered by). The attempt outcomes' table is in outcomes.go.

import "strings"

// Final reports whether s is a final state: SUCCEEDED, FAILED, ERROR,
// CANCELLED or EXPIRED. A final build never changes again; a build in any
// other state (QUEUED, RUNNING) is still active on the metaserver.
func (s BuildState) Final() bool {
	switch s {
	case BuildState_BUILD_STATE_SUCCEEDED, BuildState_BUILD_STATE_FAILED,
		BuildState_BUILD_STATE_ERROR, BuildState_BUILD_STATE_CANCELLED,
		BuildState_BUILD_STATE_EXPIRED:
		return true
	}
	return false
}

// Word is the lower-case name of s that output, JSON, URLs, CSS classes,
// metric labels and logs use: "queued", "succeeded". UNSPECIFIED and
// values this version does not know are "unknown".
func (s BuildState) Word() string {
	return enumWord(BuildState_name, int32(s), "BUILD_STATE_")
}

// ParseBuildState is Word's inverse: the state named word (case and
// surrounding space ignored), false for "unknown" and anything else that
// names no state.
func ParseBuildState(word string) (BuildState, bool) {
	w := strings.ToUpper(strings.TrimSpace(word))
	v, ok := BuildState_value["BUILD_STATE_"+w]
	if !ok || v == int32(BuildState_BUILD_STATE_UNSPECIFIED) {
		return BuildState_BUILD_STATE_UNSPECIFIED, false
	}
	return BuildState(v), true
}

// BuildStates returns every build state but UNSPECIFIED, in lifecycle
// (enum) order.
func BuildStates() []BuildState {
	var out []BuildState
	for v := BuildState(1); ; v++ {
		if _, ok := BuildState_name[int32(v)]; !ok {
			return out
		}
		out = append(out, v)
	}
}

// Word is the lower-case name of p ("fetching"), "" for UNSPECIFIED (no
// phase) and "unknown" for values this version does not know.
func (p Phase) Word() string {
	if p == Phase_PHASE_UNSPECIFIED {
		return ""
	}
	return enumWord(Phase_name, int32(p), "PHASE_")
}

// enumWord is the lower-case name of value v of an enum whose value names
// begin with prefix; "unknown" for UNSPECIFIED and unknown values.
func enumWord(names map[int32]string, v int32, prefix string) string {
	n, ok := names[v]
	if !ok || v == 0 {
		return "unknown"
	}
	return strings.ToLower(strings.TrimPrefix(n, prefix))
}

// Word is the lower-case name of v that output, JSON, pages and mail use:
// "verified", "unverified", "disputed", "not_reproducible"; "" for
// UNSPECIFIED (the build has no result yet) and "unknown" for values this
// version does not know.
func (v Verification) Word() string {
	if v == Verification_VERIFICATION_UNSPECIFIED {
		return ""
	}
	return enumWord(Verification_name, int32(v), "VERIFICATION_")
}

// Trusted reports whether an artifact with verification v may answer a
// request that does not accept unverified results: only VERIFIED.
func (v Verification) Trusted() bool { return v == Verification_VERIFICATION_VERIFIED }
