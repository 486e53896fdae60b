// Package webtest drives webstatus's pages in a real headless Chromium. Its
// one check, [BrowserCheck], runs the same way against webstatus served over
// a fake metaserver (package web's tests) and against a real farm (the
// end-to-end tests), so the two cannot drift apart.
package webtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// DefaultExecPath is where Chromium is installed on Kiln's machines.
const DefaultExecPath = "/usr/bin/chromium"

// Options says what BrowserCheck may expect of the farm behind baseURL.
type Options struct {
	// ExecPath is the browser binary; empty means DefaultExecPath. The
	// check is skipped when it does not exist.
	ExecPath string
	// ScreenshotDir receives one PNG per page visited. Empty means the
	// directory in $KILN_SCREENSHOTS, else a t.TempDir().
	ScreenshotDir string
	// Timeout bounds the whole check, browser start included. Zero means
	// two minutes.
	Timeout time.Duration
	// LiveBuildID names a build that stays unfinished (queued or running)
	// during the check, for the live log checks; 0 skips them.
	LiveBuildID uint64
	// NextLine is called while a live log page is open and already shows
	// the log so far. It must make LiveBuildID's log grow and return text
	// of the new part (a line the page did not show yet) to wait for. It is
	// called twice: once for the streaming page (no script), once for the
	// snapshot page that a script keeps up to date over server-sent events.
	NextLine func(t *testing.T) string
}

// emailRe matches anything shaped like an email address.
var emailRe = regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`)

// BrowserCheck opens webstatus at baseURL in headless Chromium and checks,
// failing t on the first problem:
//
//   - every page loads with status 200, the nav bar and a heading, and shows
//     no email address: /, /metaserverstatus, /buildservers, /builds,
//     /build/<buildID> and its log; an unknown build gives the 404 page;
//   - following links works: from /builds (walking "next page" links until
//     buildID appears) to /build/<buildID>, and from there to the build
//     server of its first attempt on /buildservers;
//   - the filter form on /builds narrows the list to the build's project;
//   - the build's project link leads to its project page: a matrix whose
//     cells link to builds, a badge that loads as an image, the
//     startcompile line; /projects lists the project;
//   - with LiveBuildID set, the live log page shows a line produced after
//     the page opened, both streamed without script and over SSE.
//
// buildID must name a build with at least one attempt. A screenshot of each
// page is written to the screenshot directory. The check is skipped when
// the browser binary is missing.
func BrowserCheck(t *testing.T, baseURL string, buildID uint64, opts Options) {
	t.Helper()
	if opts.ExecPath == "" {
		opts.ExecPath = DefaultExecPath
	}
	if _, err := os.Stat(opts.ExecPath); err != nil {
		t.Skipf("no browser at %s: %v", opts.ExecPath, err)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Minute
	}
	if opts.ScreenshotDir == "" {
		opts.ScreenshotDir = os.Getenv("KILN_SCREENSHOTS")
	}
	if opts.ScreenshotDir == "" {
		opts.ScreenshotDir = t.TempDir()
	}
	if err := os.MkdirAll(opts.ScreenshotDir, 0o755); err != nil {
		t.Fatalf("screenshot dir: %v", err)
	}
	if opts.LiveBuildID != 0 && opts.NextLine == nil {
		t.Fatal("webtest: LiveBuildID set without NextLine")
	}
	b := &browser{t: t, base: strings.TrimRight(baseURL, "/"), shots: opts.ScreenshotDir}
	b.start(opts)

	b.checkPages(buildID)
	b.checkLinks(buildID)
	b.checkProject(buildID)
	if opts.LiveBuildID != 0 {
		b.checkLiveLog(opts.LiveBuildID, opts.NextLine)
	}
	t.Logf("screenshots in %s", opts.ScreenshotDir)
}

// browser is one headless Chromium with one tab.
type browser struct {
	t     *testing.T
	ctx   context.Context // the tab
	base  string
	shots string
	n     int // screenshots taken
}

// start launches Chromium (stopped, by its own process, at test cleanup).
func (b *browser) start(opts Options) {
	t := b.t
	limit, cancelLimit := context.WithTimeout(context.Background(), opts.Timeout)
	allocOpts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(opts.ExecPath),
		chromedp.NoSandbox,
		chromedp.Headless,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(limit, allocOpts...)
	tab, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
		cancelLimit()
	})
	b.ctx = tab
	if err := chromedp.Do(tab, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start browser %s: %v", opts.ExecPath, err)
	}
}

// open navigates to path, waits for the load and checks the status code.
func (b *browser) open(path string, wantStatus int64) {
	b.t.Helper()
	resp, err := chromedp.Run(b.ctx, chromedp.NavigateResponse(b.base+path))
	if err != nil {
		b.t.Fatalf("open %s: %v", path, err)
	}
	if resp == nil || resp.Status != wantStatus {
		b.t.Fatalf("open %s: status %v, want %d", path, statusOf(resp), wantStatus)
	}
}

func statusOf(resp *network.Response) any {
	if resp == nil {
		return "no response"
	}
	return resp.Status
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until the JavaScript function fn(arg) is truthy, retrying
// across the moment a navigation replaces the page.
func (b *browser) waitJS(what, fn string, arg any, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, time.Until(deadline))
		_, err := chromedp.Run(ctx, chromedp.PollFunction[bool](fn,
			chromedp.WithPollingArgs(arg), chromedp.WithPollingInterval(50*time.Millisecond),
			chromedp.WithPollingTimeout(time.Until(deadline))))
		cancel()
		if err == nil {
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	b.t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, last)
}

// checkChrome checks what every page has: nav bar, heading, no emails.
func (b *browser) checkChrome(path string) {
	b.t.Helper()
	if !eval[bool](b, `document.querySelector('header.nav nav a[href="/builds"]') !== null`) {
		b.t.Errorf("%s: no nav bar", path)
	}
	if h1 := eval[string](b, `(document.querySelector('h1') || {}).textContent || ''`); strings.TrimSpace(h1) == "" {
		b.t.Errorf("%s: no heading", path)
	}
	if m := emailRe.FindString(eval[string](b, `document.documentElement.outerHTML`)); m != "" {
		b.t.Errorf("%s shows an email address %q", path, m)
	}
}

// screenshot saves the whole page as NN-name.png.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	b.n++
	file := filepath.Join(b.shots, fmt.Sprintf("%02d-%s.png", b.n, name))
	if err := os.WriteFile(file, png, 0o644); err != nil {
		b.t.Errorf("write %s: %v", file, err)
	}
}

func (b *browser) checkPages(buildID uint64) {
	id := strconv.FormatUint(buildID, 10)
	pages := []struct{ name, path, want string }{
		{"overview", "/", "builds queued"},
		{"metaserverstatus", "/metaserverstatus", "cache hit ratio"},
		{"buildservers", "/buildservers", "build servers known"},
		{"builds", "/builds", "Filter"},
		{"build", "/build/" + id, "Attempts"},
		{"log", "/build/" + id + "/log?snapshot=1", "build #" + id},
	}
	for _, p := range pages {
		b.open(p.path, 200)
		b.checkChrome(p.path)
		if text := eval[string](b, `document.body.innerText`); !strings.Contains(text, p.want) {
			b.t.Errorf("%s does not show %q", p.path, p.want)
		}
		b.screenshot(p.name)
	}
	b.open("/build/18446744073709551615", 404)
	b.checkChrome("404 page")
	if text := eval[string](b, `document.body.innerText`); !strings.Contains(text, "There is no build") {
		b.t.Errorf("404 page says %q", text)
	}
	b.screenshot("not-found")
}

// click clicks the element and waits for the page it leads to.
func (b *browser) click(sel string) {
	b.t.Helper()
	resp, err := chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("click %s: %v", sel, err)
	}
	if resp == nil || resp.Status != 200 {
		b.t.Fatalf("click %s: status %v", sel, statusOf(resp))
	}
}

func (b *browser) location() *url.URL {
	b.t.Helper()
	loc, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		b.t.Fatalf("location: %v", err)
	}
	u, err := url.Parse(loc)
	if err != nil {
		b.t.Fatalf("location %q: %v", loc, err)
	}
	return u
}

func (b *browser) checkLinks(buildID uint64) {
	t := b.t
	id := strconv.FormatUint(buildID, 10)
	link := fmt.Sprintf(`a.build-link[href="/build/%s"]`, id)
	b.open("/builds", 200)
	for pages := 0; !eval[bool](b, fmt.Sprintf(`document.querySelector(%s) !== null`, strconv.Quote(link))); pages++ {
		if pages > 50 || !eval[bool](b, `document.getElementById('next-page') !== null`) {
			t.Fatalf("build %s is on no page of /builds", id)
		}
		b.click("#next-page")
	}
	b.click(link)
	if got := b.location().Path; got != "/build/"+id {
		t.Fatalf("clicking build %s led to %s", id, got)
	}
	project := eval[string](b, `document.querySelector('#build-info td a').textContent`)

	b.click(`#attempts a.buildserver-link`)
	loc := b.location()
	if loc.Path != "/buildservers" || !strings.HasPrefix(loc.Fragment, "bs-") {
		t.Fatalf("the build server link led to %s", loc)
	}
	if !eval[bool](b, `document.getElementById(decodeURIComponent(location.hash.slice(1))) !== null`) {
		t.Errorf("no build server section %s on /buildservers", loc.Fragment)
	}
	b.screenshot("buildserver-from-build")

	// The filter form narrows /builds to the project.
	b.open("/builds", 200)
	if err := chromedp.Do(b.ctx, chromedp.SetValue(chromedp.ID("filter-project"), project)); err != nil {
		t.Fatalf("fill the filter form: %v", err)
	}
	b.click("#filter-apply")
	if got := b.location().Query().Get("project"); got != project {
		t.Errorf("filter form sent project=%q, want %q", got, project)
	}
	cells := eval[[]string](b, `Array.from(document.querySelectorAll('#builds tbody tr td:nth-child(3)')).map(td => td.textContent)`)
	if len(cells) == 0 {
		t.Errorf("filtering by project %q shows no build", project)
	}
	for _, c := range cells {
		if c != project {
			t.Errorf("filtered by project %q, the list shows %q", project, c)
		}
	}
	b.screenshot("builds-filtered")
}

func (b *browser) checkLiveLog(id uint64, next func(*testing.T) string) {
	t := b.t
	path := fmt.Sprintf("/build/%d/log", id)

	// The streaming page never finishes loading while the build runs, so
	// navigate without waiting for the load event.
	if err := chromedp.Do(b.ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		res, err := cdp.Call(ctx, tg, page.Navigate, page.NavigateParams{URL: b.base + path})
		if err == nil && res.ErrorText != "" {
			err = errors.New(res.ErrorText)
		}
		return err
	})); err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	b.waitJS("the streaming log page", `(p) => location.pathname === p && document.getElementById('live') !== null && document.getElementById('log') !== null`, path, 20*time.Second)
	before := eval[string](b, `document.getElementById('log').textContent`)
	line := next(t)
	if strings.Contains(before, line) {
		t.Fatalf("the log showed %q before NextLine produced it", line)
	}
	b.waitJS("the new line on the streaming page", `(l) => document.getElementById('log').textContent.includes(l)`, line, 20*time.Second)
	b.screenshot("log-live-stream")

	// The snapshot page finishes loading; its script follows over SSE.
	b.open(path+"?snapshot=1", 200)
	if !eval[bool](b, `document.getElementById('log-follow') !== null`) {
		t.Fatalf("the snapshot page of unfinished build %d does not follow the log", id)
	}
	line = next(t)
	b.waitJS("the new line on the snapshot page (via server-sent events)", `(l) => document.getElementById('log').textContent.includes(l)`, line, 20*time.Second)
	b.screenshot("log-live-events")
	if err := chromedp.Do(b.ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Errorf("leave the live log: %v", err)
	}
}

// checkProject follows the build's project link to the project page.
func (b *browser) checkProject(buildID uint64) {
	t := b.t
	b.open("/build/"+strconv.FormatUint(buildID, 10), 200)
	project := eval[string](b, `document.getElementById('project-link').textContent`)
	b.click("#project-link")
	if got := b.location().Path; got != "/project/"+url.PathEscape(project) {
		t.Fatalf("the project link led to %s", got)
	}
	b.checkChrome("project page")
	if n := eval[int](b, `document.querySelectorAll('#matrix tbody a.badge[href^="/build/"]').length`); n == 0 {
		t.Errorf("the matrix of %s links no build", project)
	}
	// An <img> that failed to load or is not an image has no natural size.
	b.waitJS("the badge to load", `() => { const i = document.getElementById('project-badge'); return i.complete && i.naturalWidth > 0; }`, nil, 10*time.Second)
	if cmd := eval[string](b, `document.getElementById('check-command').textContent`); !strings.Contains(cmd, "startcompile check --project") {
		t.Errorf("project page's check command is %q", cmd)
	}
	b.screenshot("project")
	b.click(`#matrix tbody a.badge[href^="/build/"]`)
	if got := b.location().Path; !strings.HasPrefix(got, "/build/") {
		t.Errorf("a matrix cell led to %s", got)
	}

	b.open("/projects", 200)
	b.checkChrome("/projects")
	names := eval[[]string](b, `Array.from(document.querySelectorAll('#projects a.project-link')).map(a => a.textContent)`)
	if !slices.Contains(names, project) {
		t.Errorf("/projects lists %q, not %q", names, project)
	}
	b.screenshot("projects")
}
