package mail

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// HookConfig is one operator-configured build-event hook: a shell command,
// a webhook URL, or both, run for the listed events.
type HookConfig struct {
	// Command is run by "sh -c" with the event JSON on stdin and
	// KILN_EVENT, KILN_BUILD_ID in its environment; empty: no command.
	Command string
	// WebhookURL receives the event JSON by POST (absolute http or https
	// URL); empty: no webhook.
	WebhookURL string
	// Events are the build end states the hook fires for: "succeeded",
	// "failed", "error", "cancelled", "expired". Empty means DefaultEvents.
	Events []string
}

// DefaultEvents are the events of a HookConfig that lists none: a
// cancelled build was stopped by someone who already knows; an expired
// one ended because no build server could take it, which nobody may know.
var DefaultEvents = []string{"succeeded", "failed", "error", "expired"}

// ErrNotFinal is returned by EnqueueEvent for a build that has not ended.
var ErrNotFinal = errors.New("build is not in a final state")

// Validate checks h before the metaserver starts: at least one of Command
// and WebhookURL, an absolute http(s) URL, and known event names.
func (h HookConfig) Validate() error {
	if h.Command == "" && h.WebhookURL == "" {
		return errors.New("hook: neither command nor webhook URL")
	}
	if h.WebhookURL != "" {
		if err := checkWebhookURL(h.WebhookURL); err != nil {
			return fmt.Errorf("hook: %w", err)
		}
	}
	for _, e := range h.Events {
		if !slices.Contains(finalStates, e) {
			return fmt.Errorf("hook: unknown event %q (want one of %s)", e, strings.Join(finalStates, ", "))
		}
	}
	return nil
}

// Fires tells whether h fires for a build that ended in state (a StateName).
func (h HookConfig) Fires(state string) bool {
	events := h.Events
	if len(events) == 0 {
		events = DefaultEvents
	}
	return slices.Contains(events, state)
}

var finalStates = []string{"succeeded", "failed", "error", "cancelled", "expired"}

// Event is the JSON document a hook receives when a build ends. Its field
// names are a public contract: add fields, never rename or remove one. It
// never carries a requester's address.
//
// Example (abridged):
//
//	{"event":"build.succeeded","build_id":42,"project":"hello",
//	 "revision":"main","commit":"0123…","state":"succeeded",
//	 "platform":{"os":"linux","arch":"x86_64",…},
//	 "artifact":{"sha256":"ab12…","size":1234,"files":3},
//	 "links":{"build":"http://127.0.0.1:8080/build/42",…}}
type Event struct {
	// Event is "build." + State, also sent as the X-Kiln-Event header.
	Event   string `json:"event"`
	BuildID uint64 `json:"build_id"`
	Project string `json:"project"`
	// Revision as the first requester wrote it; Commit is what was built.
	Revision string            `json:"revision"`
	Commit   string            `json:"commit"`
	Options  map[string]string `json:"options,omitempty"`
	// State is the final state: succeeded, failed, error, cancelled or expired.
	State string `json:"state"`
	// Platform is the measured platform; absent when the build never ran.
	Platform *EventPlatform `json:"platform,omitempty"`
	// Artifact is present when the build succeeded.
	Artifact *EventArtifact `json:"artifact,omitempty"`
	// Failure and FailingStep explain a build that did not succeed.
	Failure     string `json:"failure,omitempty"`
	FailingStep string `json:"failing_step,omitempty"`
	// Times in RFC 3339, UTC; a time the build never reached is absent.
	CreatedAt  *time.Time `json:"created_at,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// Links to webstatus; absent when no public URL is configured.
	Links *EventLinks `json:"links,omitempty"`
}

// EventPlatform is the identity part of the measured platform.
type EventPlatform struct {
	OS              string `json:"os"`
	Arch            string `json:"arch"`
	Endian          string `json:"endian"`
	DataModel       string `json:"data_model"`
	CharBit         uint32 `json:"char_bit"`
	Libc            string `json:"libc"`
	LibcVersion     string `json:"libc_version"`
	Compiler        string `json:"compiler"`
	CompilerVersion string `json:"compiler_version"`
	Emulated        bool   `json:"emulated"`
}

// EventArtifact identifies the artifact of a successful build.
type EventArtifact struct {
	SHA256 string `json:"sha256"`
	Size   uint64 `json:"size"`
	Files  int    `json:"files"`
}

// EventLinks are webstatus pages of the build.
type EventLinks struct {
	Build    string `json:"build"`
	Log      string `json:"log"`
	Artifact string `json:"artifact,omitempty"`
}

// NewEvent builds the Event for b, with links under publicURL (empty: no
// links).
func NewEvent(b *kilnv1.Build, publicURL string) *Event {
	state := StateName(b.GetState())
	e := &Event{
		Event:       "build." + state,
		BuildID:     b.GetId(),
		Project:     b.GetProject(),
		Revision:    b.GetRevision(),
		Commit:      b.GetCommit(),
		Options:     b.GetOptions(),
		State:       state,
		Failure:     b.GetFailure(),
		FailingStep: b.GetFailingStep(),
	}
	if p := b.GetPlatform(); p != nil {
		e.Platform = &EventPlatform{
			OS: p.GetOs(), Arch: p.GetArch(), Endian: p.GetEndian(), DataModel: p.GetDataModel(),
			CharBit: p.GetCharBit(), Libc: p.GetLibc(), LibcVersion: p.GetLibcVersion(),
			Compiler: p.GetCompiler(), CompilerVersion: p.GetCompilerVersion(), Emulated: p.GetEmulated(),
		}
	}
	succeeded := b.GetState() == kilnv1.BuildState_BUILD_STATE_SUCCEEDED
	if a := b.GetArtifact(); succeeded && a != nil {
		e.Artifact = &EventArtifact{SHA256: a.GetSha256(), Size: a.GetSize(), Files: len(a.GetFiles())}
	}
	for _, t := range []struct {
		dst **time.Time
		ok  bool
		v   time.Time
	}{
		{&e.CreatedAt, b.GetCreatedAt() != nil, b.GetCreatedAt().AsTime()},
		{&e.StartedAt, b.GetStartedAt() != nil, b.GetStartedAt().AsTime()},
		{&e.FinishedAt, b.GetFinishedAt() != nil, b.GetFinishedAt().AsTime()},
	} {
		if t.ok {
			v := t.v.UTC()
			*t.dst = &v
		}
	}
	if base := strings.TrimRight(publicURL, "/"); base != "" {
		page := fmt.Sprintf("%s/build/%d", base, b.GetId())
		e.Links = &EventLinks{Build: page, Log: page + "/log"}
		if e.Artifact != nil {
			e.Links.Artifact = page + "/artifact"
		}
	}
	return e
}

// EnqueueEvent adds, inside tx, one outbox record per delivery of the
// event "build ended" for b: for each hook that fires for b's state, a
// KindCommand record if it has a Command and a KindWebhook record if it
// has a WebhookURL. Every record's Body is the Event JSON and its Subject
// the event name. Call it in the transaction that ends the build, as
// Enqueue. A build that has not ended yields ErrNotFinal; no hook fires
// for no record.
func EnqueueEvent(tx store.Tx, hooks []HookConfig, b *kilnv1.Build, publicURL string) error {
	state := StateName(b.GetState())
	if !slices.Contains(finalStates, state) {
		return fmt.Errorf("mail: event for build %d in state %s: %w", b.GetId(), state, ErrNotFinal)
	}
	var body []byte
	for i, h := range hooks {
		if !h.Fires(state) {
			continue
		}
		if body == nil {
			var err error
			if body, err = json.Marshal(NewEvent(b, publicURL)); err != nil {
				return fmt.Errorf("mail: event JSON: %w", err)
			}
		}
		for _, d := range []struct{ kind, to string }{{KindCommand, h.Command}, {KindWebhook, h.WebhookURL}} {
			if d.to == "" {
				continue
			}
			m := &store.Outbox{Kind: d.kind, To: d.to, Subject: "build." + state, Body: body, BuildId: b.GetId()}
			if err := Enqueue(tx, m); err != nil {
				return fmt.Errorf("mail: hook %d: %w", i, err)
			}
		}
	}
	return nil
}
