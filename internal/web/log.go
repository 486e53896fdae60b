package web

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strconv"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// maxJSONLog caps the log carried in the JSON form of the log page; the
// raw log (log.txt) has no cap.
const maxJSONLog = 32 << 20

// logView is the data of /build/<id>/log (its head) and of its JSON form.
type logView struct {
	Build pbBuild `json:"build"`
	State string  `json:"state"`
	Final bool    `json:"final"`
	// Live is true when the HTML response streams the log as it grows.
	Live bool `json:"-"`
	// Snapshot is true for ?snapshot=1: the log so far, then a script
	// follows it over server-sent events.
	Snapshot bool `json:"-"`
	// Log is the log text (JSON form only); Truncated when it was capped.
	Log       *string `json:"log,omitempty"`
	Truncated bool    `json:"truncated,omitempty"`
}

// logFoot is the data rendered after the streamed log.
type logFoot struct {
	Build pbBuild
	State string
	Final bool
	// Interrupted explains why the stream broke off, if it did.
	Interrupted string
	// EventsURL is set in snapshot mode while the build is not final: where
	// the script resumes the log.
	EventsURL string
}

// handleLog renders the log as HTML. For a build that is not final the
// response streams: the page head is sent at once, then every chunk GetLog
// delivers is appended inside the <pre> and flushed, so a browser shows the
// log growing without any script. ?snapshot=1 instead renders the log so
// far and lets static/log.js follow it through /log/events.
func (s *server) handleLog(w http.ResponseWriter, r *http.Request) {
	if err := checkParams(r, "snapshot"); err != nil {
		s.writeError(w, r, err)
		return
	}
	snapshot, err := parseBoolParam(r, "snapshot")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b, err := s.getBuild(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id := b.GetId()
	v := logView{Build: pbBuild{b}, State: b.GetState().Word(), Final: b.GetState().Final()}
	if wantsJSON(r) {
		s.logJSON(w, r, v)
		return
	}
	v.Snapshot = snapshot
	v.Live = !v.Final && !snapshot
	title := "Log of build " + strconv.FormatUint(id, 10) + " · " + b.GetProject()

	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // tell reverse proxies not to buffer the stream
	h.Set("Vary", "Accept")
	w.WriteHeader(http.StatusOK)
	if err := s.tmpl.execute(w, "log", "log_head", page{Title: title, Nav: "builds", Data: v}); err != nil {
		s.log.Error("render log head", "build_id", id, "error", err)
		panic(http.ErrAbortHandler)
	}
	flush(w)

	foot := logFoot{Build: pbBuild{b}, State: v.State, Final: v.Final}
	next, err := s.readLog(r.Context(), id, 0, v.Live, func(_ uint64, text []byte) error {
		template.HTMLEscape(w, text)
		if v.Live {
			flush(w)
		}
		return nil
	})
	if r.Context().Err() != nil {
		return // the visitor left
	}
	if err != nil {
		foot.Interrupted = fromRPC(err, "log").msg
		s.log.Warn("log stream broke off", "build_id", id, "offset", next, "error", err)
	}
	if v.Live || err != nil {
		// The build may have ended while we streamed: show its final state.
		ctx, cancel := s.rpcContext(r)
		if resp, gerr := s.compile.GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: id}); gerr == nil && resp.GetBuild() != nil {
			foot.Build, foot.State, foot.Final = pbBuild{resp.GetBuild()}, resp.GetBuild().GetState().Word(), resp.GetBuild().GetState().Final()
		}
		cancel()
	}
	if snapshot && !foot.Final {
		foot.EventsURL = fmt.Sprintf("/build/%d/log/events?offset=%d", id, next)
	}
	if err := s.tmpl.execute(w, "log", "log_foot", page{Title: title, Nav: "builds", Data: foot}); err != nil {
		s.log.Error("render log foot", "build_id", id, "error", err)
		panic(http.ErrAbortHandler)
	}
}

// logJSON answers the log page's JSON form: the build and its log so far.
func (s *server) logJSON(w http.ResponseWriter, r *http.Request, v logView) {
	var buf bytes.Buffer
	_, err := s.readLog(r.Context(), v.Build.GetId(), 0, false, func(_ uint64, text []byte) error {
		if room := maxJSONLog - buf.Len(); len(text) > room {
			text, v.Truncated = text[:room], true
		}
		buf.Write(text)
		return nil
	})
	if err != nil {
		s.writeError(w, r, fromRPC(err, "log of build "+strconv.FormatUint(v.Build.GetId(), 10)))
		return
	}
	text := buf.String()
	v.Log = &text
	writeJSON(w, http.StatusOK, v)
}

// handleLogText serves the raw log as text/plain. With ?follow=1 and a
// build that is not final it streams until the build ends. The headers are
// sent with the first byte: a failure before that is an error page, after
// it the response is aborted (a truncated log never looks complete).
func (s *server) handleLogText(w http.ResponseWriter, r *http.Request) {
	if err := checkParams(r, "follow"); err != nil {
		s.writeError(w, r, err)
		return
	}
	follow, err := parseBoolParam(r, "follow")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b, err := s.getBuild(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	follow = follow && !b.GetState().Final()
	started := false
	start := func() {
		if started {
			return
		}
		started = true
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
	}
	if follow {
		start() // a follower wants the headers now, even before the first line
		flush(w)
	}
	next, err := s.readLog(r.Context(), b.GetId(), 0, follow, func(_ uint64, text []byte) error {
		start()
		if _, err := w.Write(text); err != nil {
			return err
		}
		if follow {
			flush(w)
		}
		return nil
	})
	if r.Context().Err() != nil {
		return
	}
	if err != nil {
		if !started {
			s.writeError(w, r, fromRPC(err, "log of build "+strconv.FormatUint(b.GetId(), 10)))
			return
		}
		s.log.Warn("raw log stream broke off; aborting the response", "build_id", b.GetId(), "offset", next, "error", err)
		panic(http.ErrAbortHandler)
	}
	start()
}

// handleLogEvents serves the log as server-sent events for static/log.js
// and other followers:
//
//	event: log   id: <offset after this chunk>   data: {"offset":N,"text":"..."}
//	event: end                                   data: {"state":"succeeded","final":true}
//
// The id lets a reconnecting EventSource resume exactly (Last-Event-ID).
// After "end" the client should close; if it reconnects anyway it gets
// "end" again at once.
func (s *server) handleLogEvents(w http.ResponseWriter, r *http.Request) {
	if err := checkParams(r, "offset"); err != nil {
		s.writeError(w, r, err)
		return
	}
	offset, err := parseOffset(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b, err := s.getBuild(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id := b.GetId()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("retry: 3000\n\n"))
	flush(w)

	final := b.GetState().Final()
	if !final || offset < b.GetLogSize() {
		_, err := s.readLog(r.Context(), id, offset, !final, func(off uint64, text []byte) error {
			return writeEvent(w, "log", strconv.FormatUint(off+uint64(len(text)), 10),
				struct {
					Offset uint64 `json:"offset"`
					Text   string `json:"text"`
				}{off, string(text)})
		})
		if err != nil {
			// Ending the response makes EventSource reconnect (after
			// "retry") and resume from its last id.
			s.log.Debug("log events stream ended early", "build_id", id, "error", err)
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	resp, err := s.compile.GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: id})
	if err != nil {
		return
	}
	fb := resp.GetBuild()
	_ = writeEvent(w, "end", "", struct {
		State string `json:"state"`
		Final bool   `json:"final"`
	}{fb.GetState().Word(), fb.GetState().Final()})
}

// writeEvent writes one server-sent event with a JSON payload and flushes.
func writeEvent(w http.ResponseWriter, event, id string, payload any) error {
	data, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.WriteString("event: " + event + "\n")
	if id != "" {
		buf.WriteString("id: " + id + "\n")
	}
	buf.WriteString("data: ")
	buf.Write(data) // JSON has no raw newlines
	buf.WriteString("\n\n")
	if _, err := w.Write(buf.Bytes()); err != nil {
		return err
	}
	flush(w)
	return nil
}
