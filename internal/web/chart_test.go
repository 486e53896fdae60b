package web_test

import (
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// svgRe finds the inline charts of a page.
var svgRe = regexp.MustCompile(`(?s)<svg xmlns="http://www.w3.org/2000/svg" class="chart".*?</svg>`)

// chartsOf returns each inline chart of body by id, each checked to be a
// well-formed XML document on its own.
func chartsOf(t *testing.T, body string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, svg := range svgRe.FindAllString(body, -1) {
		d := xml.NewDecoder(strings.NewReader(svg))
		id := ""
		for {
			tok, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("chart is not well-formed XML: %v\n%s", err, svg)
			}
			if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "svg" {
				for _, a := range se.Attr {
					if a.Name.Local == "id" {
						id = a.Value
					}
				}
			}
		}
		out[id] = svg
	}
	return out
}

// daySamples is a day of samples a minute apart ending at t0: the queue
// grows by one an hour, three targets then four, a cache that hits one
// lookup in four.
func daySamples(n int) []*kilnv1.Sample {
	var out []*kilnv1.Sample
	for i := range n {
		at := t0.Add(-time.Duration(n-1-i) * 24 * time.Hour / time.Duration(n))
		hour := 23 - int(t0.Sub(at).Hours())
		targets := uint32(3)
		if hour >= 12 {
			targets = 4
		}
		out = append(out, &kilnv1.Sample{At: ts(at.Sub(t0)), QueueLength: uint32(max(hour, 0)), ConnectedTargets: targets, CacheHits: 1, CacheMisses: 3})
	}
	return out
}

func TestOverviewDrawsTheDayAndTheBuildTimes(t *testing.T) {
	f := newFarm()
	addDemoProject(f)
	f.samples = daySamples(1440)
	srv := startFarm(t, f)
	r := get(t, srv.URL+"/", "")
	if r.code != http.StatusOK {
		t.Fatalf("status %d", r.code)
	}
	charts := chartsOf(t, r.body)
	for _, id := range []string{"chart-queue", "chart-targets", "chart-cache", "chart-build-times"} {
		if charts[id] == "" {
			t.Fatalf("no %s on the overview; charts %v", id, len(charts))
		}
	}
	if q := charts["chart-queue"]; !strings.Contains(q, "now: 23") || !strings.Contains(q, ">23h ago<") {
		t.Errorf("queue chart lacks its last value or its axis:\n%s", q)
	}
	if c := charts["chart-targets"]; !strings.Contains(c, "now: 4") {
		t.Errorf("targets chart: %s", c)
	}
	if c := charts["chart-cache"]; !strings.Contains(c, "now: 25%") || !strings.Contains(c, ">100%<") {
		t.Errorf("cache chart: %s", c)
	}
	// 1,440 samples are thinned to at most 360 steps per line.
	if steps := strings.Count(seriesPath(t, charts["chart-queue"]), "H"); steps == 0 || steps > 360 {
		t.Errorf("queue line has %d steps, want 1..360", steps)
	}
	if bt := charts["chart-build-times"]; !strings.Contains(bt, x86Column) || !strings.Contains(bt, "builds</text>") {
		t.Errorf("build-time chart lacks the x86_64 row:\n%s", bt)
	}
	if strings.Contains(r.body, " style=") {
		t.Error("an inline style attribute: the Content-Security-Policy forbids it")
	}
}

// seriesPath returns the d attribute of a chart's line.
func seriesPath(t *testing.T, svg string) string {
	t.Helper()
	m := regexp.MustCompile(`class="series" d="([^"]*)"`).FindStringSubmatch(svg)
	if m == nil {
		t.Fatalf("no series in %s", svg)
	}
	return m[1]
}

func TestChartsStayBoundedAndEscapeWhatVolunteersReport(t *testing.T) {
	f := newFarm()
	f.samples = daySamples(50000) // far more than a day of minutes
	hostile := &kilnv1.SystemInfo{Os: "linux", Arch: `"><script>alert(1)</script>`, Endian: "little", DataModel: "LP64", Libc: "</text>&glibc"}
	for i := uint64(0); i < 80; i++ {
		si := x86System()
		if i%2 == 0 {
			si = hostile
		}
		// 80 builds, 40 of them each on a platform of its own: more
		// platforms than a chart has rows.
		if i%2 == 1 {
			si.Libc = "libc" + strings.Repeat("x", int(i))
		}
		f.add(&kilnv1.Build{Id: 300 + i, Project: "p", Commit: demoC1, State: kilnv1.BuildState_BUILD_STATE_FAILED, Platform: si,
			CreatedAt: ts(-time.Hour), StartedAt: ts(-time.Hour), FinishedAt: ts(-time.Hour + time.Duration(i)*time.Minute)}, "", true)
	}
	srv := startFarm(t, f)
	r := get(t, srv.URL+"/", "")
	charts := chartsOf(t, r.body)
	if steps := strings.Count(seriesPath(t, charts["chart-queue"]), "H"); steps > 360 {
		t.Errorf("%d steps from 50,000 samples, want at most 360", steps)
	}
	if n := len(r.body); n > 200_000 {
		t.Errorf("overview of %d bytes", n)
	}
	bt := charts["chart-build-times"]
	if strings.Contains(bt, "<script>") || strings.Contains(bt, "</text>&glibc") {
		t.Fatalf("raw markup in the chart:\n%s", bt)
	}
	if !strings.Contains(bt, "&lt;script&gt;") {
		t.Errorf("the hostile arch is not shown as text:\n%s", bt)
	}
	if rows := strings.Count(bt, `class="dist-row"`); rows != 24 {
		t.Errorf("%d rows, want the cap of 24", rows)
	}
}

func TestProjectPageDrawsItsBuildTimes(t *testing.T) {
	f := newFarm()
	addDemoProject(f)
	for _, id := range []uint64{201, 202, 203, 204} {
		b := f.builds[id]
		b.StartedAt = b.CreatedAt
	}
	srv := startFarm(t, f)
	r := get(t, srv.URL+"/project/demo", "")
	bt := chartsOf(t, r.body)["chart-build-times"]
	if bt == "" || !strings.Contains(bt, x86Column) || !strings.Contains(bt, s390xColumn) || !strings.Contains(bt, "2 builds") {
		t.Fatalf("project build-time chart:\n%s", bt)
	}
	// A hostile project name is text in the chart's title.
	r = get(t, srv.URL+"/project/"+url.PathEscape(hostileProject), "")
	if bt := chartsOf(t, r.body)["chart-build-times"]; !strings.Contains(bt, "&lt;script&gt;") || strings.Contains(bt, "<script>") {
		t.Fatalf("hostile project chart:\n%s", bt)
	}
}

func TestOverviewWithoutSamplesSaysSo(t *testing.T) {
	srv := startFarm(t, newFarm())
	charts := chartsOf(t, get(t, srv.URL+"/", "").body)
	if !strings.Contains(charts["chart-queue"], "No samples yet") {
		t.Fatalf("empty queue chart:\n%s", charts["chart-queue"])
	}
}
