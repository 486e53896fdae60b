package web

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// badgeCacheControl lets a README's image proxy keep a badge a minute:
// fresh enough after a fix, cheap for the metaserver.
const badgeCacheControl = "public, max-age=60, stale-while-revalidate=60"

// maxBadgeLabel bounds the project name drawn on a badge, in runes.
const maxBadgeLabel = 40

// badge states, their words and colours. A project (or the platforms the
// query selects) is "failing" when a platform's newest finished build
// failed, else "passing" when one succeeded, else "building" while a build
// is queued or running, else "unknown".
var badgeColours = map[string]string{
	"passing":  "#2e7d32",
	"failing":  "#c62828",
	"building": "#1f5fbf",
	"unknown":  "#808891",
}

// badgeURL is the badge of project name.
func badgeURL(name string) string { return "/badge/" + url.PathEscape(name) + ".svg" }

// badgeState is the word a badge shows for the matrix of a project's
// builds (those of the platform the badge asks for).
func badgeState(builds []*kilnv1.Build) string {
	m := newMatrix("", builds)
	state := "unknown"
	for _, c := range m.Platforms {
		switch {
		case c.Broken():
			return "failing"
		case c.State == kilnv1.BuildState_BUILD_STATE_SUCCEEDED.Word():
			state = "passing"
		}
	}
	if state == "unknown" {
		for _, b := range builds {
			if !b.GetState().Final() {
				return "building"
			}
		}
	}
	return state
}

// parseBadgePlatform reads ?platform=field=value,... (the syntax of
// startcompile check --platform) into ListBuilds filters; only the
// filterable fields (platform.FilterFields) may be given.
func parseBadgePlatform(q url.Values, req *kilnv1.ListBuildsRequest) error {
	for key := range q {
		if key != "platform" {
			return badRequest("Unknown parameter %q; a badge takes platform=field=value,...", key)
		}
	}
	if len(q["platform"]) > 1 {
		return badRequest("Parameter \"platform\" is given %d times; give it once.", len(q["platform"]))
	}
	raw := q.Get("platform")
	if raw == "" {
		return nil
	}
	if len(raw) > maxFilterLen {
		return badRequest("platform is longer than %d bytes.", maxFilterLen)
	}
	for _, kv := range strings.Split(raw, ",") {
		field, value, ok := strings.Cut(kv, "=")
		pf, known := platform.Lookup(field)
		if !ok || !known || !pf.Filterable {
			return badRequest("platform is field=value,... with fields among %s, not %q.", strings.Join(platform.FilterFields, ", "), kv)
		}
		v, err := platform.Canonical(field, value)
		if err != nil {
			return badRequest("platform: %v", err)
		}
		pf.SetListFilter(req, v)
	}
	return nil
}

func (s *server) handleBadge(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	name, ok := strings.CutSuffix(file, ".svg")
	if !ok {
		s.writeError(w, r, &httpError{code: http.StatusNotFound, msg: "A badge is at /badge/PROJECT.svg."})
		return
	}
	name, err := projectName(name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	req := &kilnv1.ListBuildsRequest{Project: name}
	if err := parseBadgePlatform(r.URL.Query(), req); err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, cancel := s.rpcContext(r)
	defer cancel()
	builds, _, err := s.listBuilds(ctx, req)
	if err != nil {
		s.writeError(w, r, fromRPC(err, "project "+name))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "image/svg+xml; charset=utf-8")
	h.Set("Cache-Control", badgeCacheControl)
	_, _ = w.Write(badgeSVG(name, badgeState(builds)))
}

// badgeSVG draws a two-part badge, label on grey and state on its colour.
// Widths are estimated from the rune count (no font metrics), generous
// enough for Verdana at 11px. Text is XML-escaped: a project name is
// drawn as text whatever it holds.
func badgeSVG(label, state string) []byte {
	if utf8.RuneCountInString(label) > maxBadgeLabel {
		label = string([]rune(label)[:maxBadgeLabel-1]) + "…"
	}
	lw := 10 + 7*utf8.RuneCountInString(label)
	sw := 10 + 7*len(state)
	esc := func(s string) string {
		var b bytes.Buffer
		_ = xml.EscapeText(&b, []byte(s))
		return b.String()
	}
	l, st := esc(label), esc(state)
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="20" role="img" aria-label="%s: %s">`, lw+sw, l, st)
	fmt.Fprintf(&b, `<title>%s: %s</title>`, l, st)
	fmt.Fprintf(&b, `<rect width="%d" height="20" rx="3" fill="#555"/>`, lw+sw)
	fmt.Fprintf(&b, `<rect x="%d" width="%d" height="20" fill="%s"/>`, lw, sw, badgeColours[state])
	fmt.Fprintf(&b, `<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">`)
	fmt.Fprintf(&b, `<text x="%d" y="14">%s</text><text x="%d" y="14">%s</text></g></svg>`, lw/2, l, lw+sw/2, st)
	b.WriteByte('\n')
	return b.Bytes()
}
