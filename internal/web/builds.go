package web

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// maxFilterLen bounds a filter value; project names and platform values are short.
const maxFilterLen = 128

// maxTokenLen bounds the opaque page token we pass through.
const maxTokenLen = 1024

// buildFilter is the /builds query: ?state=&project=&page_size=&page_token=
// and one parameter per platform.FilterFields (os, arch, endian, data_model,
// libc). The platform fields match the platform a build ran on, or the one
// its requester pinned while it waits; the metaserver accepts the spellings
// startcompile accepts (amd64, BIG, lp64, any).
type buildFilter struct {
	State   string // lower-case state word, "" for any
	Project string
	// Platform holds the value of each of platform.FilterFields, "" for
	// any; the page reads it as .Filter.Platform.
	Platform  map[string]string
	PageSize  uint32
	PageToken string

	state kilnv1.BuildState
}

// queryKeys are the parameters /builds takes.
var queryKeys = slices.Concat([]string{"state", "project"}, platform.FilterFields, []string{"page_size", "page_token"})

// MarshalJSON writes the filter as one flat object, platform fields
// beside state and project: {"state", "project", "os", ..., "page_size",
// "page_token"}, the last two omitted when empty.
func (f buildFilter) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	add := func(key string, v any) {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(key)
		val, _ := json.Marshal(v)
		b.Write(k)
		b.WriteByte(':')
		b.Write(val)
	}
	add("state", f.State)
	add("project", f.Project)
	for _, name := range platform.FilterFields {
		add(name, f.Platform[name])
	}
	if f.PageSize != 0 {
		add("page_size", f.PageSize)
	}
	if f.PageToken != "" {
		add("page_token", f.PageToken)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// parseBuildFilter validates the query; anything malformed is a 400 that
// says which parameter and why.
func parseBuildFilter(q url.Values) (buildFilter, error) {
	f := buildFilter{Platform: map[string]string{}}
	for key := range q {
		if !slices.Contains(queryKeys, key) {
			return f, badRequest("Unknown parameter %q; /builds takes %s and %s.", key,
				strings.Join(queryKeys[:len(queryKeys)-1], ", "), queryKeys[len(queryKeys)-1])
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
	for _, name := range platform.FilterFields {
		if f.Platform[name], err = filterValue(q, name); err != nil {
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
	for key, v := range f.Platform {
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
	if f.State != "" || f.Project != "" {
		return true
	}
	for _, v := range f.Platform {
		if v != "" {
			return true
		}
	}
	return false
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
	req := &kilnv1.ListBuildsRequest{State: f.state, Project: f.Project, PageSize: size, PageToken: f.PageToken}
	for _, pf := range platform.Registry {
		pf.SetListFilter(req, f.Platform[pf.Name])
	}
	resp, err := s.status.ListBuilds(ctx, req)
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
