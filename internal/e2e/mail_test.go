package e2e

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	netmail "net/mail"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/mail"
	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// mailPublicURL is the webstatus base URL the metaserver writes in links.
// Nothing dials it.
const mailPublicURL = "http://127.0.0.1:8099/kiln"

// mailSinkPath is postfix's test SMTP server.
const mailSinkPath = "/usr/sbin/smtp-sink"

// mailDeliveryTimeout bounds waiting for a notification. The outbox sender
// is kicked when a build ends, so a healthy delivery takes well under a
// second; the bound covers a loaded machine.
const mailDeliveryTimeout = 30 * time.Second

// mailRetryTimeout bounds waiting for a mail retried after the SMTP server
// came back. The sender's backoff (internal/mail.DefaultBackoff) starts at
// 1s and doubles per failure; by the time the sink is up the record has
// failed two or three times, so its next try is at most ~8s away.
const mailRetryTimeout = 60 * time.Second

// mailSink is postfix's smtp-sink on a loopback port, writing each message
// it accepts into its own file in Dir (headers X-Mail-Args, X-Rcpt-Args,
// then the message as received).
type mailSink struct {
	Addr string
	Dir  string
	Proc *farmtest.Process
}

// mailStartSink starts smtp-sink on 127.0.0.1:port through farmtest (so it
// is stopped by PID when the test ends) and waits until it accepts
// connections.
func mailStartSink(t *testing.T, port int) *mailSink {
	t.Helper()
	if _, err := os.Stat(mailSinkPath); err != nil {
		t.Skipf("smtp-sink not installed (%v): install postfix to run the mail tests", err)
	}
	// Not t.TempDir: smtp-sink drops to nobody, who must traverse every
	// parent directory, and t.TempDir's parents are private.
	dir, err := os.MkdirTemp("", "kiln-e2e-smtp-sink-")
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the process, so it runs after the process stopped.
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	s := &mailSink{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir}
	var args []string
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody")
	}
	args = append(args, "-d", filepath.Join(dir, "%M."), s.Addr, "100")
	s.Proc = farmtest.StartProcess(t, "smtp-sink", mailSinkPath, args...)
	farmtest.Eventually(t, farmtest.ReadyTimeout, func() error {
		if !s.Proc.Running() {
			t.Fatalf("smtp-sink exited: %v\n%s", s.Proc.Wait(), s.Proc.Logs())
		}
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return s
}

// mailMessage is one message the sink received.
type mailMessage struct {
	File   string
	Header netmail.Header
	// Text is the decoded text/plain part.
	Text string
}

// Subject is the decoded Subject header with its whitespace normalized
// (folding turns into single spaces).
func (m *mailMessage) Subject() string {
	s := m.Header.Get("Subject")
	if d, err := new(mime.WordDecoder).DecodeHeader(s); err == nil {
		s = d
	}
	return strings.Join(strings.Fields(s), " ")
}

// files counts the message files written so far, complete or not.
func (s *mailSink) files(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// messages parses every message file; an error means one is still being
// written (or malformed), and the caller polls again.
func (s *mailSink) messages() ([]*mailMessage, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, err
	}
	var out []*mailMessage
	for _, e := range entries {
		path := filepath.Join(s.Dir, e.Name())
		m, err := mailParse(path)
		if err != nil {
			return nil, fmt.Errorf("message file %s: %w", e.Name(), err)
		}
		out = append(out, m)
	}
	return out, nil
}

// mailParse reads one smtp-sink file: the text part of a text/plain or
// multipart message.
func mailParse(path string) (*mailMessage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	msg, err := netmail.ReadMessage(bufio.NewReader(f))
	if err != nil {
		return nil, err
	}
	m := &mailMessage{File: filepath.Base(path), Header: msg.Header}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(mediaType, "multipart/") {
		var body io.Reader = msg.Body
		if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(body)
		}
		b, err := io.ReadAll(body)
		if err != nil {
			return nil, err
		}
		m.Text = string(b)
	} else {
		mr := multipart.NewReader(msg.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, err
			}
			b, err := io.ReadAll(p) // multipart decodes quoted-printable
			if err != nil {
				return nil, err
			}
			if ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); ct == "text/plain" {
				m.Text = string(b)
			}
		}
	}
	if m.Text == "" {
		return nil, errors.New("no text part (yet)")
	}
	m.Text = strings.ReplaceAll(m.Text, "\r\n", "\n")
	return m, nil
}

// mailNorm collapses every run of white space into one space, so that
// checks ignore the alignment of the mail's columns.
func mailNorm(s string) string { return strings.Join(strings.Fields(s), " ") + " " }

// mailFor returns the messages whose envelope recipient (X-Rcpt-Args,
// written by smtp-sink from RCPT TO) is addr.
func mailFor(msgs []*mailMessage, addr string) []*mailMessage {
	var out []*mailMessage
	for _, m := range msgs {
		if strings.Contains(strings.ToLower(m.Header.Get("X-Rcpt-Args")), "<"+strings.ToLower(addr)+">") {
			out = append(out, m)
		}
	}
	return out
}

// mailMetric reads one unlabelled sample of the metaserver's Prometheus
// endpoint.
func mailMetric(f *farmtest.Farm, name string) (float64, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + f.Meta().MetricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && fields[0] == name {
			return strconv.ParseFloat(fields[1], 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("metric %s not exported", name)
}

// mailOutboxEmpty reports (as nil) whether the metaserver's outbox holds
// nothing: every notification was delivered and its record deleted, so
// none will be sent again.
func mailOutboxEmpty(f *farmtest.Farm) error {
	n, err := mailMetric(f, "kiln_outbox_length")
	if err != nil {
		return err
	}
	if n != 0 {
		return fmt.Errorf("outbox holds %v records", n)
	}
	return nil
}

// mailWaitSettled waits until the sink holds exactly want complete
// messages and the outbox is empty, then returns the messages. More than
// want fails at once. Since every mail of a build is queued in the
// transaction that ends it and a record is deleted only after the SMTP
// server accepted it, an empty outbox means no further copy can come.
func mailWaitSettled(t *testing.T, f *farmtest.Farm, s *mailSink, want int, timeout time.Duration) []*mailMessage {
	t.Helper()
	var msgs []*mailMessage
	farmtest.Eventually(t, timeout, func() error {
		if n := s.files(t); n > want {
			t.Fatalf("the SMTP server received %d messages, want %d", n, want)
		}
		var err error
		if msgs, err = s.messages(); err != nil {
			return err
		}
		if len(msgs) != want {
			return fmt.Errorf("%d of %d messages received", len(msgs), want)
		}
		return mailOutboxEmpty(f)
	})
	return msgs
}

// mailFarm starts a metaserver with mail through an SMTP server on
// smtpPort (which need not listen yet) plus extra flags, and registers the
// default manifest project as "hello".
func mailFarm(t *testing.T, smtpPort int, opts farmtest.CProjectOptions, extra ...string) *farmtest.Farm {
	t.Helper()
	f := farmtest.New(t)
	args := []string{"--heartbeat", "200ms", "--lease", "2s",
		"--smtp-addr", net.JoinHostPort("127.0.0.1", strconv.Itoa(smtpPort)), "--smtp-tls", "none",
		"--mail-from", "kiln@kiln.example.org", "--public-url", mailPublicURL}
	f.StartMetaserver(append(args, extra...)...)
	repo, _ := farmtest.CProject(t, opts)
	f.AddProject("hello", repo)
	return f
}

// mailStartBuilder adds and starts one build server and waits for it.
func mailStartBuilder(t *testing.T, f *farmtest.Farm) {
	t.Helper()
	f.StartBuildserver(f.AddBuildServer("builder"))
	f.WaitBuildServers(1)
}

// mailWantSubject is the subject Kiln promises for a build requested at a
// named revision: project, revision, platform and outcome.
func mailWantSubject(b *kilnv1.Build, outcome string) string {
	s := fmt.Sprintf("[kiln] %s %s on %s : %s", b.GetProject(), b.GetRevision(), platform.Describe(b.GetPlatform()), outcome)
	return strings.Join(strings.Fields(s), " ")
}

func TestMailTwoRequestersWaitingOnOneBuildEachGetExactlyOneMail(t *testing.T) {
	port := farmtest.FreePort(t)
	sink := mailStartSink(t, port)
	f := mailFarm(t, port, farmtest.CProjectOptions{Manifest: true})
	const ada, bob = "ada@example.org", "Bob.Builder@example.net"

	// No build server yet: the first request queues the build, the others
	// join it (Ada twice: still one mail for her).
	first := parseResult(t, f.Startcompile("--project", "hello", "--revision", "main", "--json", ada))
	if first.State != "queued" || first.BuildID == 0 {
		t.Fatalf("first request: %+v, want queued", first)
	}
	for _, who := range []string{bob, ada} {
		r := parseResult(t, f.Startcompile("--project", "hello", "--revision", "main", "--json", who))
		if !r.Joined || r.BuildID != first.BuildID {
			t.Fatalf("request of %s: %+v, want joined to build %d", who, r, first.BuildID)
		}
	}
	mailStartBuilder(t, f)
	done := parseResult(t, f.Startcompile("status", "--wait", "--json", strconv.FormatUint(first.BuildID, 10)))
	if done.State != "succeeded" || done.ArtifactSHA256 == "" {
		t.Fatalf("build: %+v, want succeeded with an artifact", done)
	}
	b := f.GetBuild(t, first.BuildID)

	msgs := mailWaitSettled(t, f, sink, 2, mailDeliveryTimeout)
	page := fmt.Sprintf("%s/build/%d", mailPublicURL, b.GetId())
	for _, c := range []struct{ to, other string }{{ada, bob}, {bob, ada}} {
		got := mailFor(msgs, c.to)
		if len(got) != 1 {
			t.Fatalf("%s received %d mails, want exactly 1", c.to, len(got))
		}
		m := got[0]
		if to := m.Header.Get("To"); !strings.EqualFold(to, "<"+c.to+">") {
			t.Errorf("mail to %s: To header %q", c.to, to)
		}
		if s, want := m.Subject(), mailWantSubject(b, "succeeded (verified)"); s != want {
			t.Errorf("mail to %s: subject %q, want %q", c.to, s, want)
		}
		for _, want := range []string{
			"sha256: " + done.ArtifactSHA256,
			"commit: " + b.GetCommit(),
			"build: " + page + " ",
			"log: " + page + "/log ",
			"startcompile status --download DIR",
		} {
			if !strings.Contains(mailNorm(m.Text), want) {
				t.Errorf("mail to %s lacks %q:\n%s", c.to, want, m.Text)
			}
		}
		// Each mail names its own recipient only in the envelope and To.
		if strings.Contains(strings.ToLower(m.Text), strings.ToLower(c.other)) ||
			strings.Contains(strings.ToLower(m.Text), strings.ToLower(c.to)) {
			t.Errorf("the body of the mail to %s shows an address:\n%s", c.to, m.Text)
		}
	}
	if sent, err := mailMetric(f, "kiln_mail_sent_total"); err != nil || sent != 2 {
		t.Errorf("kiln_mail_sent_total = %v (%v), want 2", sent, err)
	}
}

func TestMailSubjectNamesWhatWasBuiltWhenTheRequestGaveNoRevision(t *testing.T) {
	port := farmtest.FreePort(t)
	sink := mailStartSink(t, port)
	f := mailFarm(t, port, farmtest.CProjectOptions{Manifest: true})
	mailStartBuilder(t, f)
	const ada = "ada@example.org"

	built := parseResult(t, f.Startcompile("--project", "hello", "--wait", "--json", ada))
	if built.State != "succeeded" {
		t.Fatalf("build: %+v", built)
	}
	msgs := mailWaitSettled(t, f, sink, 1, mailDeliveryTimeout)
	subject := msgs[0].Subject()
	// "[kiln] hello <revision> on <platform> : <outcome>"; the subject's
	// white space is collapsed, so an empty revision leaves no word.
	words := strings.Fields(subject)
	on := slices.Index(words, "on")
	if len(words) < 3 || words[0] != "[kiln]" || words[1] != "hello" || on < 2 {
		t.Fatalf("subject %q does not read \"[kiln] hello <revision> on <platform> : <outcome>\"", subject)
	}
	rev := strings.Join(words[2:on], " ")
	// The default branch's name or the commit (at least 7 hex digits),
	// possibly both, e.g. "main (0123abcd)".
	for _, w := range words[2:on] {
		w = strings.Trim(w, "()[],@")
		if w == "main" || (len(w) >= 7 && strings.HasPrefix(built.Commit, w)) {
			return
		}
	}
	t.Fatalf("subject %q names revision %q, want main or a prefix of %s", subject, rev, built.Commit)
}

func TestMailARequestAnsweredFromTheCacheGetsNoMail(t *testing.T) {
	port := farmtest.FreePort(t)
	sink := mailStartSink(t, port)
	f := mailFarm(t, port, farmtest.CProjectOptions{Manifest: true})
	mailStartBuilder(t, f)
	const builder, cached, later = "first@example.org", "cached@example.org", "later@example.org"

	built := parseResult(t, f.Startcompile("--project", "hello", "--wait", "--json", builder))
	if built.State != "succeeded" || built.Cached {
		t.Fatalf("first request: %+v", built)
	}
	mailWaitSettled(t, f, sink, 1, mailDeliveryTimeout)

	hit := parseResult(t, f.Startcompile("--project", "hello", "--json", cached))
	if !hit.Cached || hit.BuildID != built.BuildID {
		t.Fatalf("second request: %+v, want cached build %d", hit, built.BuildID)
	}
	// Were a mail queued for the cached answer, it would have been committed
	// before the answer; the outbox is drained oldest first, so once a later
	// build's mail arrived, it would have gone out too.
	if err := mailOutboxEmpty(f); err != nil {
		t.Fatalf("after a cached answer: %v", err)
	}
	other := parseResult(t, f.Startcompile("--project", "hello", "-o", "level=1", "--wait", "--json", later))
	if other.Cached || other.State != "succeeded" {
		t.Fatalf("third request: %+v, want a new build", other)
	}
	msgs := mailWaitSettled(t, f, sink, 2, mailDeliveryTimeout)
	for addr, want := range map[string]int{builder: 1, later: 1, cached: 0} {
		if n := len(mailFor(msgs, addr)); n != want {
			t.Errorf("%s received %d mails, want %d", addr, n, want)
		}
	}
}

func TestMailOfAFailedBuildCarriesTheFailingStepAndTheLogTail(t *testing.T) {
	port := farmtest.FreePort(t)
	sink := mailStartSink(t, port)
	f := mailFarm(t, port, farmtest.CProjectOptions{Manifest: true, FailCheck: true})
	mailStartBuilder(t, f)
	const ada = "ada@example.org"

	r := f.Startcompile("--project", "hello", "--revision", "main", "--wait", "--json", ada)
	expectExit(t, r, 1)
	res := parseResult(t, r)
	b := f.GetBuild(t, res.BuildID)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED || !strings.Contains(b.GetFailingStep(), "make check") {
		t.Fatalf("build: state %s, failing step %q, want failed at make check", b.GetState(), b.GetFailingStep())
	}
	msgs := mailWaitSettled(t, f, sink, 1, mailDeliveryTimeout)
	got := mailFor(msgs, ada)
	if len(got) != 1 {
		t.Fatalf("%s received %d mails, want 1", ada, len(got))
	}
	m := got[0]
	if s, want := m.Subject(), mailWantSubject(b, "failed"); s != want {
		t.Errorf("subject %q, want %q", s, want)
	}
	// The log's last line, as the metaserver stored it, ends the tail.
	lr := f.Startcompile("log", strconv.FormatUint(b.GetId(), 10))
	expectExit(t, lr, 0)
	logLines := strings.Split(strings.TrimRight(lr.Stdout, "\n"), "\n")
	lastLine := mailNorm(logLines[len(logLines)-1])
	for _, want := range []string{
		"failing step: " + mailNorm(b.GetFailingStep()),
		"Last ",
		"check: deliberate failure", // what make check printed before failing
		lastLine,
		fmt.Sprintf("log: %s/build/%d/log ", mailPublicURL, b.GetId()),
	} {
		if !strings.Contains(mailNorm(m.Text), want) {
			t.Errorf("the failure mail lacks %q:\n%s", want, m.Text)
		}
	}
	if strings.Contains(m.Text, "sha256:") {
		t.Errorf("a failure mail shows an artifact:\n%s", m.Text)
	}
}

func TestMailQueuedWhileSMTPIsDownArrivesOnceAfterAMetaserverCrash(t *testing.T) {
	port := farmtest.FreePort(t) // nobody listens there yet
	f := mailFarm(t, port, farmtest.CProjectOptions{Manifest: true})
	mailStartBuilder(t, f)
	const ada = "ada@example.org"

	built := parseResult(t, f.Startcompile("--project", "hello", "--wait", "--json", ada))
	if built.State != "succeeded" {
		t.Fatalf("build: %+v", built)
	}
	// The sender tried, failed, and kept the mail.
	farmtest.Eventually(t, mailDeliveryTimeout, func() error {
		failed, err := mailMetric(f, "kiln_mail_failed_total")
		if err != nil {
			return err
		}
		if failed < 1 {
			return errors.New("no failed mail delivery yet")
		}
		if n, err := mailMetric(f, "kiln_outbox_length"); err != nil || n != 1 {
			return fmt.Errorf("outbox length %v (%v), want 1", n, err)
		}
		return nil
	})

	f.Meta().Process.Kill()
	f.Meta().Restart()
	// The mail survived the crash, still undelivered.
	if n, err := mailMetric(f, "kiln_outbox_length"); err != nil || n != 1 {
		t.Fatalf("after the restart the outbox holds %v records (%v), want 1", n, err)
	}
	sink := mailStartSink(t, port)

	msgs := mailWaitSettled(t, f, sink, 1, mailRetryTimeout)
	got := mailFor(msgs, ada)
	if len(got) != 1 {
		t.Fatalf("%s received %d mails, want 1", ada, len(got))
	}
	if !strings.Contains(mailNorm(got[0].Text), "sha256: "+built.ArtifactSHA256) {
		t.Errorf("the late mail lacks the artifact:\n%s", got[0].Text)
	}
}

// mailHookReceiver is a webhook receiver on loopback that keeps every
// request.
type mailHookReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []mailHookDelivery
}

type mailHookDelivery struct {
	Header http.Header
	Body   []byte
}

func mailStartHookReceiver(t *testing.T) *mailHookReceiver {
	t.Helper()
	r := &mailHookReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil || req.Method != http.MethodPost {
			http.Error(w, "want a POST with a body", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.got = append(r.got, mailHookDelivery{Header: req.Header.Clone(), Body: body})
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *mailHookReceiver) deliveries() []mailHookDelivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]mailHookDelivery(nil), r.got...)
}

// mailCommandEvents reads the lines the hook command appended: "EVENT JSON".
func mailCommandEvents(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"), nil
}

func TestMailHooksGetEachBuildEventOnceSigned(t *testing.T) {
	recv := mailStartHookReceiver(t)
	dir := t.TempDir()
	const secret = "kiln-hook-secret"
	secretFile := filepath.Join(dir, "hook.secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	events := filepath.Join(dir, "events.txt")
	// One line per run: the event name from the environment, then stdin.
	command := fmt.Sprintf(`{ printf '%%s ' "$KILN_EVENT"; cat; echo; } >> '%s'`, events)

	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--public-url", mailPublicURL,
		"--hook-url", recv.srv.URL+"/kiln-events", "--hook-secret-file", secretFile,
		"--hook-command", command, "--hook-events", "succeeded,failed")
	good, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	bad, _ := farmtest.CProject(t, farmtest.CProjectOptions{Name: "broken", Manifest: true, FailCheck: true})
	f.AddProject("hello", good)
	f.AddProject("broken", bad)
	mailStartBuilder(t, f)
	const ada = "ada.hooked@example.org"

	ok := parseResult(t, f.Startcompile("--project", "hello", "--wait", "--json", ada))
	r := f.Startcompile("--project", "broken", "--wait", "--json", ada)
	expectExit(t, r, 1)
	failed := parseResult(t, r)
	if ok.State != "succeeded" || failed.State != "failed" {
		t.Fatalf("builds: %+v and %+v, want succeeded and failed", ok, failed)
	}

	var lines []string
	farmtest.Eventually(t, mailDeliveryTimeout, func() error {
		if n := len(recv.deliveries()); n < 2 {
			return fmt.Errorf("%d webhook deliveries", n)
		}
		var err error
		if lines, err = mailCommandEvents(events); err != nil || len(lines) < 2 {
			return fmt.Errorf("%d command runs (%v)", len(lines), err)
		}
		return mailOutboxEmpty(f)
	})
	lines, _ = mailCommandEvents(events)

	want := map[string]result{"build.succeeded": ok, "build.failed": failed}
	checkEvent := func(how, name string, body []byte, seen map[string]bool) {
		t.Helper()
		if seen[name] {
			t.Errorf("%s: event %s delivered twice", how, name)
		}
		seen[name] = true
		res, known := want[name]
		if !known {
			t.Errorf("%s: unexpected event %q", how, name)
			return
		}
		var ev mail.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("%s: event body %q: %v", how, body, err)
			return
		}
		if ev.Event != name || ev.BuildID != res.BuildID || ev.State != res.State || ev.Commit != res.Commit {
			t.Errorf("%s: event %+v, want %s of build %d", how, ev, name, res.BuildID)
		}
		if ev.Links == nil || ev.Links.Build != fmt.Sprintf("%s/build/%d", mailPublicURL, res.BuildID) {
			t.Errorf("%s: links %+v", how, ev.Links)
		}
		if name == "build.succeeded" && (ev.Artifact == nil || ev.Artifact.SHA256 != res.ArtifactSHA256) {
			t.Errorf("%s: artifact %+v, want sha256 %s", how, ev.Artifact, res.ArtifactSHA256)
		}
		if name == "build.failed" && !strings.Contains(ev.FailingStep, "make check") {
			t.Errorf("%s: failing step %q", how, ev.FailingStep)
		}
		if strings.Contains(strings.ToLower(string(body)), "ada.hooked") {
			t.Errorf("%s: the event shows a requester's address: %s", how, body)
		}
	}

	deliveries := recv.deliveries()
	if len(deliveries) != 2 {
		t.Fatalf("the webhook received %d requests, want 2 (one per event)", len(deliveries))
	}
	seen := map[string]bool{}
	ids := map[string]bool{}
	for _, d := range deliveries {
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(d.Body)
		wantSig := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		if got := d.Header.Get("X-Kiln-Signature"); !hmac.Equal([]byte(got), []byte(wantSig)) {
			t.Errorf("signature %q, want %q", got, wantSig)
		}
		if ct := d.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		id := d.Header.Get("X-Kiln-Delivery")
		if id == "" || ids[id] {
			t.Errorf("X-Kiln-Delivery %q missing or repeated", id)
		}
		ids[id] = true
		checkEvent("webhook", d.Header.Get("X-Kiln-Event"), d.Body, seen)
	}
	if len(lines) != 2 {
		t.Fatalf("the hook command ran %d times, want 2:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	seen = map[string]bool{}
	for _, l := range lines {
		name, body, _ := strings.Cut(l, " ")
		checkEvent("command", name, []byte(body), seen)
	}
}

func TestMailAddressesNeverAppearOnPublicPagesNorInStatusAnswers(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	f.AddProject("hello", repo)
	web := f.StartWebstatus()
	const secretLocal = "ada.private"
	addrs := []string{secretLocal + "@example.org", "Bob.Private@Example.NET"}

	first := parseResult(t, f.Startcompile("--project", "hello", "--json", addrs[0]))
	joined := parseResult(t, f.Startcompile("--project", "hello", "--json", addrs[1]))
	if first.State != "queued" || !joined.Joined {
		t.Fatalf("requests: %+v, %+v; want queued then joined", first, joined)
	}
	id := strconv.FormatUint(first.BuildID, 10)
	check := func(when string) {
		t.Helper()
		mailCheckNoAddress(t, f, web.URL, first.BuildID, when, []string{secretLocal, "bob.private"})
	}
	if b := f.GetBuild(t, first.BuildID); b.GetWaiters() != 2 {
		t.Fatalf("build waiters %d, want 2 (else the check proves little)", b.GetWaiters())
	}
	check("while queued")
	mailStartBuilder(t, f)
	expectExit(t, f.Startcompile("status", "--wait", id), 0)
	check("when succeeded")
}

// mailCheckNoAddress fetches every public page about the farm and build id
// (HTML and JSON) and the StatusService and GetBuild answers, and fails if
// any contains one of needles (case-insensitively).
func mailCheckNoAddress(t *testing.T, f *farmtest.Farm, webURL string, id uint64, when string, needles []string) {
	t.Helper()
	docs := map[string]string{}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, path := range []string{"/", "/builds", "/buildservers", "/metaserverstatus",
		fmt.Sprintf("/build/%d", id), fmt.Sprintf("/build/%d/log?snapshot=1", id), fmt.Sprintf("/build/%d/log.txt", id)} {
		for _, accept := range []string{"text/html", "application/json"} {
			req, err := http.NewRequest(http.MethodGet, webURL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Accept", accept)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s (%s): %s %v", path, accept, resp.Status, err)
			}
			docs["GET "+path+" "+accept] = string(body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	status := kilnv1.NewStatusServiceClient(f.Conn())
	answers := map[string]func() (proto.Message, error){
		"ListBuilds": func() (proto.Message, error) {
			return status.ListBuilds(ctx, &kilnv1.ListBuildsRequest{PageSize: 100})
		},
		"GetOverview": func() (proto.Message, error) {
			return status.GetOverview(ctx, &kilnv1.GetOverviewRequest{})
		},
		"ListBuildServers": func() (proto.Message, error) {
			return status.ListBuildServers(ctx, &kilnv1.ListBuildServersRequest{})
		},
		"GetBuild": func() (proto.Message, error) {
			return kilnv1.NewCompileServiceClient(f.Conn()).GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: id})
		},
	}
	for name, call := range answers {
		m, err := call()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		docs[name] = string(b)
	}
	for what, doc := range docs {
		for _, n := range needles {
			if strings.Contains(strings.ToLower(doc), strings.ToLower(n)) {
				t.Errorf("%s: %s shows the address %q", when, what, n)
			}
		}
	}
}

func TestWithoutSMTPNoMailIsSentAndTheLogSaysSoOnce(t *testing.T) {
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 1)
	for _, level := range []string{"1", "2"} {
		if got := parseResult(t, f.Startcompile("--project", "hello", "-o", "level="+level, "--wait", "--json", "a@example.com")); got.State != "succeeded" {
			t.Fatalf("build: %+v", got)
		}
	}
	if err := mailOutboxEmpty(f); err != nil {
		t.Fatalf("outbox: %v", err)
	}
	if sent, err := mailMetric(f, "kiln_mail_sent_total"); err != nil || sent != 0 {
		t.Fatalf("kiln_mail_sent_total = %v (%v), want 0", sent, err)
	}
	logs := f.Meta().Process.Logs()
	if n := strings.Count(logs, "no SMTP server configured"); n != 1 || !strings.Contains(logs, "mail disabled") {
		t.Fatalf("the metaserver's log says %d times that there is no SMTP server, want once:\n%s", n, logs)
	}
}
