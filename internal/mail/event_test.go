package mail

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestEnqueueEventPicksHooksByEvent(t *testing.T) {
	cmd := HookConfig{Command: "logger kiln"}
	web := HookConfig{WebhookURL: "http://127.0.0.1:9/hook"}
	both := HookConfig{Command: "true", WebhookURL: "http://127.0.0.1:9/both", Events: []string{"cancelled", "failed"}}
	cancelled := cancelledQueuedBuild()
	tests := []struct {
		name  string
		hooks []HookConfig
		build *kilnv1.Build
		want  []string // kind:to of the records, in order
	}{
		{"hooks without events fire on success", []HookConfig{cmd, web}, succeededBuild(),
			[]string{"command:logger kiln", "webhook:http://127.0.0.1:9/hook"}},
		{"hooks without events do not fire on cancel", []HookConfig{cmd, web}, cancelled, nil},
		{"a hook with a command and a URL gives two records", []HookConfig{both}, failedBuild(),
			[]string{"command:true", "webhook:http://127.0.0.1:9/both"}},
		{"a hook listing events fires only for those", []HookConfig{both}, succeededBuild(), nil},
		{"no hooks, no records", nil, succeededBuild(), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := openStore(t)
			if err := st.Update(func(tx store.Tx) error { return EnqueueEvent(tx, tt.hooks, tt.build, "") }); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range outbox(t, st) {
				got = append(got, r.GetKind()+":"+r.GetTo())
				if r.GetSubject() != "build."+StateName(tt.build.GetState()) || r.GetBuildId() != tt.build.GetId() {
					t.Errorf("record %d: subject %q build %d", r.GetId(), r.GetSubject(), r.GetBuildId())
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("records %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEnqueueEventRefusesABuildThatHasNotEnded(t *testing.T) {
	st := openStore(t)
	b := succeededBuild()
	b.State = kilnv1.BuildState_BUILD_STATE_RUNNING
	err := st.Update(func(tx store.Tx) error { return EnqueueEvent(tx, []HookConfig{{Command: "true"}}, b, "") })
	if !errors.Is(err, ErrNotFinal) {
		t.Fatalf("EnqueueEvent = %v, want ErrNotFinal", err)
	}
}

// The event JSON is a public contract: the golden files pin its field names.
func TestEventJSON(t *testing.T) {
	tests := []struct {
		name, golden string
		build        *kilnv1.Build
		publicURL    string
	}{
		{"a success carries the platform, the artifact and its link", "succeeded", succeededBuild(), "http://127.0.0.1:8080"},
		{"a failure carries the reason and step, no artifact", "failed", failedBuild(), "http://127.0.0.1:8080/"},
		{"a build that never ran has no platform, and no links without a URL", "cancelled", cancelledQueuedBuild(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := openStore(t)
			hooks := []HookConfig{{Command: "true", Events: []string{"succeeded", "failed", "cancelled"}}}
			if err := st.Update(func(tx store.Tx) error { return EnqueueEvent(tx, hooks, tt.build, tt.publicURL) }); err != nil {
				t.Fatal(err)
			}
			body := outbox(t, st)[0].GetBody()
			var out bytes.Buffer
			if err := json.Indent(&out, body, "", "  "); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, "event/"+tt.golden+".json", out.String()+"\n")
		})
	}
}

func TestHookConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		h    HookConfig
		ok   bool
	}{
		{"a command alone is valid", HookConfig{Command: "true"}, true},
		{"a URL with known events is valid", HookConfig{WebhookURL: "https://ci.example.org/kiln", Events: []string{"failed", "error"}}, true},
		{"a hook doing nothing is invalid", HookConfig{Events: []string{"failed"}}, false},
		{"a relative URL is invalid", HookConfig{WebhookURL: "ci.example.org/kiln"}, false},
		{"an unknown event is invalid", HookConfig{Command: "true", Events: []string{"queued"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.h.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
