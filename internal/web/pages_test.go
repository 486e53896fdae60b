package web_test

import (
	"encoding/json"
	"html"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// httpClient bounds every test request: a safety net against a hung
// handler, longer than the handler's own RPCTimeout (startWeb), that no
// test waits for.
var httpClient = &http.Client{Timeout: 2 * time.Minute}

type response struct {
	code   int
	header http.Header
	body   string
}

// get fetches url, as JSON when accept is "application/json".
func get(t *testing.T, url, accept string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: string(body)}
}

// emailRe matches anything shaped like an email address.
var emailRe = regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`)

func TestPagesRenderAsHTML(t *testing.T) {
	srv := startFarm(t, newFarm())
	tests := []struct {
		name string
		path string
		want []string
	}{
		{"the overview shows counts, cache, queue and the metaserver", "/", []string{
			"build servers connected", ">2<", ">3<", "builds queued", "oldest waiting since 1m ago", `<div class="num">3</div><div class="label">requests waiting`,
			"117.7 MiB", "75.0%", "30 hits, 10 misses", `v0.1.0-test`, "26h ago", "26h00m00s so far",
			`href="/buildservers#bs-alice-box"`, `href="/build/103"`, "UNSANDBOXED", `state-succeeded">succeeded</span></a></td><td class="r">12`,
		}},
		{"/metaserverstatus is the overview", "/metaserverstatus", []string{"builds queued", "v0.1.0-test"}},
		{"build servers show targets, work, markers and policy", "/buildservers", []string{
			`id="bs-alice-box"`, `id="bs-bob-unsafe"`, `id="bs-carol-old"`, "cross:s390x-linux-gnu", "<td>s390x</td>", "<td>big</td>", "<td>LP64</td>",
			"glibc 2.36", "gcc 12.2.0", "qemu-user", "autoconf 2.71, git 2.39.5, make 4.3", "8.0 GiB", `href="/build/103"`,
			"11 succeeded, 4 failed", "UNSANDBOXED", "WITHOUT a sandbox", "draining", "revoked", "disconnected", "musl 1.2.3",
			"projects: hello, libfoo; at most 1h00m00s per build", "only while idle", "opt ∈ {-O0, -O2}", "2026-03-14T15:09:23Z", "(3s ago)",
			"not offered", "<code>cross:nonexistent-linux-gnu</code>", "&lt;not found&gt;",
			"put aside", "3 in a row, 7 in all", "3 attempts lost in a row; the last: lease lapsed",
			"<th>operator</th><td>bobco</td>", ">marked</span>", "1 dispute(s) lost; the last: its result of build 101 lost a dispute",
			`<td class="char">unsigned</td>`, `<td class="align">8/8/8</td>`, `<td class="sizes">16/8/4</td>`, `<td class="r">4096</td>`,
			"<th>signing key</th><td><code", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "none yet",
		}},
		{"builds list newest first with links", "/builds", []string{`href="/build/105"`, `href="/build/101"`, "libfoo", "asked: arch=ppc64 endian=big", "linux/s390x big LP64 glibc-2.36 gcc-12.2.0 (emulated)"}},
		{"a succeeded build shows attempts, platform and artifact", "/build/101", []string{
			"succeeded", "hello", "v1.2", okCommit, "<code>debug=off</code>", "<code>opt=-O2</code>", "arch=x86_64 libc=glibc",
			"linux/x86_64 little LP64 glibc-2.36 gcc-12.2.0", "2026-03-14T14:59:26Z", "(10m ago)", "after waiting 1m00s", "ran 1m00s",
			`href="/buildservers#bs-carol-old"`, `href="/buildservers#bs-alice-box"`, "lost", "lease expired",
			`href="/build/101/artifact"`, "hello-101.tar.gz", `href="/build/101/log"`, "300.0 KiB", "bin/hello", "2 request(s) waiting",
			"<th>recipe</th><td>cmake — found CMakeLists.txt</td>",
			`<th>dependencies</th>`, `zlib: <a class="build-link" href="/build/97">#97</a>`, "5eed",
			`<span class="badge ok">verified</span>`, "quorum 2; agreeing: alice-box, dave-box", "bob-unsafe <span class=\"muted\">(bobco)</span>",
			"not counted</span> lost the dispute", `<td id="differing-files"><code>bin/hello</code></td>`,
			"<th>compiler cache hits</th>", `<td class="cache">30 of 40 compilations (75%)</td>`, `<td class="cache">—</td>`,
			`<table id="provenance">`, "<td>40</td><td>statement</td>", "(attempt 8)", "57a7e0", "<td>41</td><td>summary</td><td>the metaserver</td>", `href="/log/checkpoint"`,
		}},
		{"a failed build shows the failure and failing step", "/build/102", []string{"make check exited with status 2", "failing step: <code>make check</code>", "checking", "make exited with status 2"}},
		{"a queued build says why it waits", "/build/104", []string{"Why it is still waiting", "arch=ppc64: 3 of 3 connected targets differ", "position 1 in the queue", "not dispatched yet", "v2..v3"}},
		{"a running build shows its running attempt", "/build/103", []string{"running", "building", "1m30s so far"}},
		{"a finished build's log is a page", "/build/101/log", []string{`<pre id="log" class="log">configure: ok`, "make check: 3 tests passed", "finished:", `href="/build/101"`}},
		{"a log is escaped", "/build/102/log", []string{"test_endian: FAIL &lt;expected little&gt;"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, srv.URL+tt.path, "")
			if r.code != http.StatusOK {
				t.Fatalf("status %d, want 200; body:\n%s", r.code, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			for _, w := range append(tt.want, `<nav aria-label="main">`, `href="/builds"`, `href="/buildservers"`, "</html>") {
				if !strings.Contains(r.body, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			if m := emailRe.FindString(r.body); m != "" {
				t.Errorf("page shows an email address %q", m)
			}
		})
	}
}

func TestPagesRenderAsJSON(t *testing.T) {
	srv := startFarm(t, newFarm())
	tests := []struct {
		name  string
		path  string
		check func(t *testing.T, v map[string]any)
	}{
		{"overview", "/", func(t *testing.T, v map[string]any) {
			ov := v["overview"].(map[string]any)
			expect(t, ov["connected_build_servers"], 2.0)
			expect(t, ov["version"], "v0.1.0-test")
			expect(t, ov["oldest_queued_at"], "2026-03-14T15:07:51Z")
			expect(t, v["cache_hit_ratio"], 0.75)
			expect(t, v["oldest_wait_seconds"], 95.0)
			expect(t, len(v["build_servers"].([]any)), 2)
			expect(t, v["builds_by_state"].([]any)[0].(map[string]any)["state"], "queued")
		}},
		{"build servers", "/buildservers", func(t *testing.T, v map[string]any) {
			bss := v["build_servers"].([]any)
			expect(t, len(bss), 3)
			bob := bss[1].(map[string]any)
			expect(t, bob["name"], "bob-unsafe")
			expect(t, bob["unsandboxed"], true)
			expect(t, bob["put_aside_reason"], "3 attempts lost in a row; the last: lease lapsed")
			expect(t, bob["attempts_lost"], "7")
			expect(t, bob["operator"], "bobco")
			expect(t, bob["marked"], "its result of build 101 lost a dispute that alice-box, dave-box settled")
			rejected := bob["rejected_targets"].([]any)[0].(map[string]any)
			expect(t, rejected["target_id"], "cross:nonexistent-linux-gnu")
			expect(t, rejected["reason"], `compiling the probe: exec: "nonexistent-linux-gnu-gcc": <not found>`)
			alice := bss[0].(map[string]any)
			s390x := alice["targets"].([]any)[1].(map[string]any)["system"].(map[string]any)
			expect(t, s390x["data_model"], "LP64")
			expect(t, s390x["char_signed"], false)
			expect(t, s390x["align_double"], 8.0)
			expect(t, s390x["sizeof_wchar_t"], 4.0)
			expect(t, s390x["page_size"], 4096.0)
			expect(t, alice["running_build_ids"].([]any)[0], "103") // protojson writes uint64 as a string
			expect(t, v["unsandboxed"], 1.0)
		}},
		{"builds", "/builds?state=failed&page_size=2", func(t *testing.T, v map[string]any) {
			bs := v["builds"].([]any)
			expect(t, len(bs), 2)
			expect(t, bs[0].(map[string]any)["id"], "102")
			expect(t, bs[0].(map[string]any)["state"], "BUILD_STATE_FAILED")
			expect(t, v["filter"].(map[string]any)["state"], "failed")
			expect(t, v["next_url"], "/builds?page_size=2&page_token=2&state=failed")
		}},
		{"build", "/build/101", func(t *testing.T, v map[string]any) {
			b := v["build"].(map[string]any)
			expect(t, b["project"], "hello")
			expect(t, b["state"], "BUILD_STATE_SUCCEEDED")
			expect(t, b["created_at"], "2026-03-14T14:59:26Z")
			expect(t, b["attempts"].([]any)[0].(map[string]any)["outcome"], "ATTEMPT_OUTCOME_LOST")
			expect(t, v["artifact_url"], "/build/101/artifact")
			expect(t, v["artifact_name"], "hello-101.tar.gz")
			expect(t, v["verification"], "verified")
			expect(t, v["agreeing_build_servers"].([]any)[1], "dave-box")
			expect(t, v["run_seconds"], 60.0)
			expect(t, v["final"], true)
		}},
		{"log", "/build/102/log", func(t *testing.T, v map[string]any) {
			expect(t, v["log"], "make check\ntest_endian: FAIL <expected little>\n")
			expect(t, v["state"], "failed")
		}},
		{"artifact metadata", "/build/101/artifact", func(t *testing.T, v map[string]any) {
			expect(t, v["filename"], "hello-101.tar.gz")
			expect(t, v["artifact"].(map[string]any)["size"], "307200")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, srv.URL+tt.path, "text/html;q=0.9, application/json")
			if r.code != http.StatusOK {
				t.Fatalf("status %d; body:\n%s", r.code, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(r.body), &v); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, r.body)
			}
			tt.check(t, v)
			if m := emailRe.FindString(r.body); m != "" {
				t.Errorf("JSON shows an email address %q", m)
			}
		})
	}
}

func expect(t *testing.T, got, want any) {
	t.Helper()
	if got != want {
		t.Errorf("got %#v, want %#v", got, want)
	}
}

func TestBuildsFiltersAndPages(t *testing.T) {
	srv := startFarm(t, newFarm())
	buildLink := regexp.MustCompile(`class="build-link" href="/build/(\d+)"`)
	ids := func(body string) []string {
		var out []string
		for _, m := range buildLink.FindAllStringSubmatch(body, -1) {
			out = append(out, m[1])
		}
		return out
	}
	tests := []struct {
		name  string
		query string
		want  []string
	}{
		{"state=running keeps the running build", "?state=running", []string{"103"}},
		{"state=queued keeps the queued build", "?state=QUEUED", []string{"104"}},
		{"project keeps that project's builds", "?project=libfoo", []string{"104", "103"}},
		{"arch matches the built or the pinned arch", "?arch=s390x", []string{"103", "102"}},
		{"filters combine", "?project=hello&arch=s390x&state=failed", []string{"102"}},
		{"an empty state means any", "?state=&project=libfoo", []string{"104", "103"}},
		{"nothing matches an unknown project", "?project=nope", nil},
		{"endian matches the built platform or the pinned one of a queued build", "?endian=big", []string{"104", "103", "102"}},
		{"the data model matches the built platform only once dispatched", "?project=libfoo&data_model=LP64", []string{"103"}},
		{"libc combines with project", "?project=hello&libc=glibc", []string{"105", "102", "101"}},
		{"os combines with state", "?os=linux&state=running", []string{"103"}},
		{"nothing matches a libc nobody built with", "?libc=musl", nil},
		{"an empty platform field means any", "?endian=&libc=&os=&data_model=&project=libfoo", []string{"104", "103"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, srv.URL+"/builds"+tt.query, "")
			if r.code != http.StatusOK {
				t.Fatalf("status %d: %s", r.code, r.body)
			}
			if got := ids(r.body); strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("builds %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("the filter form keeps the current filter", func(t *testing.T) {
		r := get(t, srv.URL+"/builds?state=failed&project=hello&arch=s390x", "")
		for _, w := range []string{`<option value="failed" selected>`, `name="project" id="filter-project" value="hello"`, `value="s390x"`, `action="/builds"`} {
			if !strings.Contains(r.body, w) {
				t.Errorf("form lacks %q", w)
			}
		}
	})

	t.Run("the filter form keeps the platform fields and offers to clear them", func(t *testing.T) {
		r := get(t, srv.URL+"/builds?endian=big&data_model=LP64&libc=glibc&os=linux", "")
		for _, w := range []string{`<option value="big" selected>`, `name="data_model" id="filter-data-model" value="LP64"`,
			`name="libc" id="filter-libc" value="glibc"`, `name="os" id="filter-os" value="linux"`, `<a href="/builds">clear</a>`} {
			if !strings.Contains(r.body, w) {
				t.Errorf("form lacks %q", w)
			}
		}
		if got := ids(r.body); strings.Join(got, ",") != "103,102" {
			t.Errorf("builds %v, want [103 102]", got)
		}
	})

	t.Run("next page links keep the platform filters", func(t *testing.T) {
		r := get(t, srv.URL+"/builds?libc=glibc&page_size=3", "")
		m := regexp.MustCompile(`id="next-page" href="([^"]+)"|href="([^"]+)" id="next-page"`).FindStringSubmatch(r.body)
		if m == nil {
			t.Fatalf("no next page link in %s", r.body)
		}
		next := html.UnescapeString(m[1] + m[2])
		if !strings.Contains(next, "libc=glibc") || !strings.Contains(next, "page_token=") {
			t.Fatalf("next page link %q lost the filter", next)
		}
	})

	t.Run("a platform filter with a space is refused", func(t *testing.T) {
		if r := get(t, srv.URL+"/builds?libc=g%20libc", ""); r.code != http.StatusBadRequest || !strings.Contains(r.body, "libc may not contain spaces") {
			t.Fatalf("status %d: %s", r.code, r.body)
		}
	})

	t.Run("next page links walk every build exactly once", func(t *testing.T) {
		next := "/builds?page_size=7"
		var seen []string
		for pages := 0; next != ""; pages++ {
			if pages > 10 {
				t.Fatal("pagination does not end")
			}
			r := get(t, srv.URL+next, "")
			if r.code != http.StatusOK {
				t.Fatalf("GET %s: %d", next, r.code)
			}
			seen = append(seen, ids(r.body)...)
			if pages > 0 && !strings.Contains(r.body, `id="first-page"`) {
				t.Errorf("page %d has no first-page link", pages)
			}
			m := regexp.MustCompile(`href="([^"]+)" id="next-page"`).FindStringSubmatch(r.body)
			next = ""
			if m != nil {
				next = strings.ReplaceAll(m[1], "&amp;", "&")
				if !strings.Contains(next, "page_size=7") {
					t.Errorf("next link %q loses the page size", next)
				}
			}
		}
		if len(seen) != fillerCount+5 {
			t.Errorf("saw %d builds over all pages, want %d", len(seen), fillerCount+5)
		}
		if seen[0] != "105" || seen[len(seen)-1] != "1" {
			t.Errorf("order %v, want newest (105) first and 1 last", seen)
		}
	})
}

func TestErrorPages(t *testing.T) {
	srv := startFarm(t, newFarm())
	tests := []struct {
		name string
		path string
		code int
		want string
	}{
		{"an unknown build is 404", "/build/999", 404, "There is no build 999."},
		{"an unknown build's log is 404", "/build/999/log", 404, "There is no build 999."},
		{"an unknown build's raw log is 404", "/build/999/log.txt", 404, "There is no build 999."},
		{"an unknown build's artifact is 404", "/build/999/artifact", 404, "There is no build 999."},
		{"a build without artifact has no download", "/build/103/artifact", 404, "has no artifact (it is running)"},
		{"an unknown path is 404", "/nope", 404, "There is no page at /nope."},
		{"a non-numeric build id is 400", "/build/abc", 400, "positive decimal number"},
		{"build id zero is 400", "/build/0", 400, "positive decimal number"},
		{"an unknown state is 400", "/builds?state=exploded", 400, `Unknown state &#34;exploded&#34;`},
		{"a zero page size is 400", "/builds?page_size=0", 400, "page_size must be a number from 1 to 500"},
		{"a huge page size is 400", "/builds?page_size=100000", 400, "page_size must be a number from 1 to 500"},
		{"an unknown parameter is 400", "/builds?colour=red", 400, "Unknown parameter"},
		{"a repeated parameter is 400", "/builds?state=failed&state=running", 400, "given 2 times"},
		{"a project with spaces is 400", "/builds?project=a%20b", 400, "may not contain spaces"},
		{"a page token the metaserver refuses is 400", "/builds?page_token=garbage", 400, "bad page token"},
		{"a bad follow flag is 400", "/build/101/log.txt?follow=maybe", 400, "follow must be 1 or 0"},
		{"a bad snapshot flag is 400", "/build/101/log?snapshot=maybe", 400, "snapshot must be 1 or 0"},
		{"a bad offset is 400", "/build/101/log/events?offset=-1", 400, "offset must be a byte offset"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, srv.URL+tt.path, "")
			if r.code != tt.code {
				t.Fatalf("status %d, want %d; body:\n%s", r.code, tt.code, r.body)
			}
			if !strings.Contains(r.body, tt.want) || !strings.Contains(r.body, `<nav aria-label="main">`) {
				t.Errorf("error page lacks %q or the nav bar:\n%s", tt.want, r.body)
			}
			j := get(t, srv.URL+tt.path, "application/json")
			var v struct {
				Error struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(j.body), &v); err != nil || j.code != tt.code || v.Error.Code != tt.code || v.Error.Message == "" {
				t.Errorf("JSON error: status %d, body %s (%v)", j.code, j.body, err)
			}
		})
	}
}

func TestUnreachableMetaserverIs503(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	srv := startWeb(t, addr)
	for _, path := range []string{"/", "/buildservers", "/builds", "/build/1", "/build/1/log", "/build/1/log.txt", "/build/1/artifact"} {
		t.Run(path, func(t *testing.T) {
			r := get(t, srv.URL+path, "")
			if r.code != http.StatusServiceUnavailable {
				t.Fatalf("status %d, want 503; body:\n%s", r.code, r.body)
			}
			if !strings.Contains(r.body, "The metaserver cannot be reached right now") {
				t.Errorf("503 page does not say the metaserver is unreachable:\n%s", r.body)
			}
			if r.header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		})
	}
	if r := get(t, srv.URL+"/healthz", ""); r.code != 200 || r.body != "ok\n" {
		t.Errorf("healthz while the metaserver is down: %d %q", r.code, r.body)
	}
}

func TestStaticFilesAndHeaders(t *testing.T) {
	srv := startFarm(t, newFarm())
	css := get(t, srv.URL+"/static/style.css", "")
	if css.code != 200 || !strings.HasPrefix(css.header.Get("Content-Type"), "text/css") || !strings.Contains(css.body, ".badge") {
		t.Errorf("style.css: %d %q", css.code, css.header.Get("Content-Type"))
	}
	js := get(t, srv.URL+"/static/log.js", "")
	if js.code != 200 || !strings.Contains(js.body, "EventSource") {
		t.Errorf("log.js: %d", js.code)
	}
	page := get(t, srv.URL+"/", "")
	if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	if page.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("no nosniff header")
	}
	if r := get(t, srv.URL+"/healthz", ""); r.code != 200 || r.body != "ok\n" {
		t.Errorf("healthz: %d %q", r.code, r.body)
	}
}
