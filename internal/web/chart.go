package web

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"html/template"
	"math"
	"slices"
	"strings"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Charts are drawn on the server as inline SVG: no script, no style
// attribute (the pages' Content-Security-Policy forbids inline styles),
// only presentation attributes. Every text is XML-escaped, and every
// series is bounded before it is drawn: at most maxChartPoints points per
// line, at most maxChartRows rows of distribution.
const (
	chartWidth     = 560
	chartHeight    = 160
	chartLeft      = 44 // room for the y labels
	chartBottom    = 22 // room for the x labels
	maxChartPoints = 360
	maxChartRows   = 24
	// chartWindow is the span of the time-series charts.
	chartWindow = 24 * time.Hour
)

// chart is one drawn chart with what a test or a JSON reader needs.
type chart struct {
	ID    string        `json:"id"`
	Title string        `json:"title"`
	SVG   template.HTML `json:"-"`
	// Empty says there was nothing to draw (the SVG says so too).
	Empty bool `json:"empty"`
}

// point is one (time, value) of a series.
type point struct {
	at time.Time
	v  float64
}

// esc XML-escapes s for SVG text and attribute values.
func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(xmlSafe(s)))
	return b.String()
}

// svgOpen writes the root element of a chart of height h.
func svgOpen(b *bytes.Buffer, id, title string, h int) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="%s" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">`,
		esc(id), chartWidth, h, chartWidth, h, esc(title))
	fmt.Fprintf(b, `<title>%s</title>`, esc(title))
	fmt.Fprintf(b, `<rect x="0" y="0" width="%d" height="%d" fill="#fbfbfc" stroke="#d8dbe0"/>`, chartWidth, h)
}

// emptyChart says there is nothing to draw yet.
func emptyChart(id, title, why string) chart {
	var b bytes.Buffer
	svgOpen(&b, id, title, 60)
	fmt.Fprintf(&b, `<text x="%d" y="35" text-anchor="middle" font-family="sans-serif" font-size="13" fill="#6b7280">%s</text></svg>`, chartWidth/2, esc(why))
	return chart{ID: id, Title: title, SVG: template.HTML(b.String()), Empty: true} // #nosec G203 -- every text above is escaped by esc
}

// thin keeps at most maxChartPoints points: the maximum of each run of
// neighbours, so a short spike still shows.
func thin(pts []point) []point {
	if len(pts) <= maxChartPoints {
		return pts
	}
	per := (len(pts) + maxChartPoints - 1) / maxChartPoints
	out := make([]point, 0, maxChartPoints)
	for i := 0; i < len(pts); i += per {
		run := pts[i:min(i+per, len(pts))]
		best := run[0]
		for _, p := range run[1:] {
			if p.v > best.v {
				best.v = p.v
			}
		}
		best.at = run[len(run)-1].at
		out = append(out, best)
	}
	return out
}

// lineChart draws pts (oldest first) over [from, to] as a step line with
// the area below filled. yMax 0 scales to the data; unit follows the
// y labels ("%" draws values as percent of 1).
func lineChart(id, title string, pts []point, from, to time.Time, yMax float64, unit, colour string) chart {
	pts = thin(pts)
	if len(pts) == 0 {
		return emptyChart(id, title, "No samples yet: the metaserver takes one a minute.")
	}
	top := yMax
	if top <= 0 {
		for _, p := range pts {
			top = max(top, p.v)
		}
		top = niceCeil(top)
	}
	plotW, plotH := float64(chartWidth-chartLeft-8), float64(chartHeight-chartBottom-10)
	span := to.Sub(from).Seconds()
	x := func(t time.Time) float64 {
		f := t.Sub(from).Seconds() / span
		return float64(chartLeft) + math.Max(0, math.Min(1, f))*plotW
	}
	y := func(v float64) float64 { return 10 + plotH - math.Max(0, math.Min(1, v/top))*plotH }
	var b bytes.Buffer
	svgOpen(&b, id, title, chartHeight)
	// Grid and y labels: 0, half, top.
	for _, f := range []float64{0, .5, 1} {
		yy := y(top * f)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e5e7eb"/>`, chartLeft, yy, chartWidth-8, yy)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" font-family="sans-serif" font-size="11" fill="#6b7280">%s</text>`,
			chartLeft-4, yy+4, esc(axisLabel(top*f, unit)))
	}
	// x labels: the window's start, middle and end, relative to now.
	for _, f := range []float64{0, .5, 1} {
		t := from.Add(time.Duration(f * float64(to.Sub(from))))
		anchor := map[float64]string{0: "start", .5: "middle", 1: "end"}[f]
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="%s" font-family="sans-serif" font-size="11" fill="#6b7280">%s</text>`,
			x(t), chartHeight-6, anchor, esc(agoLabel(to.Sub(t))))
	}
	var line, area strings.Builder
	for i, p := range pts {
		px, py := x(p.at), y(p.v)
		if i == 0 {
			fmt.Fprintf(&line, "M%.1f %.1f", px, py)
			fmt.Fprintf(&area, "M%.1f %.1f L%.1f %.1f", px, y(0), px, py)
			continue
		}
		fmt.Fprintf(&line, " H%.1f V%.1f", px, py)
		fmt.Fprintf(&area, " H%.1f V%.1f", px, py)
	}
	last := pts[len(pts)-1]
	fmt.Fprintf(&area, " H%.1f V%.1f Z", x(last.at), y(0))
	fmt.Fprintf(&b, `<path d="%s" fill="%s" fill-opacity="0.15" stroke="none"/>`, area.String(), colour)
	fmt.Fprintf(&b, `<path class="series" d="%s" fill="none" stroke="%s" stroke-width="1.5"/>`, line.String(), colour)
	fmt.Fprintf(&b, `<text x="%d" y="22" text-anchor="end" font-family="sans-serif" font-size="12" fill="#111827">now: %s</text>`,
		chartWidth-12, esc(axisLabel(last.v, unit)))
	b.WriteString(`</svg>`)
	return chart{ID: id, Title: title, SVG: template.HTML(b.String())} // #nosec G203 -- every text above is escaped by esc
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// niceSeconds rounds a duration in seconds up to a round one, so the
// axis reads 0, 15m, 30m rather than 0, 41m, 1h23m.
func niceSeconds(v float64) float64 {
	for _, d := range []float64{10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400} {
		if v <= d {
			return d
		}
	}
	return math.Ceil(v/86400) * 86400
}

// axisLabel writes a value with its unit.
func axisLabel(v float64, unit string) string {
	switch unit {
	case "%":
		return fmt.Sprintf("%.0f%%", v*100)
	case "s":
		return roughDuration(time.Duration(v * float64(time.Second)))
	}
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// agoLabel is "now" or "24h ago".
func agoLabel(d time.Duration) string {
	if d < time.Second {
		return "now"
	}
	return roughDuration(d) + " ago"
}

// distRow is one platform's build times.
type distRow struct {
	Platform string  `json:"platform"`
	Builds   int     `json:"builds"`
	Min      float64 `json:"min_seconds"`
	Median   float64 `json:"median_seconds"`
	P90      float64 `json:"p90_seconds"`
	Max      float64 `json:"max_seconds"`
}

// buildTimes groups the run times (started to finished) of the builds
// that ran to a verdict, SUCCEEDED or FAILED, by platform, sorted by
// platform; at most maxChartRows platforms, the ones with most builds.
func buildTimes(builds []*kilnv1.Build) []distRow {
	by := map[string][]float64{}
	for _, b := range builds {
		st := b.GetState()
		if (st != kilnv1.BuildState_BUILD_STATE_SUCCEEDED && st != kilnv1.BuildState_BUILD_STATE_FAILED) ||
			b.GetStartedAt() == nil || b.GetFinishedAt() == nil || b.GetPlatform() == nil {
			continue
		}
		d := b.GetFinishedAt().AsTime().Sub(b.GetStartedAt().AsTime()).Seconds()
		if d < 0 {
			continue
		}
		key := systemKey(b.GetPlatform())
		by[key] = append(by[key], d)
	}
	rows := make([]distRow, 0, len(by))
	for k, ds := range by {
		slices.Sort(ds)
		rows = append(rows, distRow{Platform: k, Builds: len(ds), Min: ds[0], Median: quantile(ds, .5), P90: quantile(ds, .9), Max: ds[len(ds)-1]})
	}
	slices.SortFunc(rows, func(a, b distRow) int {
		if a.Builds != b.Builds {
			return b.Builds - a.Builds
		}
		return strings.Compare(a.Platform, b.Platform)
	})
	if len(rows) > maxChartRows {
		rows = rows[:maxChartRows]
	}
	slices.SortFunc(rows, func(a, b distRow) int { return strings.Compare(a.Platform, b.Platform) })
	return rows
}

// quantile reads the q-quantile of sorted ds (nearest rank).
func quantile(ds []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// distChart draws one row per platform: a whisker from the fastest to
// the slowest build, a box from the median to the 90th percentile, a
// tick at the median, and the count.
func distChart(id, title string, rows []distRow) chart {
	if len(rows) == 0 {
		return emptyChart(id, title, "No build has run to a verdict yet.")
	}
	const rowH, labelW, right = 26, 210, 70
	h := 28 + rowH*len(rows)
	top := 0.0
	for _, r := range rows {
		top = max(top, r.Max)
	}
	top = niceSeconds(top)
	plotW := float64(chartWidth - labelW - right)
	x := func(v float64) float64 { return float64(labelW) + math.Min(1, v/top)*plotW }
	var b bytes.Buffer
	svgOpen(&b, id, title, h)
	for _, f := range []float64{0, .5, 1} {
		xx := x(top * f)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="6" x2="%.1f" y2="%d" stroke="#e5e7eb"/>`, xx, xx, h-20)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" font-family="sans-serif" font-size="11" fill="#6b7280">%s</text>`,
			xx, h-6, esc(axisLabel(top*f, "s")))
	}
	for i, r := range rows {
		cy := 8 + rowH*i + rowH/2
		fmt.Fprintf(&b, `<g class="dist-row"><title>%s: %d builds, fastest %s, median %s, 90%% within %s, slowest %s</title>`,
			esc(r.Platform), r.Builds, esc(axisLabel(r.Min, "s")), esc(axisLabel(r.Median, "s")), esc(axisLabel(r.P90, "s")), esc(axisLabel(r.Max, "s")))
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" font-family="sans-serif" font-size="11" fill="#111827">%s</text>`,
			labelW-8, cy+4, esc(truncateRunes(r.Platform, 34)))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#6b7280"/>`, x(r.Min), cy, x(r.Max), cy)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="12" fill="#1f5fbf" fill-opacity="0.35" stroke="#1f5fbf"/>`,
			x(r.Median), cy-6, math.Max(1, x(r.P90)-x(r.Median)))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#0b3d91" stroke-width="2"/>`, x(r.Median), cy-7, x(r.Median), cy+7)
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-family="sans-serif" font-size="11" fill="#6b7280">%d builds</text></g>`,
			chartWidth-right+6, cy+4, r.Builds)
	}
	b.WriteString(`</svg>`)
	return chart{ID: id, Title: title, SVG: template.HTML(b.String())} // #nosec G203 -- every text above is escaped by esc
}

// truncateRunes cuts s to n runes, marking the cut.
func truncateRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// historyCharts draws the time-series charts of the overview from the
// samples of the last chartWindow before now. A younger history (a new
// farm, or samples taken often and so kept for a shorter time) spans
// from its oldest sample, so a few minutes of it are not squeezed into
// the right edge of a day.
func historyCharts(samples []*kilnv1.Sample, now time.Time) []chart {
	from := now.Add(-chartWindow)
	for _, s := range samples {
		if at := s.GetAt().AsTime(); !at.Before(from) && !at.After(now) {
			from = at
			break
		}
	}
	from = time.Unix(0, min(from.UnixNano(), now.Add(-time.Minute).UnixNano())) // a minute at least
	// Cache lookups are summed per 24th of the window (an hour for a
	// day): a single sample's ratio is mostly 0/0.
	bucket := max(now.Sub(from)/24, time.Minute)
	var queue, targets, ratio []point
	type sums struct{ hits, misses uint64 }
	buckets := map[int64]*sums{}
	var keys []int64
	for _, s := range samples {
		at := s.GetAt().AsTime()
		if at.Before(from) || at.After(now) {
			continue
		}
		queue = append(queue, point{at, float64(s.GetQueueLength())})
		targets = append(targets, point{at, float64(s.GetConnectedTargets())})
		k := int64(at.Sub(from) / bucket)
		h := buckets[k]
		if h == nil {
			h = &sums{}
			buckets[k] = h
			keys = append(keys, k)
		}
		h.hits += s.GetCacheHits()
		h.misses += s.GetCacheMisses()
	}
	slices.Sort(keys)
	for _, k := range keys {
		h := buckets[k]
		if n := h.hits + h.misses; n > 0 {
			ratio = append(ratio, point{from.Add(time.Duration(k) * bucket), float64(h.hits) / float64(n)})
		}
	}
	span := roughDuration(now.Sub(from))
	charts := []chart{
		lineChart("chart-queue", "Queue length, last "+span, queue, from, now, 0, "", "#1f5fbf"),
		lineChart("chart-targets", "Connected targets, last "+span, targets, from, now, 0, "", "#2e7d32"),
	}
	title := "Cache hit ratio per " + roughDuration(bucket) + ", last " + span
	if len(ratio) == 0 {
		charts = append(charts, emptyChart("chart-cache", title, "No cache lookup in this time."))
	} else {
		charts = append(charts, lineChart("chart-cache", title, ratio, from, now, 1, "%", "#8e24aa"))
	}
	return charts
}
