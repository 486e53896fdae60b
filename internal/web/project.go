package web

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// maxProjectBuilds bounds the builds the project pages and badges read,
// newest first: one ListBuilds page at the metaserver's cap. Older builds
// do not show in the matrix nor in a platform's history ("last succeeded"
// then says never within the window, and Truncated is set).
const maxProjectBuilds = maxPageSize

// projectView is the data of /project/<name>.
type projectView struct {
	Project string `json:"project"`
	matrix
	// NeverBuiltOn are the platforms of connected targets that none of the
	// project's builds read ran on or asked for.
	NeverBuiltOn []string `json:"never_built_on"`
	// Command requests a build on the requester's own platform,
	// CheckCommand one on every connected platform.
	Command      string `json:"command"`
	CheckCommand string `json:"check_command"`
	BuildsURL    string `json:"builds_url"`
	BadgeURL     string `json:"badge_url"`
	FeedURL      string `json:"feed_url"`
	// Truncated says the project has more builds than the page read.
	Truncated bool `json:"truncated"`
	// Pins are the project's pinned artifacts, in name order.
	Pins []pinView `json:"pins"`
	// BuildTimes are the run times of its builds per platform, and
	// BuildTimesChart draws them.
	BuildTimes      []distRow `json:"build_times"`
	BuildTimesChart chart     `json:"-"`
}

// pinView is one pin on a project page.
type pinView struct {
	Name     string     `json:"name"`
	BuildID  uint64     `json:"build_id"`
	URL      string     `json:"url"`
	Commit   string     `json:"commit"`
	Sha256   string     `json:"sha256"`
	Size     uint64     `json:"size"`
	Platform string     `json:"platform"`
	At       *time.Time `json:"created_at"`
	// Withdrawn says why the pin no longer resolves, "" while it does.
	Withdrawn string `json:"withdrawn"`
	// Command downloads the pinned artifact.
	Command string `json:"command"`
}

// newPinViews turns ListPins' answer into the page's rows.
func newPinViews(pins []*kilnv1.PinStatus) []pinView {
	out := []pinView{}
	for _, p := range pins {
		v := pinView{Name: p.GetName(), BuildID: p.GetBuildId(), URL: buildURL(p.GetBuildId()), Commit: p.GetCommit(),
			Sha256: p.GetSha256(), Size: p.GetSize(), Withdrawn: p.GetWithdrawn(),
			Command: "startcompile --pin " + shellQuote(p.GetName()) + " --download DIR EMAIL"}
		if p.GetPlatform() != nil {
			v.Platform = describeSystem(p.GetPlatform())
		}
		if p.GetCreatedAt() != nil {
			t := p.GetCreatedAt().AsTime()
			v.At = &t
		}
		out = append(out, v)
	}
	return out
}

// projectsView is the data of /projects.
type projectsView struct {
	Projects []projectSummary `json:"projects"`
	// Truncated says the farm has more builds than the page read: projects
	// built only before them are missing.
	Truncated bool `json:"truncated"`
}

// projectSummary is one row of /projects.
type projectSummary struct {
	Project   string `json:"project"`
	URL       string `json:"url"`
	Platforms int    `json:"platforms"`
	Passing   int    `json:"passing"`
	Broken    int    `json:"broken"`
	// Latest is the project's newest build.
	Latest      buildRef `json:"latest"`
	LatestState string   `json:"latest_state"`
}

// listBuilds reads up to maxProjectBuilds builds matching req, newest
// first, and whether there were more.
func (s *server) listBuilds(ctx context.Context, req *kilnv1.ListBuildsRequest) ([]*kilnv1.Build, bool, error) {
	req.PageSize = maxProjectBuilds
	resp, err := s.status.ListBuilds(ctx, req)
	if err != nil {
		return nil, false, err
	}
	return resp.GetBuilds(), resp.GetNextPageToken() != "", nil
}

// projectName reads and checks the {name} path segment like a /builds
// project filter.
func projectName(raw string) (string, error) {
	if raw == "" || len(raw) > maxFilterLen {
		return "", badRequest("A project name has 1 to %d bytes.", maxFilterLen)
	}
	for _, r := range raw {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return "", badRequest("A project name has no spaces or control characters.")
		}
	}
	return raw, nil
}

func (s *server) handleProject(w http.ResponseWriter, r *http.Request) {
	name, err := projectName(r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, cancel := s.rpcContext(r)
	defer cancel()
	builds, more, err := s.listBuilds(ctx, &kilnv1.ListBuildsRequest{Project: name})
	if err != nil {
		s.writeError(w, r, fromRPC(err, "project "+name))
		return
	}
	if len(builds) == 0 {
		s.writeError(w, r, &httpError{code: http.StatusNotFound, msg: "No build of project " + name + " is known: ask for one with " + checkCommand(name) + "."})
		return
	}
	servers, err := s.status.ListBuildServers(ctx, &kilnv1.ListBuildServersRequest{})
	if err != nil {
		s.writeError(w, r, fromRPC(err, "build server list"))
		return
	}
	v := projectView{
		Project:      name,
		matrix:       newMatrix(name, builds),
		Command:      submitCommand(name, nil),
		CheckCommand: checkCommand(name),
		BuildsURL:    buildFilter{Project: name}.url(""),
		BadgeURL:     badgeURL(name),
		FeedURL:      feedURL(name),
		Truncated:    more,
	}
	v.NeverBuiltOn = neverBuiltOn(v.Platforms, servers.GetBuildServers())
	pins, err := s.status.ListPins(ctx, &kilnv1.ListPinsRequest{Project: name})
	if err != nil {
		s.writeError(w, r, fromRPC(err, "pins of "+name))
		return
	}
	v.Pins = newPinViews(pins.GetPins())
	v.BuildTimes = buildTimes(builds)
	v.BuildTimesChart = distChart("chart-build-times", "Build time of "+name+" per platform", v.BuildTimes)
	s.respond(w, r, "project", "Project "+name, "projects", v)
}

// neverBuiltOn lists the platforms of connected, usable targets that have
// no column, sorted.
func neverBuiltOn(cols []platformColumn, servers []*kilnv1.BuildServerStatus) []string {
	have := map[string]bool{}
	for _, c := range cols {
		have[c.Platform] = true
	}
	out := []string{}
	for _, bs := range servers {
		if !bs.GetConnected() || bs.GetRevoked() {
			continue
		}
		for _, t := range bs.GetTargets() {
			if key := systemKey(t.GetSystem()); !have[key] {
				have[key] = true
				out = append(out, key)
			}
		}
	}
	slices.Sort(out)
	return out
}

func (s *server) handleProjects(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.rpcContext(r)
	defer cancel()
	builds, more, err := s.listBuilds(ctx, &kilnv1.ListBuildsRequest{})
	if err != nil {
		s.writeError(w, r, fromRPC(err, "build list"))
		return
	}
	byProject := map[string][]*kilnv1.Build{}
	var names []string
	for _, b := range builds {
		p := b.GetProject()
		if _, ok := byProject[p]; !ok {
			names = append(names, p)
		}
		byProject[p] = append(byProject[p], b)
	}
	slices.SortFunc(names, strings.Compare)
	v := projectsView{Projects: []projectSummary{}, Truncated: more}
	for _, name := range names {
		bs := byProject[name]
		m := newMatrix(name, bs)
		sum := projectSummary{Project: name, URL: projectURL(name), Platforms: len(m.Platforms),
			Latest: *newBuildRef(bs[0]), LatestState: bs[0].GetState().Word()}
		for _, c := range m.Platforms {
			switch {
			case c.Broken():
				sum.Broken++
			case c.State == kilnv1.BuildState_BUILD_STATE_SUCCEEDED.Word():
				sum.Passing++
			}
		}
		v.Projects = append(v.Projects, sum)
	}
	s.respond(w, r, "projects", "Projects", "projects", v)
}
