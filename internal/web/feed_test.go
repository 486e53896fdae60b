package web_test

import (
	"bytes"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// atomDoc is what a test reads of an Atom feed: the elements RFC 4287
// requires (feed: id, title, updated, author unless every entry has one;
// entry: id, title, updated) and what Kiln puts beside them.
type atomDoc struct {
	XMLName xml.Name `xml:"http://www.w3.org/2005/Atom feed"`
	ID      string   `xml:"id"`
	Title   string   `xml:"title"`
	Updated string   `xml:"updated"`
	Author  []string `xml:"author>name"`
	Links   []struct {
		Rel  string `xml:"rel,attr"`
		Href string `xml:"href,attr"`
	} `xml:"link"`
	Entries []struct {
		ID       string `xml:"id"`
		Title    string `xml:"title"`
		Updated  string `xml:"updated"`
		Category []struct {
			Term string `xml:"term,attr"`
		} `xml:"category"`
		Link struct {
			Href string `xml:"href,attr"`
		} `xml:"link"`
		Summary string `xml:"summary"`
		Content string `xml:"content"`
	} `xml:"entry"`
}

// readAtom checks that body is one well-formed XML document whose root is
// an Atom feed with every required element, and decodes it.
func readAtom(t *testing.T, body string) atomDoc {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(body))
	depth, roots := 0, 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("feed is not well-formed XML: %v\n%s", err, body)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
			}
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 0 && len(bytes.TrimSpace(tok)) > 0 {
				t.Fatalf("feed: text outside the root: %q", tok)
			}
		}
	}
	if roots != 1 {
		t.Fatalf("feed has %d root elements", roots)
	}
	var doc atomDoc
	if err := xml.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("feed: %v", err)
	}
	if doc.ID == "" || doc.Title == "" || len(doc.Author) == 0 || doc.Author[0] == "" {
		t.Fatalf("feed lacks id, title or author: %+v", doc)
	}
	checkTime := func(what, s string) {
		if _, err := time.Parse(time.RFC3339, s); err != nil {
			t.Fatalf("%s updated %q is not RFC 3339: %v", what, s, err)
		}
	}
	checkTime("feed", doc.Updated)
	ids := map[string]bool{}
	for _, e := range doc.Entries {
		if e.ID == "" || e.Title == "" {
			t.Fatalf("entry lacks id or title: %+v", e)
		}
		if ids[e.ID] {
			t.Fatalf("entry id %s twice", e.ID)
		}
		ids[e.ID] = true
		checkTime("entry "+e.ID, e.Updated)
	}
	return doc
}

func TestFeedListsFinishedBuildsWithFailuresFirstClass(t *testing.T) {
	f := newFarm()
	addDemoProject(f)
	f.logs[206].data = []byte(strings.Repeat("compiling\n", 400) + "cc: error: <b>boom</b> & more\n")
	f.builds[206].LogSize = uint64(len(f.logs[206].data))
	f.builds[206].Failure, f.builds[206].FailingStep = "step make exited 2", "make"
	srv := startFarm(t, f)
	r := get(t, srv.URL+"/project/demo/feed.atom", "")
	if r.code != http.StatusOK {
		t.Fatalf("status %d:\n%s", r.code, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/atom+xml; charset=utf-8" {
		t.Fatalf("Content-Type %q", ct)
	}
	doc := readAtom(t, r.body)
	// Finished builds only (not the running 208 nor the queued 209),
	// newest finished first: 207 finished at -23h+1m, then 205 and 206 at
	// -24h+1m (newest id first on a tie), 204, 203, 202, 201.
	var got []string
	for _, e := range doc.Entries {
		got = append(got, e.Link.Href[strings.LastIndexByte(e.Link.Href, '/')+1:])
	}
	if want := "207 206 205 204 203 202 201"; strings.Join(got, " ") != want {
		t.Fatalf("entries %v, want %s", got, want)
	}
	if !strings.HasPrefix(doc.Entries[0].Link.Href, srv.URL+"/build/") {
		t.Errorf("entry link %q is not absolute", doc.Entries[0].Link.Href)
	}
	if doc.Updated != doc.Entries[0].Updated {
		t.Errorf("feed updated %s, newest entry %s", doc.Updated, doc.Entries[0].Updated)
	}
	failed := doc.Entries[1]
	if !strings.HasPrefix(failed.Title, "FAILED: demo #206") || failed.Category[0].Term != "failed" {
		t.Errorf("failed entry title %q category %v", failed.Title, failed.Category)
	}
	if !strings.Contains(failed.Summary, "step make exited 2 (step: make)") {
		t.Errorf("failed summary %q", failed.Summary)
	}
	// The log's end, as text: the markup comes back as it was written.
	if !strings.HasSuffix(failed.Content, "cc: error: <b>boom</b> & more\n") || len(failed.Content) > 2048 {
		t.Errorf("failed content (%d bytes) ends %q", len(failed.Content), failed.Content[max(0, len(failed.Content)-40):])
	}
	if strings.Contains(r.body, "<b>boom") {
		t.Error("log markup is raw in the feed")
	}
	if doc.Entries[2].Content != "" || doc.Entries[2].Category[0].Term != "succeeded" {
		t.Errorf("succeeded entry: %+v", doc.Entries[2])
	}
	if !strings.Contains(doc.Entries[2].Summary, "withdrawn") {
		t.Errorf("withdrawn build's summary %q", doc.Entries[2].Summary)
	}
	// The project page links to it.
	if p := get(t, srv.URL+"/project/demo", ""); !strings.Contains(p.body, `href="/project/demo/feed.atom"`) {
		t.Error("project page does not link its feed")
	}
}

func TestFeedKeepsHostileTextAsText(t *testing.T) {
	f := newFarm()
	addDemoProject(f)
	b := f.builds[210]
	b.Failure = "</summary><script>alert(1)</script>\x00\x1b[31m"
	f.logs[210].data = []byte("]]><entry>\x07<![CDATA[ \xff\xfe end")
	b.LogSize = uint64(len(f.logs[210].data))
	srv := startFarm(t, f)
	r := get(t, srv.URL+"/project/"+url.PathEscape(hostileProject)+"/feed.atom", "")
	if r.code != http.StatusOK {
		t.Fatalf("status %d:\n%s", r.code, r.body)
	}
	doc := readAtom(t, r.body)
	if len(doc.Entries) != 1 {
		t.Fatalf("%d entries", len(doc.Entries))
	}
	e := doc.Entries[0]
	if !strings.Contains(e.Title, hostileProject) || !strings.Contains(doc.Title, hostileProject) {
		t.Errorf("title %q / %q lost the name", e.Title, doc.Title)
	}
	if !strings.Contains(e.Summary, "</summary><script>alert(1)</script>\uFFFD\uFFFD[31m") {
		t.Errorf("summary %q", e.Summary)
	}
	if !strings.Contains(e.Content, "]]><entry>\uFFFD<![CDATA[ \uFFFD end") {
		t.Errorf("content %q", e.Content)
	}
	for _, raw := range []string{"<script", "<entry>\x07", "<![CDATA["} {
		if strings.Contains(r.body, raw) {
			t.Errorf("raw %q in the feed", raw)
		}
	}
}

func TestFeedOfAnUnknownProjectIsEmptyAndBadNamesAreRefused(t *testing.T) {
	srv := startFarm(t, newFarm())
	r := get(t, srv.URL+"/project/nobody/feed.atom", "")
	if r.code != http.StatusOK {
		t.Fatalf("status %d", r.code)
	}
	if doc := readAtom(t, r.body); len(doc.Entries) != 0 {
		t.Fatalf("%d entries", len(doc.Entries))
	}
	if r := get(t, srv.URL+"/project/a%20b/feed.atom", ""); r.code != http.StatusBadRequest {
		t.Fatalf("name with a space: status %d", r.code)
	}
}

func TestFeedIsBounded(t *testing.T) {
	f := newFarm()
	for i := uint64(1000); i < 1200; i++ {
		f.add(&kilnv1.Build{Id: i, Project: "many", Commit: "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1", State: kilnv1.BuildState_BUILD_STATE_FAILED,
			Platform: x86System(), CreatedAt: ts(-time.Hour), FinishedAt: ts(time.Duration(i) * time.Second)}, "log of a failure\n", true)
	}
	srv := startFarm(t, f)
	doc := readAtom(t, get(t, srv.URL+"/project/many/feed.atom", "").body)
	if len(doc.Entries) != 50 {
		t.Fatalf("%d entries, want 50", len(doc.Entries))
	}
	withLog := 0
	for _, e := range doc.Entries {
		if e.Content != "" {
			withLog++
		}
	}
	if withLog != 10 || doc.Entries[0].Link.Href != srv.URL+"/build/1199" {
		t.Fatalf("%d entries with a log, first %s", withLog, doc.Entries[0].Link.Href)
	}
}
