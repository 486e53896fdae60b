package web

import (
	"context"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Options tunes a handler. The zero value is usable.
type Options struct {
	// Logger receives one line per request and the metaserver failures.
	// Nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock used for relative times ("3s ago"), durations of
	// unfinished builds and uptime. Nil means time.Now. Tests pin it.
	Now func() time.Time
	// RPCTimeout bounds each unary call to the metaserver (and the setup of
	// a stream), so a hung metaserver turns into a 503 page instead of a hung
	// browser. Streams themselves (a followed log, an artifact download) live
	// as long as the HTTP request. Zero means 10 seconds.
	RPCTimeout time.Duration
	// PageSize is the number of builds per /builds page when the request
	// does not say (?page_size=, at most 500). Zero lets the metaserver
	// choose (50).
	PageSize uint32
	// Draining, when closed, ends every followed log (HTML, raw and events)
	// at once with a note that webstatus is restarting, so a graceful
	// shutdown need not wait for running builds. Downloads and other
	// requests in flight are not affected. Nil means never.
	Draining <-chan struct{}
}

// defaultRPCTimeout is Options.RPCTimeout's default: long enough for a busy
// metaserver, short enough that a person waiting gets an answer.
const defaultRPCTimeout = 10 * time.Second

// maxPageSize mirrors ListBuildsRequest's documented cap.
const maxPageSize = 500

// server holds what every handler needs; it is immutable after NewHandler.
type server struct {
	status  kilnv1.StatusServiceClient
	compile kilnv1.CompileServiceClient
	log     *slog.Logger
	now     func() time.Time
	timeout time.Duration
	pageSz  uint32
	drain   <-chan struct{}
	tmpl    *templates
}

// NewHandler returns the handler serving every public page (see the package
// documentation for the routes). It reads the metaserver through status and
// compile on every request and caches nothing, so it is safe for concurrent
// use and may be mounted by several servers at once. It panics only if the
// embedded templates fail to parse, which the package's tests rule out.
func NewHandler(status kilnv1.StatusServiceClient, compile kilnv1.CompileServiceClient, opts Options) http.Handler {
	s := &server{
		status:  status,
		compile: compile,
		log:     opts.Logger,
		now:     opts.Now,
		timeout: opts.RPCTimeout,
		pageSz:  opts.PageSize,
		drain:   opts.Draining,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "web")
	if s.now == nil {
		s.now = time.Now
	}
	if s.timeout <= 0 {
		s.timeout = defaultRPCTimeout
	}
	if s.pageSz > maxPageSize {
		s.pageSz = maxPageSize
	}
	t, err := parseTemplates(s.now)
	if err != nil {
		panic("web: embedded templates: " + err.Error())
	}
	s.tmpl = t

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.handleOverview)
	mux.HandleFunc("GET /metaserverstatus", s.handleOverview)
	mux.HandleFunc("GET /buildservers", s.handleBuildServers)
	mux.HandleFunc("GET /builds", s.handleBuilds)
	mux.HandleFunc("GET /projects", s.handleProjects)
	mux.HandleFunc("GET /project/{name}", s.handleProject)
	mux.HandleFunc("GET /project/{name}/feed.atom", s.handleFeed)
	mux.HandleFunc("GET /badge/{file}", s.handleBadge)
	mux.HandleFunc("GET /build/{id}", s.handleBuild)
	mux.HandleFunc("GET /build/{id}/log", s.handleLog)
	mux.HandleFunc("GET /build/{id}/log.txt", s.handleLogText)
	mux.HandleFunc("GET /build/{id}/log/events", s.handleLogEvents)
	mux.HandleFunc("GET /build/{id}/artifact", s.handleArtifact)
	mux.HandleFunc("GET /log/checkpoint", s.handleLogCheckpoint)
	mux.HandleFunc("GET /log/tile/", s.handleLogTile)
	mux.HandleFunc("GET /healthz", handleHealthz)
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic("web: embedded static files: " + err.Error())
	}
	mux.Handle("GET /static/", http.StripPrefix("/static/", staticHandler(static)))
	mux.HandleFunc("/", s.handleNotFound)
	return s.middleware(mux)
}

// handleHealthz answers liveness probes without touching the metaserver:
// webstatus is alive even when the farm is not.
func handleHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

// staticHandler serves the embedded CSS and script with a short cache life.
func staticHandler(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		files.ServeHTTP(w, r)
	})
}

// handleNotFound is the catch-all for unknown paths and methods.
func (s *server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, &httpError{code: http.StatusNotFound, msg: "There is no page at " + r.URL.Path + "."})
}

// rpcContext bounds one unary metaserver call.
func (s *server) rpcContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.timeout)
}

// draining reports whether Options.Draining is closed.
func (s *server) draining() bool {
	select {
	case <-s.drain:
		return true
	default:
		return false
	}
}

// middleware sets the headers every response shares and logs each request.
func (s *server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		start := s.now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			s.log.Info("http request",
				"method", r.Method, "path", r.URL.Path, "status", rec.status,
				"bytes", rec.bytes, "duration_ms", s.now().Sub(start).Milliseconds())
		}()
		next.ServeHTTP(rec, r)
	})
}

// statusRecorder remembers the status and size of a response for the
// request log. Unwrap keeps http.ResponseController (Flush, deadlines)
// working through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	r.wrote = true
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// Unwrap returns the underlying writer for http.ResponseController.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// parseBuildID reads the {id} path segment: a positive decimal integer.
func parseBuildID(r *http.Request) (uint64, error) {
	raw := r.PathValue("id")
	id, err := strconv.ParseUint(raw, 10, 64)
	if err != nil || id == 0 {
		return 0, &httpError{code: http.StatusBadRequest, msg: "A build id is a positive decimal number, not " + strconv.Quote(raw) + "."}
	}
	return id, nil
}
