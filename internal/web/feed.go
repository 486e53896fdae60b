package web

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Bounds of /project/NAME/feed.atom.
const (
	// maxFeedEntries is how many finished builds a feed lists, newest
	// finished first.
	maxFeedEntries = 50
	// maxFeedLogTails is how many failed entries carry the end of their
	// log: each costs one GetLog call.
	maxFeedLogTails = 10
	// feedLogTail is how many bytes of a failed build's log its entry
	// carries (the end, where make says what broke).
	feedLogTail = 2048
)

// atomFeed is an Atom 1.0 document (RFC 4287). encoding/xml writes every
// string as escaped text, so a project name, a failure or a log with
// markup in it stays text.
type atomFeed struct {
	XMLName xml.Name    `xml:"http://www.w3.org/2005/Atom feed"`
	ID      string      `xml:"id"`
	Title   string      `xml:"title"`
	Updated string      `xml:"updated"`
	Author  atomPerson  `xml:"author"`
	Links   []atomLink  `xml:"link"`
	Entries []atomEntry `xml:"entry"`
}

type atomPerson struct {
	Name string `xml:"name"`
}

type atomLink struct {
	Rel  string `xml:"rel,attr,omitempty"`
	Type string `xml:"type,attr,omitempty"`
	Href string `xml:"href,attr"`
}

type atomCategory struct {
	Term string `xml:"term,attr"`
}

type atomText struct {
	Type string `xml:"type,attr"`
	Text string `xml:",chardata"`
}

type atomEntry struct {
	ID         string         `xml:"id"`
	Title      string         `xml:"title"`
	Updated    string         `xml:"updated"`
	Link       atomLink       `xml:"link"`
	Categories []atomCategory `xml:"category"`
	Summary    atomText       `xml:"summary"`
	Content    *atomText      `xml:"content,omitempty"`
}

// handleFeed serves /project/NAME/feed.atom: the project's finished
// builds, newest finished first. A failure is a first-class entry: its
// title says FAILED, its category is the state, its summary the reason
// and failing step, its content the end of its log.
func (s *server) handleFeed(w http.ResponseWriter, r *http.Request) {
	name, err := projectName(r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, cancel := s.rpcContext(r)
	defer cancel()
	builds, _, err := s.listBuilds(ctx, &kilnv1.ListBuildsRequest{Project: name})
	if err != nil {
		s.writeError(w, r, fromRPC(err, "project "+name))
		return
	}
	body, err := xml.MarshalIndent(s.newFeed(ctx, r, name, builds), "", "  ")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/atom+xml; charset=utf-8")
	h.Set("Cache-Control", "public, max-age=60")
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(append(body, '\n'))
}

// newFeed builds the feed of project name from its builds (newest first).
func (s *server) newFeed(ctx context.Context, r *http.Request, name string, builds []*kilnv1.Build) *atomFeed {
	base := baseURL(r)
	var done []*kilnv1.Build
	for _, b := range builds {
		if b.GetState().Final() && b.GetFinishedAt() != nil {
			done = append(done, b)
		}
	}
	slices.SortStableFunc(done, func(a, b *kilnv1.Build) int {
		return b.GetFinishedAt().AsTime().Compare(a.GetFinishedAt().AsTime())
	})
	if len(done) > maxFeedEntries {
		done = done[:maxFeedEntries]
	}
	f := &atomFeed{
		ID:     base + projectURL(name),
		Title:  "Kiln builds of " + name,
		Author: atomPerson{Name: "Kiln"},
		Links: []atomLink{
			{Rel: "self", Type: "application/atom+xml", Href: base + feedURL(name)},
			{Rel: "alternate", Type: "text/html", Href: base + projectURL(name)},
		},
		Entries: []atomEntry{},
	}
	// A feed without entries is still valid: its updated is the epoch.
	f.Updated = atomTime(time.Unix(0, 0))
	if len(done) > 0 {
		f.Updated = atomTime(done[0].GetFinishedAt().AsTime())
	}
	tails := 0
	for _, b := range done {
		e := newFeedEntry(base, b)
		if b.GetState() == kilnv1.BuildState_BUILD_STATE_FAILED && tails < maxFeedLogTails && b.GetLogSize() > 0 {
			tails++
			if tail := s.logTail(ctx, b); tail != "" {
				e.Content = &atomText{Type: "text", Text: tail}
			}
		}
		f.Entries = append(f.Entries, e)
	}
	return f
}

// newFeedEntry is one finished build as an entry. Its id is the build's
// page, which never names another build.
func newFeedEntry(base string, b *kilnv1.Build) atomEntry {
	word := b.GetState().Word()
	where := "any platform"
	if b.GetPlatform() != nil {
		where = describeSystem(b.GetPlatform())
	}
	title := fmt.Sprintf("%s: %s #%d, commit %s on %s", strings.ToUpper(word), b.GetProject(), b.GetId(), shortCommit(b.GetCommit()), where)
	var sum strings.Builder
	fmt.Fprintf(&sum, "Build #%d of %s at commit %s (%s) %s", b.GetId(), b.GetProject(), b.GetCommit(), b.GetRevision(), word)
	if b.GetFailure() != "" {
		sum.WriteString(": " + b.GetFailure())
	}
	if b.GetFailingStep() != "" {
		sum.WriteString(" (step: " + b.GetFailingStep() + ")")
	}
	if b.GetWithdrawn() != "" {
		sum.WriteString("; its artifact was withdrawn: " + b.GetWithdrawn())
	}
	sum.WriteString(".")
	return atomEntry{
		ID:         base + buildURL(b.GetId()),
		Title:      xmlSafe(title),
		Updated:    atomTime(b.GetFinishedAt().AsTime()),
		Link:       atomLink{Rel: "alternate", Type: "text/html", Href: base + buildURL(b.GetId())},
		Categories: []atomCategory{{Term: word}},
		Summary:    atomText{Type: "text", Text: xmlSafe(sum.String())},
	}
}

// logTail returns the last feedLogTail bytes of b's log, cut to whole
// UTF-8 and with the characters XML 1.0 cannot carry replaced; "" when
// the log cannot be read (the entry goes out without it).
func (s *server) logTail(ctx context.Context, b *kilnv1.Build) string {
	from := uint64(0)
	if b.GetLogSize() > feedLogTail {
		from = b.GetLogSize() - feedLogTail
	}
	var buf bytes.Buffer
	_, err := s.readLog(ctx, b.GetId(), from, false, func(_ uint64, text []byte) error {
		if buf.Len()+len(text) > 2*feedLogTail {
			return errLogTailFull
		}
		buf.Write(text)
		return nil
	})
	if err != nil && err != errLogTailFull {
		s.log.Warn("feed: log tail", "build_id", b.GetId(), "error", err)
		return ""
	}
	return xmlSafe(buf.String())
}

// errLogTailFull stops reading a log that grew past its size.
var errLogTailFull = fmt.Errorf("log tail full")

// xmlSafe replaces invalid UTF-8 and the control characters XML 1.0 does
// not allow (all below 0x20 but tab, newline and carriage return) with
// U+FFFD: encoding/xml escapes markup but would otherwise write them
// as they are and make the document ill-formed.
func xmlSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == utf8.RuneError, r < 0x20 && r != '\t' && r != '\n' && r != '\r', r == 0xFFFE, r == 0xFFFF:
			return '\uFFFD'
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

// atomTime formats t as RFC 3339 in UTC, as Atom's date constructs want.
func atomTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// feedURL is the path of a project's feed.
func feedURL(name string) string { return "/project/" + url.PathEscape(name) + "/feed.atom" }

// baseURL is the scheme and host the request reached webstatus by, for
// the absolute links a feed reader needs.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
