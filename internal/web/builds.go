package web

import (
	"net/http"
	"net/url"
	"strconv"
	"unicode"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// maxFilterLen bounds a filter value; project names and platform values are short.
const maxFilterLen = 128

// maxTokenLen bounds the opaque page token we pass through.
const maxTokenLen = 1024

// buildFilter is the /builds query:
// ?state=&project=&os=&arch=&endian=&data_model=&libc=&page_size=&page_token=.
// The platform fields match the platform a build ran on, or the one its
// requester pinned while it waits; the metaserver accepts the spellings
// startcompile accepts (amd64, BIG, lp64, any).
type buildFilter struct {
	State     string `json:"state"` // lower-case state word, "" for any
	Project   string `json:"project"`
	Os        string `json:"os"`
	Arch      string `json:"arch"`
	Endian    string `json:"endian"`
	DataModel string `json:"data_model"`
	Libc      string `json:"libc"`
	PageSize  uint32 `json:"page_size,omitempty"`
	PageToken string `json:"page_token,omitempty"`

	state kilnv1.BuildState
}

// parseBuildFilter validates the query; anything malformed is a 400 that
// says which parameter and why.
func parseBuildFilter(q url.Values) (buildFilter, error) {
	var f buildFilter
	for key := range q {
		switch key {
		case "state", "project", "os", "arch", "endian", "data_model", "libc", "page_size", "page_token":
		default:
			return f, badRequest("Unknown parameter %q; /builds takes state, project, os, arch, endian, data_model, libc, page_size and page_token.", key)
		}
		if len(q[key]) > 1 {
			return f, badRequest("Parameter %q is given %d times; give it once.", key, len(q[key]))
		}
	}
	st, ok := parseState(q.Get("state"))
	if !ok {
		return f, badRequest("Unknown state %q; use one of %v or leave it empty.", q.Get("state"), stateWords())
	}
	f.state = st
	if st != kilnv1.BuildState_BUILD_STATE_UNSPECIFIED {
		f.State = st.Word()
	}
	var err error
	if f.Project, err = filterValue(q, "project"); err != nil {
		return f, err
	}
	for _, p := range []struct {
		key string
		dst *string
	}{{"os", &f.Os}, {"arch", &f.Arch}, {"endian", &f.Endian}, {"data_model", &f.DataModel}, {"libc", &f.Libc}} {
		if *p.dst, err = filterValue(q, p.key); err != nil {
			return f, err
		}
	}
	if raw := q.Get("page_size"); raw != "" {
		n, err := strconv.ParseUint(raw, 10, 32)
		if err != nil || n == 0 || n > maxPageSize {
			return f, badRequest("page_size must be a number from 1 to %d, not %q.", maxPageSize, raw)
		}
		f.PageSize = uint32(n)
	}
	f.PageToken = q.Get("page_token")
	if len(f.PageToken) > maxTokenLen {
		return f, badRequest("page_token is too long.")
	}
	return f, nil
}

// filterValue reads a project or platform filter: printable, no spaces, short.
func filterValue(q url.Values, key string) (string, error) {
	v := q.Get(key)
	if len(v) > maxFilterLen {
		return "", badRequest("%s is longer than %d bytes.", key, maxFilterLen)
	}
	for _, r := range v {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return "", badRequest("%s may not contain spaces or control characters.", key)
		}
	}
	return v, nil
}

// query encodes the filter back into a /builds URL, with token as the page.
func (f buildFilter) url(token string) string {
	q := url.Values{}
	if f.State != "" {
		q.Set("state", f.State)
	}
	if f.Project != "" {
		q.Set("project", f.Project)
	}
	for key, v := range map[string]string{"os": f.Os, "arch": f.Arch, "endian": f.Endian, "data_model": f.DataModel, "libc": f.Libc} {
		if v != "" {
			q.Set(key, v)
		}
	}
	if f.PageSize != 0 {
		q.Set("page_size", strconv.FormatUint(uint64(f.PageSize), 10))
	}
	if token != "" {
		q.Set("page_token", token)
	}
	if len(q) == 0 {
		return "/builds"
	}
	return "/builds?" + q.Encode()
}

// Active reports whether the filter selects anything (the page offers to
// clear it and says "no build matches these filters").
func (f buildFilter) Active() bool {
	return f.State != "" || f.Project != "" || f.Os != "" || f.Arch != "" || f.Endian != "" || f.DataModel != "" || f.Libc != ""
}

// buildsView is the data of /builds.
type buildsView struct {
	Filter        buildFilter `json:"filter"`
	Builds        []pbBuild   `json:"builds"`
	NextPageToken string      `json:"next_page_token,omitempty"`
	// NextURL and FirstURL are links for the page, relative to the site root;
	// empty when there is no next page or this is the first page.
	NextURL  string   `json:"next_url,omitempty"`
	FirstURL string   `json:"first_url,omitempty"`
	States   []string `json:"-"`
}

func (s *server) handleBuilds(w http.ResponseWriter, r *http.Request) {
	f, err := parseBuildFilter(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	size := f.PageSize
	if size == 0 {
		size = s.pageSz
	}
	ctx, cancel := s.rpcContext(r)
	defer cancel()
	resp, err := s.status.ListBuilds(ctx, &kilnv1.ListBuildsRequest{
		State: f.state, Project: f.Project, Os: f.Os, Arch: f.Arch, Endian: f.Endian, DataModel: f.DataModel, Libc: f.Libc,
		PageSize: size, PageToken: f.PageToken,
	})
	if err != nil {
		s.writeError(w, r, fromRPC(err, "build list"))
		return
	}
	v := buildsView{
		Filter:        f,
		Builds:        wrapBuilds(resp.GetBuilds()),
		NextPageToken: resp.GetNextPageToken(),
		States:        stateWords(),
	}
	if v.NextPageToken != "" {
		v.NextURL = f.url(v.NextPageToken)
	}
	if f.PageToken != "" {
		v.FirstURL = f.url("")
	}
	s.respond(w, r, "builds", "Builds", "builds", v)
}
