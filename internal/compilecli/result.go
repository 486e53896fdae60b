package compilecli

import (
	"encoding/json"
	"io"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Result is the JSON object --json prints on stdout when a submit or status
// command ends, whatever the outcome. Fields that do not apply are zero; the
// slices are never null.
type Result struct {
	BuildID   uint64 `json:"build_id"`
	RequestID uint64 `json:"request_id,omitempty"`
	// State is the lower-case build state ("queued", "succeeded", ...), or
	// "" when no build was reached.
	State    string            `json:"state"`
	Cached   bool              `json:"cached"`
	Joined   bool              `json:"joined"`
	Project  string            `json:"project,omitempty"`
	Revision string            `json:"revision,omitempty"`
	Commit   string            `json:"commit"`
	Options  map[string]string `json:"options,omitempty"`
	// Constraints are what the request pinned, as field -> value.
	Constraints    map[string]string `json:"constraints,omitempty"`
	ArtifactSHA256 string            `json:"artifact_sha256"`
	ArtifactSize   uint64            `json:"artifact_size"`
	// Platform is the measured system info of the target that built it
	// (protojson with proto field names), null before dispatch. write
	// encodes it from platform, so a command without --json never does.
	Platform json.RawMessage `json:"platform"`
	platform *kilnv1.SystemInfo
	// encoded is the platform whose encoding Platform holds.
	encoded *kilnv1.SystemInfo
	// Files are the artifact's paths; after a download, the paths extracted.
	Files []string `json:"files"`
	// DownloadDir is where the artifact was unpacked, if it was.
	DownloadDir    string   `json:"download_dir,omitempty"`
	Failure        string   `json:"failure"`
	FailingStep    string   `json:"failing_step,omitempty"`
	LogSize        uint64   `json:"log_size"`
	QueuePosition  uint32   `json:"queue_position,omitempty"`
	WaitingReasons []string `json:"waiting_reasons,omitempty"`
	// Verification is whether the artifact is trusted: "verified",
	// "unverified", "disputed" or "not_reproducible" ("" before any
	// result); AgreeingBuildServers are the build servers whose results
	// agree on it (never null).
	Verification         string   `json:"verification"`
	AgreeingBuildServers []string `json:"agreeing_build_servers"`
	// Error is the message of the error that ended the command, if any.
	Error string `json:"error,omitempty"`
	// ExitCode is the process exit status.
	ExitCode int `json:"exit_code"`
}

// setBuild copies b's fields into r.
func (r *Result) setBuild(b *kilnv1.Build) {
	if b == nil {
		return
	}
	r.BuildID = b.GetId()
	r.State = b.GetState().Word()
	r.Project = b.GetProject()
	r.Revision = b.GetRevision()
	r.Commit = b.GetCommit()
	r.Options = b.GetOptions()
	r.Constraints = constraintMap(b.GetConstraints())
	if a := b.GetArtifact(); a != nil {
		r.ArtifactSHA256 = a.GetSha256()
		r.ArtifactSize = a.GetSize()
		r.Files = append([]string(nil), a.GetFiles()...)
	}
	if p := b.GetPlatform(); p != nil {
		r.platform = p
	}
	r.Failure = b.GetFailure()
	r.FailingStep = b.GetFailingStep()
	r.LogSize = b.GetLogSize()
	r.QueuePosition = b.GetQueuePosition()
	r.WaitingReasons = b.GetWaitingReasons()
	r.Verification = b.GetVerification().Word()
	r.AgreeingBuildServers = append([]string(nil), b.GetAgreeingBuildServers()...)
}

// encodePlatform encodes p into Platform unless it holds p already. A
// wait calls it as soon as the build's target is known, long before the
// build ends: encoding a message type the first time builds protobuf's
// reflection tables, and the process is idle while the build runs.
func (r *Result) encodePlatform(p *kilnv1.SystemInfo) {
	if p == nil || p == r.encoded {
		return
	}
	opts := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	if raw, err := opts.Marshal(p); err == nil {
		r.Platform, r.encoded = raw, p
	}
}

// write prints r as one line of JSON.
func (r *Result) write(w io.Writer) error {
	r.encodePlatform(r.platform)
	if r.Files == nil {
		r.Files = []string{}
	}
	if r.AgreeingBuildServers == nil {
		r.AgreeingBuildServers = []string{}
	}
	if len(r.Platform) == 0 {
		r.Platform = json.RawMessage("null")
	}
	return json.NewEncoder(w).Encode(r)
}

// constraintMap returns the pinned fields of c.
func constraintMap(c *kilnv1.PlatformConstraints) map[string]string {
	m := map[string]string{}
	for _, f := range platform.Fields {
		if v := platform.Get(c, f); v != "" {
			m[f] = v
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}
