package kilnv1

import "testing"

func TestBuildState_Final(t *testing.T) {
	final := map[BuildState]bool{
		BuildState_BUILD_STATE_SUCCEEDED: true, BuildState_BUILD_STATE_FAILED: true,
		BuildState_BUILD_STATE_ERROR: true, BuildState_BUILD_STATE_CANCELLED: true,
		BuildState_BUILD_STATE_EXPIRED: true,
	}
	for _, s := range append(BuildStates(), BuildState_BUILD_STATE_UNSPECIFIED, BuildState(99)) {
		if s.Final() != final[s] {
			t.Errorf("%v.Final() = %v, want %v", s, s.Final(), final[s])
		}
	}
}

func TestBuildState_Word_roundTrips(t *testing.T) {
	for _, s := range BuildStates() {
		got, ok := ParseBuildState(s.Word())
		if !ok || got != s {
			t.Errorf("ParseBuildState(%q) = %v, %v; want %v", s.Word(), got, ok, s)
		}
	}
	for _, w := range []string{"", "unknown", "unspecified", "BUILD_STATE_RUNNING", "any"} {
		if s, ok := ParseBuildState(w); ok {
			t.Errorf("ParseBuildState(%q) = %v, want no state", w, s)
		}
	}
	if w := BuildState(99).Word(); w != "unknown" {
		t.Errorf("an unknown state's word is %q", w)
	}
}

func TestWords(t *testing.T) {
	for got, want := range map[string]string{
		BuildState_BUILD_STATE_QUEUED.Word():               "queued",
		BuildState_BUILD_STATE_UNSPECIFIED.Word():          "unknown",
		AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED.Word(): "setup_failed",
		AttemptOutcome_ATTEMPT_OUTCOME_UNSPECIFIED.Word():  "unknown",
		AttemptOutcome(99).Word():                          "unknown",
		Phase_PHASE_CHECKING.Word():                        "checking",
		Phase_PHASE_UNSPECIFIED.Word():                     "",
		Phase(99).Word():                                   "unknown",
	} {
		if got != want {
			t.Errorf("word %q, want %q", got, want)
		}
	}
}

// TestOutcomeRules keeps the outcome table complete and coherent: adding
// an outcome to build.proto without a row fails here.
func TestOutcomeRules(t *testing.T) {
	for v, name := range AttemptOutcome_name {
		o := AttemptOutcome(v)
		if !o.Known() {
			t.Errorf("%s has no row in outcomeRules", name)
			continue
		}
		r := o.Rule()
		switch {
		case o == AttemptOutcome_ATTEMPT_OUTCOME_UNSPECIFIED || o == AttemptOutcome_ATTEMPT_OUTCOME_RUNNING:
			if o.Ended() || r != (OutcomeRule{}) {
				t.Errorf("%s ends an attempt", name)
			}
		case !o.Final() && !o.Retried():
			t.Errorf("%s neither ends its build nor queues it again (%v)", name, r.Build)
		case o.Final() && (r.Infra || r.Loss || r.Backoff || r.Exclude != ExcludeNever):
			t.Errorf("%s ends its build but acts as a retry", name)
		case o.Retried() && r.Result:
			t.Errorf("%s queues its build again but counts as its result", name)
		}
	}
	if o := AttemptOutcome(99); o.Known() || o.Ended() || o.Final() || o.Retried() {
		t.Error("an outcome without a row has a rule")
	}
}

func TestOutcomeRule_Reason(t *testing.T) {
	to := AttemptOutcome_ATTEMPT_OUTCOME_TIMED_OUT.Rule()
	if got := to.Reason(""); got != "timed out: time limit reached" {
		t.Errorf("empty reason: %q", got)
	}
	if got := to.Reason("step 2"); got != "timed out: step 2" {
		t.Errorf("reason: %q", got)
	}
}
