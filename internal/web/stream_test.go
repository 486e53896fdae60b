package web_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestArtifactDownload(t *testing.T) {
	f := newFarm()
	srv := startFarm(t, f)

	t.Run("the artifact arrives whole with its headers", func(t *testing.T) {
		resp, err := httpClient.Get(srv.URL + "/build/101/artifact")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if !bytes.Equal(body, f.artifacts[buildOK]) {
			t.Errorf("got %d bytes that differ from the artifact (%d bytes)", len(body), len(f.artifacts[buildOK]))
		}
		sum := sha256.Sum256(body)
		for k, want := range map[string]string{
			"Content-Disposition": `attachment; filename=hello-101.tar.gz`,
			"Content-Length":      "307200",
			"Content-Type":        "application/gzip",
			"X-Kiln-Sha256":       hex.EncodeToString(sum[:]),
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s: %q, want %q", k, got, want)
			}
		}
	})

	t.Run("DATA_LOSS mid-stream aborts the response", func(t *testing.T) {
		resp, err := httpClient.Get(srv.URL + "/build/105/artifact")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Length") != "307200" {
			t.Fatalf("status %d, length %q: the failure comes after the headers", resp.StatusCode, resp.Header.Get("Content-Length"))
		}
		body, err := io.ReadAll(resp.Body)
		if err == nil {
			t.Fatalf("read %d bytes without error: a corrupt artifact looked complete", len(body))
		}
		if len(body) >= artifactBytes {
			t.Errorf("read %d bytes before the error, want fewer than %d", len(body), artifactBytes)
		}
	})

	t.Run("a stream that does not match its sha256 is aborted", func(t *testing.T) {
		f.mu.Lock()
		f.builds[buildOK].Artifact.Sha256 = strings.Repeat("0", 64)
		f.mu.Unlock()
		defer func() {
			sum := sha256.Sum256(f.artifacts[buildOK])
			f.mu.Lock()
			f.builds[buildOK].Artifact.Sha256 = hex.EncodeToString(sum[:])
			f.mu.Unlock()
		}()
		resp, err := httpClient.Get(srv.URL + "/build/101/artifact")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if body, err := io.ReadAll(resp.Body); err == nil {
			t.Fatalf("read %d bytes without error despite a sha256 mismatch", len(body))
		}
	})
}

// stream reads a response body in the background so a test can wait, with
// a deadline, for text to arrive while the response is still open.
type stream struct {
	resp   *http.Response
	cancel context.CancelFunc
	mu     sync.Mutex
	buf    bytes.Buffer
	done   bool
	err    error
}

func openStream(t *testing.T, url string) *stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req) // no client timeout: the body stays open
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	s := &stream{resp: resp, cancel: cancel}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	go func() {
		p := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(p)
			s.mu.Lock()
			s.buf.Write(p[:n])
			if err != nil {
				s.done = true
				if err != io.EOF {
					s.err = err
				}
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
		}
	}()
	return s
}

// waitFor polls until the body contains want, failing after 5 seconds.
func (s *stream) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		got, done := s.buf.String(), s.done
		s.mu.Unlock()
		if strings.Contains(got, want) {
			return
		}
		if done || time.Now().After(deadline) {
			t.Fatalf("body (done=%v) never contained %q; got:\n%s", done, want, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitEnd polls until the body is complete and returns it.
func (s *stream) waitEnd(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		got, done, err := s.buf.String(), s.done, s.err
		s.mu.Unlock()
		if done {
			if err != nil {
				t.Fatalf("body ended with %v", err)
			}
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("body did not end; got:\n%s", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *stream) ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

func TestLiveLogPageStreamsWhileTheBuildRuns(t *testing.T) {
	f := newFarm()
	srv := startFarm(t, f)
	f.appendLog(buildRunning, "step 1: configure <ok>\n")

	s := openStream(t, srv.URL+"/build/103/log")
	if s.resp.StatusCode != 200 || s.resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("status %d, type %q", s.resp.StatusCode, s.resp.Header.Get("Content-Type"))
	}
	s.waitFor(t, "step 1: configure &lt;ok&gt;")
	s.waitFor(t, "following live")
	if s.ended() {
		t.Fatal("the page ended while the build runs")
	}
	f.appendLog(buildRunning, "step 2: make\n")
	s.waitFor(t, "step 2: make")
	if s.ended() {
		t.Fatal("the page ended while the build runs")
	}
	f.appendLog(buildRunning, "step 3: done\n")
	f.finish(buildRunning, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)
	body := s.waitEnd(t)
	for _, want := range []string{"step 3: done\n</pre>", "finished: <span class=\"badge state-succeeded\">succeeded</span>", "</html>"} {
		if !strings.Contains(body, want) {
			t.Errorf("finished page lacks %q:\n%s", want, body)
		}
	}
	if strings.Count(body, "step 2: make") != 1 {
		t.Errorf("a line was repeated:\n%s", body)
	}
}

func TestRawLogFollows(t *testing.T) {
	f := newFarm()
	srv := startFarm(t, f)
	f.appendLog(buildRunning, "line one\n")

	t.Run("without follow it is the log so far", func(t *testing.T) {
		r := get(t, srv.URL+"/build/103/log.txt", "")
		if r.code != 200 || r.body != "line one\n" || r.header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Errorf("got %d %q %q", r.code, r.header.Get("Content-Type"), r.body)
		}
	})
	t.Run("with follow it streams until the build ends", func(t *testing.T) {
		s := openStream(t, srv.URL+"/build/103/log.txt?follow=1")
		s.waitFor(t, "line one\n")
		f.appendLog(buildRunning, "line two\n")
		s.waitFor(t, "line two\n")
		if s.ended() {
			t.Fatal("ended while the build runs")
		}
		f.finish(buildRunning, kilnv1.BuildState_BUILD_STATE_FAILED)
		if body := s.waitEnd(t); body != "line one\nline two\n" {
			t.Errorf("body %q", body)
		}
	})
}

// sseEvent is one parsed server-sent event.
type sseEvent struct{ name, id, data string }

func parseEvents(body string) []sseEvent {
	var out []sseEvent
	for _, block := range strings.Split(body, "\n\n") {
		var ev sseEvent
		for _, line := range strings.Split(block, "\n") {
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "id: "):
				ev.id = line[len("id: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			}
		}
		if ev.name != "" {
			out = append(out, ev)
		}
	}
	return out
}

func TestLogEvents(t *testing.T) {
	f := newFarm()
	f.logChunk = 1 // one byte per chunk: characters are split across chunks
	srv := startFarm(t, f)
	f.appendLog(buildRunning, "grüße 1\n")

	s := openStream(t, srv.URL+"/build/103/log/events")
	if ct := s.resp.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		t.Fatalf("Content-Type %q", ct)
	}
	s.waitFor(t, `"offset":8`) // "grüße 1\n" is 10 bytes; the last event starts at 8 or 9
	f.appendLog(buildRunning, "→ 2\n")
	s.waitFor(t, `"offset":15`)
	f.finish(buildRunning, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)
	body := s.waitEnd(t)

	var text strings.Builder
	var lastID string
	events := parseEvents(body)
	for _, ev := range events {
		if ev.name != "log" {
			continue
		}
		var m struct {
			Offset uint64 `json:"offset"`
			Text   string `json:"text"`
		}
		if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
			t.Fatalf("event data %q: %v", ev.data, err)
		}
		if int(m.Offset) != len(text.String()) {
			t.Errorf("event offset %d, want %d", m.Offset, text.Len())
		}
		text.WriteString(m.Text)
		lastID = ev.id
	}
	if text.String() != "grüße 1\n→ 2\n" {
		t.Errorf("events carry %q", text.String())
	}
	if lastID != "16" {
		t.Errorf("last event id %q, want 16 (the log's length)", lastID)
	}
	if last := events[len(events)-1]; last.name != "end" || last.data != `{"state":"succeeded","final":true}` {
		t.Errorf("last event %+v", last)
	}

	t.Run("a reconnect resumes after Last-Event-ID", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/build/103/log/events", nil)
		req.Header.Set("Last-Event-ID", "10")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var got strings.Builder
		for _, ev := range parseEvents(string(raw)) {
			var m struct{ Text string }
			if ev.name == "log" && json.Unmarshal([]byte(ev.data), &m) == nil {
				got.WriteString(m.Text)
			}
		}
		if got.String() != "→ 2\n" {
			t.Errorf("resumed text %q, want %q", got.String(), "→ 2\n")
		}
	})
}

func TestSnapshotLogPagePointsTheScriptAtTheEvents(t *testing.T) {
	f := newFarm()
	srv := startFarm(t, f)
	f.appendLog(buildRunning, "so far\n")
	r := get(t, srv.URL+"/build/103/log?snapshot=1", "")
	for _, want := range []string{"so far\n</pre>", `data-events="/build/103/log/events?offset=7"`, `<script src="/static/log.js" defer>`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("snapshot page lacks %q:\n%s", want, r.body)
		}
	}
	if final := get(t, srv.URL+"/build/101/log?snapshot=1", ""); strings.Contains(final.body, "log.js") {
		t.Error("a final build's snapshot loads the follow script")
	}
}
