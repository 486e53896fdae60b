package web_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Commits of the demo project, oldest first.
const (
	demoC1 = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"
	demoC2 = "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2"
	demoC3 = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3"
	demoC4 = "c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4"
	// hostileProject is a project name made to break out of HTML, XML and
	// the shell.
	hostileProject = `<script>alert('x')</script>&"`
)

// addDemoProject gives f a project "demo" built on two platforms over four
// commits: x86_64 always succeeds; s390x succeeded at c1, failed since c2
// (an infrastructure error at c3 says nothing), and is queued at c4.
func addDemoProject(f *farm) {
	s390xPins := &kilnv1.PlatformConstraints{Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", Libc: "glibc"}
	add := func(id uint64, commit string, si *kilnv1.SystemInfo, st kilnv1.BuildState, hoursAgo int) *kilnv1.Build {
		b := &kilnv1.Build{Id: id, Project: "demo", Revision: "main", Commit: commit, State: st, Platform: si,
			CreatedAt: ts(-time.Duration(hoursAgo) * time.Hour)}
		if st.Final() {
			b.FinishedAt = ts(-time.Duration(hoursAgo)*time.Hour + time.Minute)
		}
		if st == kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
			b.CacheKey = "key" + commit[:4]
		}
		f.add(b, "", st.Final())
		return b
	}
	add(201, demoC1, x86System(), kilnv1.BuildState_BUILD_STATE_SUCCEEDED, 100)
	add(202, demoC1, s390xSystem(), kilnv1.BuildState_BUILD_STATE_SUCCEEDED, 100)
	add(203, demoC2, x86System(), kilnv1.BuildState_BUILD_STATE_SUCCEEDED, 72)
	add(204, demoC2, s390xSystem(), kilnv1.BuildState_BUILD_STATE_FAILED, 72)
	add(205, demoC3, x86System(), kilnv1.BuildState_BUILD_STATE_SUCCEEDED, 24).Withdrawn = "its build server's credential was revoked"
	add(206, demoC3, s390xSystem(), kilnv1.BuildState_BUILD_STATE_FAILED, 24)
	add(207, demoC3, s390xSystem(), kilnv1.BuildState_BUILD_STATE_ERROR, 23)
	add(208, demoC4, x86System(), kilnv1.BuildState_BUILD_STATE_RUNNING, 1)
	add(209, demoC4, nil, kilnv1.BuildState_BUILD_STATE_QUEUED, 1).Constraints = s390xPins
	f.add(&kilnv1.Build{Id: 210, Project: hostileProject, Revision: "main", Commit: demoC1, State: kilnv1.BuildState_BUILD_STATE_FAILED,
		Platform: x86System(), CreatedAt: ts(-time.Hour), FinishedAt: ts(0)}, "", true)
}

const (
	x86Column   = "linux x86_64 little LP64 glibc"
	s390xColumn = "linux s390x big LP64 glibc"
)

func TestProjectPageShowsTheMatrixAndWhereItIsBroken(t *testing.T) {
	f := newFarm()
	addDemoProject(f)
	srv := startFarm(t, f)
	r := get(t, srv.URL+"/project/demo", "")
	if r.code != http.StatusOK {
		t.Fatalf("status %d:\n%s", r.code, r.body)
	}
	for _, w := range []string{
		"<title>Project demo · Kiln</title>", `href="/projects" aria-current="page"`,
		`<th class="platform" title="linux s390x big LP64 glibc">`, `<th class="platform" title="linux x86_64 little LP64 glibc">`,
		// Rows newest first, cells in column order (s390x, x86_64).
		`<code title="` + demoC4 + `">c4c4c4c4c4c4</code>`,
		`<a class="badge state-queued" href="/build/209"`, `<a class="badge state-running" href="/build/208"`,
		// c3 on s390x: the newest build (207, an error) is the cell; two builds.
		`<a class="badge state-error" href="/build/207" title="build #207: error, 2 builds">`,
		`<a class="badge state-succeeded" href="/build/203" title="build #203: succeeded">succeeded</a> <span class="cached"`,
		"broken since commit <code title=\"" + demoC2 + "\">c2c2c2c2c2c2</code> (<a href=\"/build/204\">#204</a>), 2d",
		`<a href="/build/202">#202</a> commit <code title="` + demoC1 + `">c1c1c1c1c1c1</code>`,
		`<a href="/build/205">#205</a>`,
		"<li>linux x86_64 little LP64 musl</li>",
		"startcompile --project demo --os linux --arch s390x --endian big --data-model LP64 --libc glibc YOUR_EMAIL",
		`<code id="check-command">startcompile check --project demo YOUR_EMAIL</code>`,
		`<img src="/badge/demo.svg"`, `href="/builds?project=demo"`,
	} {
		if !strings.Contains(r.body, w) {
			t.Errorf("page lacks %q", w)
		}
	}
	// Withdrawn (205) and unfinished builds are not marked cached.
	for _, id := range []string{"205", "208"} {
		if strings.Contains(r.body, `href="/build/`+id+`" title="build #`+id+`: succeeded">succeeded</a> <span class="cached"`) ||
			strings.Contains(r.body, `href="/build/`+id+`" title="build #`+id+`: running">running</a> <span class="cached"`) {
			t.Errorf("build %s marked cached", id)
		}
	}
	if strings.Count(r.body, "broken since commit") != 1 {
		t.Errorf("want exactly one broken platform:\n%s", r.body)
	}
}

func TestProjectPageAsJSON(t *testing.T) {
	f := newFarm()
	addDemoProject(f)
	srv := startFarm(t, f)
	r := get(t, srv.URL+"/project/demo", "application/json")
	var v struct {
		Project   string `json:"project"`
		Platforms []struct {
			Platform    string            `json:"platform"`
			Constraints map[string]string `json:"constraints"`
			State       string            `json:"state"`
			LastSuccess *struct {
				BuildID uint64 `json:"build_id"`
				At      string `json:"at"`
			} `json:"last_success"`
			BrokenSince *struct {
				BuildID uint64 `json:"build_id"`
				Commit  string `json:"commit"`
			} `json:"broken_since"`
		} `json:"platforms"`
		Commits []struct {
			Commit string `json:"commit"`
			Cells  []struct {
				BuildID uint64 `json:"build_id"`
				State   string `json:"state"`
				Cached  bool   `json:"cached"`
				Builds  int    `json:"builds"`
			} `json:"cells"`
		} `json:"commits"`
		NeverBuiltOn []string `json:"never_built_on"`
		CheckCommand string   `json:"check_command"`
	}
	if err := json.Unmarshal([]byte(r.body), &v); err != nil || r.code != 200 {
		t.Fatalf("status %d, %v:\n%s", r.code, err, r.body)
	}
	if len(v.Platforms) != 2 || v.Platforms[0].Platform != s390xColumn || v.Platforms[1].Platform != x86Column {
		t.Fatalf("platforms %+v", v.Platforms)
	}
	s390x, x86 := v.Platforms[0], v.Platforms[1]
	expect(t, s390x.State, "failed")
	expect(t, s390x.Constraints["endian"], "big")
	if s390x.BrokenSince == nil || s390x.BrokenSince.BuildID != 204 || s390x.BrokenSince.Commit != demoC2 {
		t.Errorf("s390x broken since %+v, want build 204 at c2", s390x.BrokenSince)
	}
	if s390x.LastSuccess == nil || s390x.LastSuccess.BuildID != 202 || s390x.LastSuccess.At != "2026-03-10T11:10:26Z" {
		t.Errorf("s390x last success %+v, want build 202", s390x.LastSuccess)
	}
	expect(t, x86.State, "succeeded")
	if x86.BrokenSince != nil || x86.LastSuccess == nil || x86.LastSuccess.BuildID != 205 {
		t.Errorf("x86_64: broken %+v, last success %+v", x86.BrokenSince, x86.LastSuccess)
	}
	var commits []string
	for _, c := range v.Commits {
		commits = append(commits, c.Commit[:2])
	}
	expect(t, strings.Join(commits, ","), "c4,c3,c2,c1")
	c3 := v.Commits[1].Cells[0]
	if c3.BuildID != 207 || c3.State != "error" || c3.Builds != 2 {
		t.Errorf("c3 on s390x: %+v, want the newest build 207 of 2", c3)
	}
	if c2 := v.Commits[2].Cells[1]; !c2.Cached || v.Commits[1].Cells[1].Cached {
		t.Errorf("cached marks: c2 x86 %v (want true), c3 x86 %v (withdrawn: want false)", c2.Cached, v.Commits[1].Cells[1].Cached)
	}
	expect(t, strings.Join(v.NeverBuiltOn, ";"), "linux x86_64 little LP64 musl")
	expect(t, v.CheckCommand, "startcompile check --project demo YOUR_EMAIL")
}

func TestProjectsListsEveryProjectWithItsHealth(t *testing.T) {
	f := newFarm()
	addDemoProject(f)
	srv := startFarm(t, f)
	r := get(t, srv.URL+"/projects", "application/json")
	var v struct {
		Projects []struct {
			Project string `json:"project"`
			URL     string `json:"url"`
			Passing int    `json:"passing"`
			Broken  int    `json:"broken"`
		} `json:"projects"`
	}
	if err := json.Unmarshal([]byte(r.body), &v); err != nil || r.code != 200 {
		t.Fatalf("status %d, %v:\n%s", r.code, err, r.body)
	}
	got := map[string]string{}
	for _, p := range v.Projects {
		got[p.Project] = p.URL + " " + string(rune('0'+p.Passing)) + "/" + string(rune('0'+p.Broken))
	}
	for name, want := range map[string]string{
		"demo":         "/project/demo 1/1",
		"hello":        "/project/hello 1/1",
		"libfoo":       "/project/libfoo 0/0",
		hostileProject: "/project/" + url.PathEscape(hostileProject) + " 0/1",
	} {
		if got[name] != want {
			t.Errorf("%q: %q, want %q", name, got[name], want)
		}
	}
	page := get(t, srv.URL+"/projects", "")
	if page.code != 200 || !strings.Contains(page.body, `<a class="project-link" href="/project/demo">demo</a>`) {
		t.Errorf("HTML list lacks the link to demo:\n%s", page.body)
	}
	if strings.Contains(page.body, "<script>alert") {
		t.Error("the hostile project name is not escaped")
	}
}

func TestProjectPageEscapesAHostileName(t *testing.T) {
	f := newFarm()
	addDemoProject(f)
	srv := startFarm(t, f)
	r := get(t, srv.URL+"/project/"+url.PathEscape(hostileProject), "")
	if r.code != 200 {
		t.Fatalf("status %d:\n%s", r.code, r.body)
	}
	if strings.Contains(r.body, "<script>") || strings.Contains(r.body, `alert('x')`) {
		t.Errorf("raw hostile name on the page:\n%s", r.body)
	}
	// The shell line quotes it, and the quote survives HTML escaping.
	if !strings.Contains(r.body, `startcompile check --project &#39;&lt;script&gt;alert(&#39;\&#39;&#39;x&#39;\&#39;&#39;)&lt;/script&gt;&amp;&#34;&#39; YOUR_EMAIL`) {
		t.Errorf("check command not shell-quoted:\n%s", r.body)
	}
}

func TestProjectPageErrors(t *testing.T) {
	srv := startFarm(t, newFarm())
	for path, code := range map[string]int{
		"/project/nobody-built-this":           http.StatusNotFound,
		"/project/a%20b":                       http.StatusBadRequest,
		"/project/" + strings.Repeat("x", 200): http.StatusBadRequest,
	} {
		if r := get(t, srv.URL+path, ""); r.code != code {
			t.Errorf("GET %s: status %d, want %d:\n%s", path, r.code, code, r.body)
		}
	}
}

// svgBadge is what a test reads of a badge.
type svgBadge struct {
	Title string    `xml:"title"`
	Rects []svgRect `xml:"rect"`
	Texts []string  `xml:"g>text"`
}

type svgRect struct {
	Fill string `xml:"fill,attr"`
}

// parseBadge fails t unless body is one well-formed SVG element.
func parseBadge(t *testing.T, body string) svgBadge {
	t.Helper()
	var b svgBadge
	d := xml.NewDecoder(strings.NewReader(body))
	d.Strict = true
	if err := d.Decode(&b); err != nil {
		t.Fatalf("badge is not well-formed XML: %v\n%s", err, body)
	}
	for {
		// Nothing but whitespace may follow the root element.
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("badge: %v", err)
		}
		if cd, ok := tok.(xml.CharData); !ok || len(bytes.TrimSpace(cd)) > 0 {
			t.Fatalf("badge: %T %v after the root element", tok, tok)
		}
	}
	return b
}

func TestBadgesShowTheStateInItsColour(t *testing.T) {
	f := newFarm()
	addDemoProject(f)
	srv := startFarm(t, f)
	tests := []struct {
		name, path, label, state, colour string
	}{
		{"a broken platform fails the project", "/badge/demo.svg", "demo", "failing", "#c62828"},
		{"a platform that builds passes", "/badge/demo.svg?platform=arch=x86_64", "demo", "passing", "#2e7d32"},
		{"platform fields combine and take startcompile's spellings", "/badge/demo.svg?platform=arch=amd64,endian=little,libc=glibc", "demo", "passing", "#2e7d32"},
		{"the broken platform alone fails", "/badge/demo.svg?platform=arch=s390x", "demo", "failing", "#c62828"},
		{"only unfinished builds are building", "/badge/libfoo.svg", "libfoo", "building", "#1f5fbf"},
		{"a platform nobody built on is unknown", "/badge/demo.svg?platform=libc=musl", "demo", "unknown", "#808891"},
		{"a project without builds is unknown", "/badge/nobody.svg", "nobody", "unknown", "#808891"},
		{"a hostile name is text", "/badge/" + url.PathEscape(hostileProject) + ".svg", hostileProject, "failing", "#c62828"},
		{"a long name is cut", "/badge/" + strings.Repeat("n", 100) + ".svg", strings.Repeat("n", 39) + "…", "unknown", "#808891"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, srv.URL+tt.path, "")
			if r.code != 200 {
				t.Fatalf("status %d:\n%s", r.code, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "image/svg+xml; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if cc := r.header.Get("Cache-Control"); !strings.Contains(cc, "public") || !strings.Contains(cc, "max-age=60") {
				t.Errorf("Cache-Control %q", cc)
			}
			b := parseBadge(t, r.body)
			expect(t, b.Title, tt.label+": "+tt.state)
			if len(b.Texts) != 2 || b.Texts[0] != tt.label || b.Texts[1] != tt.state {
				t.Errorf("texts %q, want %q and %q", b.Texts, tt.label, tt.state)
			}
			if len(b.Rects) != 2 || b.Rects[1].Fill != tt.colour {
				t.Errorf("rects %+v, want the state's on %s", b.Rects, tt.colour)
			}
			if strings.Contains(r.body, "<script") {
				t.Error("raw <script in the badge")
			}
		})
	}
}

func TestBadgeRefusesBadQueries(t *testing.T) {
	srv := startFarm(t, newFarm())
	for path, want := range map[string]string{
		"/badge/hello.svg?platform=colour=red":    "fields among os, arch, endian, data_model, libc",
		"/badge/hello.svg?platform=compiler=gcc":  "fields among",
		"/badge/hello.svg?platform=endian=middle": "platform:",
		"/badge/hello.svg?pin=stable":             "Unknown parameter",
		"/badge/hello.png":                        "/badge/PROJECT.svg",
	} {
		r := get(t, srv.URL+path, "")
		if r.code/100 != 4 || !strings.Contains(r.body, want) {
			t.Errorf("GET %s: status %d, want 4xx with %q:\n%s", path, r.code, want, r.body)
		}
	}
}

func TestBuildPageCountsAttemptsWithinTheBuildAndLinksItsProject(t *testing.T) {
	srv := startFarm(t, newFarm())
	r := get(t, srv.URL+"/build/101", "")
	// Build 101's attempts have the store ids 7 and 8.
	first := regexp.MustCompile(`<tr>\s*<td>(\d+)</td>\s*<td><a class="buildserver-link"`)
	var got []string
	for _, m := range first.FindAllStringSubmatch(r.body, -1) {
		got = append(got, m[1])
	}
	expect(t, strings.Join(got, ","), "1,2")
	if !strings.Contains(r.body, `<a href="/project/hello" id="project-link">hello</a>`) {
		t.Error("the project is not linked to its page")
	}
	// JSON keeps the store ids, under the attempts' id field.
	j := get(t, srv.URL+"/build/101", "application/json")
	if !strings.Contains(j.body, `"id": "7"`) || !strings.Contains(j.body, `"id": "8"`) {
		t.Errorf("JSON lost the attempts' store ids:\n%s", j.body)
	}
}

func TestProjectPageShowsItsPins(t *testing.T) {
	f := newFarm()
	addDemoProject(f)
	f.pins = []*kilnv1.PinStatus{
		{Name: "v1.0", BuildId: 201, Project: "demo", Commit: demoC1, Sha256: strings.Repeat("ab", 32), Size: 2048,
			Platform: x86System(), CreatedAt: ts(-50 * time.Hour)},
		{Name: "old", BuildId: 205, Project: "demo", Commit: demoC3, Sha256: strings.Repeat("cd", 32), Size: 10,
			Platform: x86System(), Withdrawn: "its build server's credential was <revoked>"},
		{Name: "theirs", BuildId: 1, Project: "other"},
	}
	srv := startFarm(t, f)
	r := get(t, srv.URL+"/project/demo", "")
	if r.code != http.StatusOK {
		t.Fatalf("status %d:\n%s", r.code, r.body)
	}
	for _, w := range []string{
		`<table id="pins">`, "<strong>v1.0</strong>", `<a href="/build/201">#201</a>`, "abababababab", "2.0 KiB",
		"<code>startcompile --pin v1.0 --download DIR EMAIL</code>",
		`<tr class="withdrawn">`, "withdrawn: its build server&#39;s credential was &lt;revoked&gt;",
	} {
		if !strings.Contains(r.body, w) {
			t.Errorf("project page lacks %q", w)
		}
	}
	if strings.Contains(r.body, "theirs") || strings.Contains(r.body, "--pin old") {
		t.Error("another project's pin, or a withdrawn pin's download command, is shown")
	}
	var v struct {
		Pins []struct {
			Name      string `json:"name"`
			Withdrawn string `json:"withdrawn"`
		} `json:"pins"`
	}
	if err := json.Unmarshal([]byte(get(t, srv.URL+"/project/demo", "application/json").body), &v); err != nil || len(v.Pins) != 2 || v.Pins[0].Name != "v1.0" {
		t.Fatalf("JSON pins %+v %v", v.Pins, err)
	}
	if r := get(t, srv.URL+"/project/"+url.PathEscape(hostileProject), ""); !strings.Contains(r.body, `id="pins"`) || strings.Contains(r.body, "<script>alert") {
		t.Error("a project without pins: no pins note, or its name raw")
	}
}
