package webtest

import (
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ProjectOptions says what ProjectCheck may expect of the project.
type ProjectOptions struct {
	// ExecPath, ScreenshotDir and Timeout are as in Options ($KILN_SCREENSHOTS
	// included).
	ExecPath      string
	ScreenshotDir string
	Timeout       time.Duration
	// Platforms is the least number of platform columns (and rows of the
	// build-time chart) the project page must show.
	Platforms int
	// BrokenPlatform, when set, is a substring of the one platform whose
	// row must say "broken since".
	BrokenPlatform string
	// BuildID names a build whose page is shot as "build".
	BuildID uint64
	// Samples is the least number of steps the overview's queue chart must
	// draw (samples the metaserver took); 0 accepts the empty chart.
	Samples int
	// Pin, when set, names a pin of the project the page must list with
	// its download command.
	Pin string
}

// ProjectCheck opens the overview, project's page, its feed and one build
// in headless Chromium and checks, failing t on the first problem, that:
//
//   - the overview draws its four charts as SVG the browser lays out (a
//     non-empty box), the queue chart with at least Samples steps;
//   - the project page has at least Platforms matrix columns, the broken
//     platform marked "broken since", a build-time chart with a row per
//     platform, a pins section, and a feed link whose document the
//     browser parses as an Atom feed with one entry per finished build
//     shown;
//
// and writes overview.png, project.png and build.png into the screenshot
// directory. It is skipped when the browser binary is missing.
func ProjectCheck(t *testing.T, baseURL, project string, opts ProjectOptions) {
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
	b := &browser{t: t, base: strings.TrimRight(baseURL, "/"), shots: opts.ScreenshotDir}
	b.start(Options{ExecPath: opts.ExecPath, Timeout: opts.Timeout})

	b.open("/", 200)
	b.checkChrome("/")
	for _, id := range []string{"chart-queue", "chart-targets", "chart-cache", "chart-build-times"} {
		b.checkSVG("/", id)
	}
	if steps := eval[int](b, `(() => { const p = document.querySelector('#chart-queue path.series'); return p ? (p.getAttribute('d').match(/H/g) || []).length : 0; })()`); steps < opts.Samples {
		t.Errorf("the queue chart draws %d steps, want at least %d", steps, opts.Samples)
	}
	b.shot("overview")

	path := "/project/" + url.PathEscape(project)
	b.open(path, 200)
	b.checkChrome(path)
	if n := eval[int](b, `document.querySelectorAll('#matrix th.platform').length`); n < opts.Platforms {
		t.Errorf("%s: %d platform columns, want at least %d", path, n, opts.Platforms)
	}
	if opts.BrokenPlatform != "" {
		broken := eval[[]string](b, `Array.from(document.querySelectorAll('#platforms tr.broken td:first-child')).map(td => td.textContent)`)
		if len(broken) != 1 || !strings.Contains(broken[0], opts.BrokenPlatform) {
			t.Errorf("%s: broken platforms %q, want the one with %q", path, broken, opts.BrokenPlatform)
		}
		if !strings.Contains(eval[string](b, `document.getElementById('platforms').innerText`), "broken since commit") {
			t.Errorf("%s: no \"broken since commit\"", path)
		}
	}
	b.checkSVG(path, "chart-build-times")
	if rows := eval[int](b, `document.querySelectorAll('#chart-build-times g.dist-row').length`); rows < opts.Platforms {
		t.Errorf("%s: the build-time chart has %d rows, want at least %d", path, rows, opts.Platforms)
	}
	if !eval[bool](b, `document.getElementById('pins') !== null`) {
		t.Errorf("%s: no pins section", path)
	}
	if opts.Pin != "" {
		pins := eval[string](b, `document.getElementById('pins').innerText`)
		if !strings.Contains(pins, opts.Pin) || !strings.Contains(pins, "startcompile --pin "+opts.Pin+" --download DIR") {
			t.Errorf("%s: the pins section lacks %s and its download command:\n%s", path, opts.Pin, pins)
		}
	}
	// The feed, fetched and parsed by the browser itself.
	feed, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`(async () => {
		const r = await fetch(document.getElementById('feed').href);
		const doc = new DOMParser().parseFromString(await r.text(), 'application/xml');
		if (doc.querySelector('parsererror')) return 'parse error';
		const f = doc.documentElement;
		if (f.namespaceURI !== 'http://www.w3.org/2005/Atom' || f.localName !== 'feed') return 'not an Atom feed';
		return r.headers.get('content-type') + ' ' + f.getElementsByTagName('entry').length;
	})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: fetching the feed: %v", path, err)
	}
	if !strings.HasPrefix(feed, "application/atom+xml") {
		t.Errorf("%s: the feed: %s", path, feed)
	} else if n, _ := strconv.Atoi(feed[strings.LastIndexByte(feed, ' ')+1:]); n == 0 {
		t.Errorf("%s: the feed has no entry", path)
	}
	b.shot("project")

	if opts.BuildID != 0 {
		p := "/build/" + strconv.FormatUint(opts.BuildID, 10)
		b.open(p, 200)
		b.checkChrome(p)
		b.shot("build")
	}
}

// checkSVG checks that the page lays out the chart id as a visible SVG.
func (b *browser) checkSVG(path, id string) {
	b.t.Helper()
	w := eval[float64](b, `(() => { const s = document.getElementById('`+id+`'); return s && s instanceof SVGSVGElement ? s.getBoundingClientRect().width * s.getBoundingClientRect().height : 0; })()`)
	if w <= 0 {
		b.t.Errorf("%s: chart %s is missing or empty", path, id)
	}
}

// shot saves the page as name.png (no sequence number: these files are
// committed under docs/).
func (b *browser) shot(name string) {
	b.t.Helper()
	n := b.n
	b.screenshot(name)
	if b.n == n {
		return
	}
	from := b.shots + "/" + twoDigits(b.n) + "-" + name + ".png"
	if err := os.Rename(from, b.shots+"/"+name+".png"); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
	}
}

func twoDigits(n int) string {
	if n < 10 {
		return "0" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}
