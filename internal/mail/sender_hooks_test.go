package mail

import (
	"crypto/hmac"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// delivery is one request a webhook receiver got.
type delivery struct {
	event, id, signature string
	body                 []byte
}

// receiver is a webhook endpoint on loopback that answers with the codes
// of status in turn (then 200) and records every request.
type receiver struct {
	mu         sync.Mutex
	status     []int
	deliveries []delivery
	srv        *httptest.Server
}

func newReceiver(t *testing.T, status ...int) *receiver {
	r := &receiver{status: status}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want a JSON POST", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.deliveries = append(r.deliveries, delivery{
			event: req.Header.Get(HeaderEvent), id: req.Header.Get(HeaderDelivery),
			signature: req.Header.Get(HeaderSignature), body: body,
		})
		code := http.StatusOK
		if len(r.status) > 0 {
			code, r.status = r.status[0], r.status[1:]
		}
		r.mu.Unlock()
		http.Error(w, http.StatusText(code), code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.deliveries...)
}

var secret = []byte("s3cret")

func TestSenderPostsEachEventOnceWithAValidSignature(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t)
	hooks := []HookConfig{
		{WebhookURL: rcv.srv.URL + "/hook"},
		{WebhookURL: rcv.srv.URL + "/cancelled-only", Events: []string{"cancelled"}},
	}
	builds := []*kilnv1.Build{succeededBuild(), failedBuild()}
	for _, b := range builds {
		if err := st.Update(func(tx store.Tx) error { return EnqueueEvent(tx, hooks, b, "http://127.0.0.1:8080") }); err != nil {
			t.Fatal(err)
		}
	}
	s := startSender(t, st, SenderConfig{WebhookSecret: secret})
	waitFor(t, "the outbox to empty", func() bool { return len(outbox(t, st)) == 0 })
	s.waitRounds(t, 3)

	got := rcv.got()
	if len(got) != 2 {
		t.Fatalf("the receiver got %d deliveries, want 2 (one per build)", len(got))
	}
	seen := map[string]bool{}
	for i, d := range got {
		if !hmac.Equal([]byte(d.signature), []byte(Sign(secret, d.body))) || !strings.HasPrefix(d.signature, "sha256=") {
			t.Errorf("delivery %d: signature %q does not match the body", i, d.signature)
		}
		var e Event
		if err := json.Unmarshal(d.body, &e); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
		b := builds[i]
		if e.BuildID != b.GetId() || e.State != StateName(b.GetState()) || d.event != "build."+e.State || e.Event != d.event {
			t.Errorf("delivery %d: event %q header %q for build %d, want build %d %s", i, e.Event, d.event, e.BuildID, b.GetId(), StateName(b.GetState()))
		}
		if seen[d.id] || d.id == "" {
			t.Errorf("delivery id %q missing or repeated", d.id)
		}
		seen[d.id] = true
		if strings.Contains(string(d.body), "@") {
			t.Errorf("delivery %d carries an @: %s", i, d.body)
		}
	}
	if got := s.metric(t, "kiln_webhook_sent_total"); got != 2 {
		t.Errorf("kiln_webhook_sent_total = %v, want 2", got)
	}
}

func TestSenderRetriesAWebhookAnsweredWith500(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, http.StatusInternalServerError)
	if err := st.Update(func(tx store.Tx) error {
		return EnqueueEvent(tx, []HookConfig{{WebhookURL: rcv.srv.URL}}, succeededBuild(), "")
	}); err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	s := startSender(t, st, SenderConfig{
		Now: clock.Now, WebhookSecret: secret,
		Backoff: func(int) time.Duration { return 30 * time.Second },
	})
	waitFor(t, "the failed attempt", func() bool {
		recs := outbox(t, st)
		return len(recs) == 1 && recs[0].GetAttempts() == 1
	})
	rec := outbox(t, st)[0]
	if !strings.Contains(rec.GetLastError(), "500") {
		t.Errorf("last_error = %q, want the 500", rec.GetLastError())
	}
	if want := clock.Now().Add(30 * time.Second); !rec.GetNextAttemptAt().AsTime().Equal(want) {
		t.Errorf("next_attempt_at = %v, want %v", rec.GetNextAttemptAt().AsTime(), want)
	}
	s.waitRounds(t, 3)
	if n := len(rcv.got()); n != 1 {
		t.Fatalf("retried before the backoff ran out: %d requests", n)
	}
	clock.Advance(30 * time.Second)
	waitFor(t, "the outbox to empty", func() bool { s.Kick(); return len(outbox(t, st)) == 0 })
	s.waitRounds(t, 3)
	got := rcv.got()
	if len(got) != 2 || got[0].id != got[1].id || string(got[0].body) != string(got[1].body) {
		t.Fatalf("want the same delivery twice (500, then 200); got %d requests", len(got))
	}
	if f, ok := s.metric(t, "kiln_webhook_failed_total"), s.metric(t, "kiln_webhook_sent_total"); f != 1 || ok != 1 {
		t.Errorf("failed %v sent %v, want 1 and 1", f, ok)
	}
}

func TestSenderRunsACommandHookWithTheEventOnStdin(t *testing.T) {
	st := openStore(t)
	dir := t.TempDir()
	cmd := `cat > "$OUT/event.json" && printf '%s %s' "$KILN_EVENT" "$KILN_BUILD_ID" > "$OUT/env"`
	t.Setenv("OUT", dir)
	b := succeededBuild()
	if err := st.Update(func(tx store.Tx) error {
		return EnqueueEvent(tx, []HookConfig{{Command: cmd}}, b, "http://127.0.0.1:8080")
	}); err != nil {
		t.Fatal(err)
	}
	want := outbox(t, st)[0].GetBody()
	s := startSender(t, st, SenderConfig{})
	waitFor(t, "the outbox to empty", func() bool { return len(outbox(t, st)) == 0 })
	gotJSON, err := os.ReadFile(filepath.Join(dir, "event.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(gotJSON) != string(want) {
		t.Errorf("stdin = %s, want %s", gotJSON, want)
	}
	env, _ := os.ReadFile(filepath.Join(dir, "env"))
	if string(env) != "build.succeeded 42" {
		t.Errorf("KILN_EVENT KILN_BUILD_ID = %q", env)
	}
	if got := s.metric(t, "kiln_command_sent_total"); got != 1 {
		t.Errorf("kiln_command_sent_total = %v", got)
	}
}

func TestSenderRetriesFailedCommands(t *testing.T) {
	tests := []struct {
		name    string
		command string
		wantErr string
	}{
		{"a non-zero exit is a failure with its status and output", "echo oops >&2; exit 3", "exit status 3; output: oops"},
		{"a command over its time limit is killed with its children", `sleep 30 & echo $! > "$OUT/child"; wait`, ErrCommandTimeout.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := openStore(t)
			dir := t.TempDir()
			t.Setenv("OUT", dir)
			enqueue(t, st, &store.Outbox{Kind: KindCommand, To: tt.command, Subject: "build.failed", Body: []byte("{}")})
			start := time.Now()
			s := startSender(t, st, SenderConfig{CommandTimeout: 300 * time.Millisecond, Backoff: func(int) time.Duration { return time.Hour }})
			waitFor(t, "the failed attempt", func() bool {
				recs := outbox(t, st)
				return len(recs) == 1 && recs[0].GetAttempts() == 1
			})
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("the attempt took %s", took)
			}
			if got := outbox(t, st)[0].GetLastError(); !strings.Contains(got, tt.wantErr) {
				t.Errorf("last_error = %q, want it to contain %q", got, tt.wantErr)
			}
			if got := s.metric(t, "kiln_command_failed_total"); got != 1 {
				t.Errorf("kiln_command_failed_total = %v", got)
			}
			if pidText, err := os.ReadFile(filepath.Join(dir, "child")); err == nil {
				pid, _ := strconv.Atoi(strings.TrimSpace(string(pidText)))
				waitFor(t, "the hook's child to die", func() bool { return !alive(pid) })
			}
		})
	}
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func TestSenderLeavesARecordCutShortByShutdownUntouched(t *testing.T) {
	st := openStore(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // lets the server notice the client leaving
		once.Do(func() { close(entered) })
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first
	enqueue(t, st, &store.Outbox{Kind: KindWebhook, To: srv.URL, Subject: "build.succeeded", Body: []byte("{}")})
	s := startSender(t, st, SenderConfig{})
	select {
	case <-entered:
	case <-time.After(waitTimeout):
		t.Fatal("the webhook was never posted")
	}
	s.stop()
	recs := outbox(t, st)
	if len(recs) != 1 || recs[0].GetAttempts() != 0 || recs[0].GetLastError() != "" {
		t.Fatalf("want the record untouched after shutdown, got %v", recs)
	}
}
