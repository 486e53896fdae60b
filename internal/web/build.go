package web

import (
	"net/http"
	"regexp"
	"strconv"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// buildView is the data of /build/<id>.
type buildView struct {
	Build pbBuild `json:"build"`
	// State is the lower-case state word; Final is true for SUCCEEDED,
	// FAILED, ERROR, CANCELLED and EXPIRED.
	State string `json:"state"`
	Final bool   `json:"final"`
	// WaitSeconds runs from creation to the start (to now while queued);
	// RunSeconds from the start to the end (to now while running).
	WaitSeconds *float64 `json:"wait_seconds"`
	RunSeconds  *float64 `json:"run_seconds"`
	LogURL      string   `json:"log_url"`
	LogTextURL  string   `json:"log_text_url"`
	// ArtifactURL and ArtifactName are set when there is an artifact.
	ArtifactURL  string `json:"artifact_url,omitempty"`
	ArtifactName string `json:"artifact_name,omitempty"`
	// Verification is whether the artifact is trusted: "verified",
	// "unverified", "disputed", "not_reproducible" ("" before a result);
	// AgreeingBuildServers agree on it (never null).
	Verification         string   `json:"verification"`
	AgreeingBuildServers []string `json:"agreeing_build_servers"`
}

func (s *server) handleBuild(w http.ResponseWriter, r *http.Request) {
	b, err := s.getBuild(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v := newBuildView(b, s.now())
	s.respond(w, r, "build", "Build "+strconv.FormatUint(b.GetId(), 10)+" · "+b.GetProject(), "builds", v)
}

// getBuild reads the build named by the {id} path segment.
func (s *server) getBuild(r *http.Request) (*kilnv1.Build, error) {
	id, err := parseBuildID(r)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.rpcContext(r)
	defer cancel()
	resp, err := s.compile.GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: id})
	if err != nil {
		return nil, fromRPC(err, "build "+strconv.FormatUint(id, 10))
	}
	if resp.GetBuild() == nil {
		return nil, &httpError{code: http.StatusNotFound, msg: "There is no build " + strconv.FormatUint(id, 10) + "."}
	}
	return resp.GetBuild(), nil
}

func newBuildView(b *kilnv1.Build, now time.Time) buildView {
	base := "/build/" + strconv.FormatUint(b.GetId(), 10)
	v := buildView{
		Build:                pbBuild{b},
		State:                b.GetState().Word(),
		Final:                b.GetState().Final(),
		LogURL:               base + "/log",
		LogTextURL:           base + "/log.txt",
		Verification:         b.GetVerification().Word(),
		AgreeingBuildServers: append([]string{}, b.GetAgreeingBuildServers()...),
	}
	if c := b.GetCreatedAt(); c != nil {
		end := now
		if st := b.GetStartedAt(); st != nil {
			end = st.AsTime()
		} else if f := b.GetFinishedAt(); f != nil {
			end = f.AsTime()
		}
		d := end.Sub(c.AsTime()).Seconds()
		v.WaitSeconds = &d
	}
	if st := b.GetStartedAt(); st != nil {
		end := now
		if f := b.GetFinishedAt(); f != nil {
			end = f.AsTime()
		}
		d := end.Sub(st.AsTime()).Seconds()
		v.RunSeconds = &d
	}
	// Only a verified artifact is offered (the metaserver serves no other
	// to a default request).
	if b.GetArtifact() != nil && b.GetArtifact().GetSha256() != "" && b.GetWithdrawn() == "" && b.GetVerification().Trusted() {
		v.ArtifactURL = base + "/artifact"
		v.ArtifactName = artifactName(b)
	}
	return v
}

// unsafeFileChars are replaced in download names, which end up in a header
// and on the visitor's disk.
var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._+-]+`)

// artifactName is the download name "<project>-<id>.tar.gz".
func artifactName(b *kilnv1.Build) string {
	p := unsafeFileChars.ReplaceAllString(b.GetProject(), "_")
	if p == "" || p[0] == '.' {
		p = "build" + p
	}
	return p + "-" + strconv.FormatUint(b.GetId(), 10) + ".tar.gz"
}
