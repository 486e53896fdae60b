package web

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"mime"
	"net/http"
	"strings"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// pageNames are the page templates (templates/<name>.html). Each defines
// "content" and is executed through "page" in layout.html, which adds the
// head, the nav bar and the footer.
var pageNames = []string{"overview", "buildservers", "builds", "build", "log", "error", "projects", "project"}

// templates holds one parsed set per page, each a clone of the layout with
// the page's "content" added.
type templates struct {
	pages map[string]*template.Template
}

// parseTemplates parses the embedded templates with funcs bound to now.
func parseTemplates(now func() time.Time) (*templates, error) {
	base, err := template.New("layout.html").Funcs(funcMap(now)).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("parse layout: %w", err)
	}
	t := &templates{pages: make(map[string]*template.Template, len(pageNames))}
	for _, name := range pageNames {
		clone, err := base.Clone()
		if err != nil {
			return nil, fmt.Errorf("clone layout for %s: %w", name, err)
		}
		if _, err := clone.ParseFS(templateFS, "templates/"+name+".html"); err != nil {
			return nil, fmt.Errorf("parse %s: %w", name, err)
		}
		t.pages[name] = clone
	}
	return t, nil
}

// page is what the layout sees: the title, the active nav entry and the
// page's own data (the same value the JSON form encodes).
type page struct {
	Title string
	Nav   string // "overview", "buildservers", "builds", "projects" or ""
	Data  any
}

// render executes the page template into a buffer first, so a template error
// becomes a clean 500 instead of half a page.
func (s *server) render(w http.ResponseWriter, r *http.Request, code int, name, title, nav string, data any) {
	var buf bytes.Buffer
	if err := s.tmpl.execute(&buf, name, "page", page{Title: title, Nav: nav, Data: data}); err != nil {
		s.log.Error("render page", "page", name, "path", r.URL.Path, "error", err)
		if name != "error" {
			s.writeError(w, r, err)
			return
		}
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Vary", "Accept")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// execute runs one named template of the page set name.
func (t *templates) execute(w interface{ Write([]byte) (int, error) }, name, tmpl string, data any) error {
	set, ok := t.pages[name]
	if !ok {
		return fmt.Errorf("no page template %q", name)
	}
	return set.ExecuteTemplate(w, tmpl, data)
}

// respond writes data as JSON when the request asks for it, else as the
// named HTML page.
func (s *server) respond(w http.ResponseWriter, r *http.Request, name, title, nav string, data any) {
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, data)
		return
	}
	s.render(w, r, http.StatusOK, name, title, nav, data)
}

// wantsJSON reports whether the Accept header names application/json with a
// non-zero quality. Browsers never send it for navigation, so HTML stays the
// default.
func wantsJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil || mt != "application/json" {
			continue
		}
		if q := params["q"]; q == "0" || q == "0.0" || q == "0.00" || q == "0.000" {
			continue
		}
		return true
	}
	return false
}

// writeJSON encodes v with encoding/json (proto values inside v marshal
// themselves with protojson).
func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code = http.StatusInternalServerError
		body, _ = json.Marshal(map[string]any{"error": errorView{Code: code, Status: http.StatusText(code), Message: "encoding the response failed"}})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Vary", "Accept")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
