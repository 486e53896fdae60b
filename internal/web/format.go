package web

import (
	"encoding/base64"
	"fmt"
	"html/template"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// funcMap is what the templates may call. Functions needing the clock read
// now at execution time.
func funcMap(now func() time.Time) template.FuncMap {
	return template.FuncMap{
		"time":        func(ts *timestamppb.Timestamp) template.HTML { return timeHTML(ts, now()) },
		"since":       func(ts *timestamppb.Timestamp) string { return sinceText(ts, now()) },
		"span":        func(a, b *timestamppb.Timestamp) string { return spanText(a, b, now()) },
		"bytes":       humanBytes,
		"key":         func(k []byte) string { return base64.StdEncoding.EncodeToString(k) },
		"state":       kilnv1.BuildState.Word,
		"outcome":     kilnv1.AttemptOutcome.Word,
		"phase":       kilnv1.Phase.Word,
		"short":       shortCommit,
		"system":      describeSystem,
		"constraints": describeConstraints,
		"tools":       toolsText,
		"sortedKeys":  func(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) },
		"runs":        runs,
		"policy":      describePolicy,
		"projectURL":  projectURL,
		"at":          func(t *time.Time) template.HTML { return timeHTML(timestampOf(t), now()) },
		"age": func(t *time.Time) string {
			if t == nil {
				return "—"
			}
			return roughDuration(now().Sub(*t))
		},
		"inc":        func(i int) int { return i + 1 },
		"cacheStats": cacheStatsText,
		"pct":        func(r float64) string { return strconv.FormatFloat(100*r, 'f', 1, 64) + "%" },
	}
}

// timeHTML renders a timestamp as RFC 3339 UTC plus how long ago it was,
// inside a <time> element; "—" when unset.
func timeHTML(ts *timestamppb.Timestamp, now time.Time) template.HTML {
	if ts == nil {
		return "—"
	}
	t := ts.AsTime().UTC()
	abs := t.Format(time.RFC3339)
	return template.HTML(fmt.Sprintf(`<time datetime="%s">%s</time> <span class="rel">(%s)</span>`,
		template.HTMLEscapeString(abs), template.HTMLEscapeString(abs), template.HTMLEscapeString(relative(t, now))))
}

// timestampOf converts a page's *time.Time for timeHTML; nil stays nil.
func timestampOf(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

// sinceText is the age of ts ("3s ago"), or "—" when unset.
func sinceText(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil {
		return "—"
	}
	return relative(ts.AsTime(), now)
}

// relative says how far t is from now in one unit: "3s ago", "in 2m",
// "just now".
func relative(t, now time.Time) string {
	d := now.Sub(t)
	if d > -time.Second && d < time.Second {
		return "just now"
	}
	if d < 0 {
		return "in " + roughDuration(-d)
	}
	return roughDuration(d) + " ago"
}

// roughDuration prints d in its largest whole unit: 45s, 3m, 5h, 2d.
func roughDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	default:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
}

// spanText is the duration from a to b (to now when b is unset), precise to
// the second; "—" when a is unset.
func spanText(a, b *timestamppb.Timestamp, now time.Time) string {
	if a == nil {
		return "—"
	}
	end := now
	suffix := " so far"
	if b != nil {
		end, suffix = b.AsTime(), ""
	}
	return exactDuration(end.Sub(a.AsTime())) + suffix
}

// exactDuration prints d as "1h02m03s", "2m05s" or "4s" (sub-second: "0.25s").
func exactDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < time.Second {
		return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
	}
	d = d.Round(time.Second)
	h, m, sec := int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second)
	switch {
	case h > 0:
		return fmt.Sprintf("%dh%02dm%02ds", h, m, sec)
	case m > 0:
		return fmt.Sprintf("%dm%02ds", m, sec)
	default:
		return fmt.Sprintf("%ds", sec)
	}
}

// humanBytes prints n in binary units: "512 B", "1.5 KiB", "3.2 GiB".
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + " " + string("KMGTPE"[exp]) + "iB"
}

// parseState reads the ?state= filter, a state's word; "", "any" and
// "all" mean no filter.
func parseState(word string) (kilnv1.BuildState, bool) {
	switch strings.ToLower(strings.TrimSpace(word)) {
	case "", "any", "all":
		return kilnv1.BuildState_BUILD_STATE_UNSPECIFIED, true
	}
	return kilnv1.ParseBuildState(word)
}

// stateWords lists the filterable states in lifecycle order.
func stateWords() []string {
	var out []string
	for _, s := range kilnv1.BuildStates() {
		out = append(out, s.Word())
	}
	return out
}

// shortCommit is the first 12 hex digits of a commit id.
func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// describeSystem is platform.Describe, with "—" for an unset platform.
func describeSystem(si *kilnv1.SystemInfo) string {
	if si == nil {
		return "—"
	}
	return platform.Describe(si)
}

// describeConstraints is platform.DescribeConstraints, spelling "nothing
// pinned" as "any platform".
func describeConstraints(c *kilnv1.PlatformConstraints) string {
	if d := platform.DescribeConstraints(c); d != platform.Any {
		return d
	}
	return "any platform"
}

// toolsText lists tools with versions, sorted: "autoconf 2.71, make 4.3".
func toolsText(tools map[string]string) string {
	if len(tools) == 0 {
		return "—"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(tools)) {
		parts = append(parts, strings.TrimSpace(k+" "+tools[k]))
	}
	return strings.Join(parts, ", ")
}

// describePolicy summarizes what a volunteer accepts.
func describePolicy(p *kilnv1.BuildServerPolicy) string {
	if p == nil {
		return "any project"
	}
	var parts []string
	if len(p.GetAllowedProjects()) > 0 {
		parts = append(parts, "projects: "+strings.Join(p.GetAllowedProjects(), ", "))
	} else {
		parts = append(parts, "any project")
	}
	if p.GetMaxBuildSeconds() > 0 {
		parts = append(parts, "at most "+exactDuration(time.Duration(p.GetMaxBuildSeconds())*time.Second)+" per build")
	}
	for _, k := range slices.Sorted(maps.Keys(p.GetAllowedOptions())) {
		parts = append(parts, k+" ∈ {"+strings.Join(p.GetAllowedOptions()[k].GetValues(), ", ")+"}")
	}
	if p.GetIdleOnly() {
		parts = append(parts, "only while idle")
	}
	return strings.Join(parts, "; ")
}

// runs formats a build server's agreeing results in a row per platform
// identity: "linux/x86_64/little/LP64/glibc: 12", sorted, "; "-joined.
func runs(m map[string]uint32) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, "; ")
}

// cacheStatsText says how an attempt's compiler cache served it: "12 of
// 40 compilations (30%)", "—" when it used none.
func cacheStatsText(st *kilnv1.CompilerCacheStats) string {
	if st == nil {
		return "—"
	}
	n := st.GetHits() + st.GetMisses()
	if n == 0 {
		return "no compilation"
	}
	return fmt.Sprintf("%d of %d compilations (%.0f%%)", st.GetHits(), n, 100*float64(st.GetHits())/float64(n))
}
