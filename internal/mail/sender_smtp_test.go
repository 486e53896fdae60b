package mail

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
)

func smtpConfig(port int) SenderConfig {
	return SenderConfig{
		SMTPAddr: fmt.Sprintf("127.0.0.1:%d", port),
		TLS:      TLSNone,
		From:     "Kiln <kiln@kiln.example.org>",
	}
}

func TestSenderDeliversAQueuedMailOnce(t *testing.T) {
	port := freePort(t)
	sink := startSMTPSink(t, port)
	st := openStore(t)
	b := succeededBuild()
	if err := st.Update(func(tx store.Tx) error {
		return EnqueueBuildMail(tx, "Ada.Lovelace@Example.ORG", b, ComposeOptions{PublicURL: "http://127.0.0.1:8080"})
	}); err != nil {
		t.Fatal(err)
	}
	wantSubject, wantText, _ := Compose(b, ComposeOptions{PublicURL: "http://127.0.0.1:8080"})

	s := startSender(t, st, smtpConfig(port))
	s.Kick()
	waitFor(t, "the outbox to empty", func() bool { return len(outbox(t, st)) == 0 })
	var msgs []*sinkMail
	waitFor(t, "the message in the sink", func() bool { msgs = sink.messages(t); return len(msgs) > 0 })
	s.waitRounds(t, 3)
	if msgs = sink.messages(t); len(msgs) != 1 {
		t.Fatalf("the sink received %d messages, want exactly 1", len(msgs))
	}
	m := msgs[0]
	if got := m.Header.Get("X-Rcpt-Args"); !strings.Contains(got, "Ada.Lovelace@example.org") {
		t.Errorf("X-Rcpt-Args = %q, want the canonical recipient", got)
	}
	if got := m.Header.Get("To"); got != "<Ada.Lovelace@example.org>" {
		t.Errorf("To = %q", got)
	}
	if got := m.Header.Get("Subject"); got != wantSubject {
		t.Errorf("Subject = %q, want %q", got, wantSubject)
	}
	if got := m.Header.Get("From"); got != `"Kiln" <kiln@kiln.example.org>` {
		t.Errorf("From = %q", got)
	}
	if got := m.Header.Get("Message-Id"); !strings.HasPrefix(got, "<kiln.outbox.1.") || !strings.HasSuffix(got, "@kiln.example.org>") {
		t.Errorf("Message-ID = %q, want one derived from outbox record 1", got)
	}
	if m.Header.Get("Date") == "" || m.Header.Get("Auto-Submitted") != "auto-generated" {
		t.Errorf("Date %q, Auto-Submitted %q", m.Header.Get("Date"), m.Header.Get("Auto-Submitted"))
	}
	if m.ContentType != "multipart/alternative" || !strings.Contains(m.HTML, "<strong>Build 42 of hello at main: succeeded.</strong>") {
		t.Errorf("want a text part and an HTML alternative; got %s with HTML %.80q", m.ContentType, m.HTML)
	}
	if strings.ReplaceAll(m.Text, "\r\n", "\n") != wantText {
		t.Errorf("text body differs from Compose:\n%s", m.Text)
	}
	if got := s.metric(t, "kiln_mail_sent_total"); got != 1 {
		t.Errorf("kiln_mail_sent_total = %v, want 1", got)
	}
	if got := s.metric(t, "kiln_outbox_length"); got != 0 {
		t.Errorf("kiln_outbox_length = %v, want 0", got)
	}
}

func TestSenderKeepsMailWhileSMTPIsDownAndSendsItOnceItIsBack(t *testing.T) {
	port := freePort(t) // nobody listens yet
	st := openStore(t)
	enqueue(t, st, &store.Outbox{Kind: KindMail, To: "ada@example.org", Subject: "hello", Text: "body text", BuildId: 7})
	clock := newFakeClock() // after Enqueue, which stamps the real time
	cfg := smtpConfig(port)
	cfg.Now = clock.Now
	cfg.Backoff = func(attempt int) time.Duration { return time.Duration(attempt) * time.Minute }

	s := startSender(t, st, cfg)
	var rec *store.Outbox
	waitFor(t, "the first failed attempt to be recorded", func() bool {
		recs := outbox(t, st)
		if len(recs) == 1 && recs[0].GetAttempts() > 0 {
			rec = recs[0]
			return true
		}
		return false
	})
	if rec.GetAttempts() != 1 || rec.GetLastError() == "" {
		t.Fatalf("after the failure: attempts %d, last_error %q", rec.GetAttempts(), rec.GetLastError())
	}
	if want := clock.Now().Add(time.Minute); !rec.GetNextAttemptAt().AsTime().Equal(want) {
		t.Fatalf("next_attempt_at = %v, want now + Backoff(1) = %v", rec.GetNextAttemptAt().AsTime(), want)
	}
	if got := s.metric(t, "kiln_mail_failed_total"); got != 1 {
		t.Errorf("kiln_mail_failed_total = %v, want 1", got)
	}

	sink := startSMTPSink(t, port)
	s.waitRounds(t, 3)
	if n := len(sink.messages(t)); n != 0 {
		t.Fatalf("the mail went out %d times before its retry was due", n)
	}
	if recs := outbox(t, st); len(recs) != 1 || recs[0].GetAttempts() != 1 {
		t.Fatalf("before the retry is due the record must stay as it was: %v", recs)
	}

	clock.Advance(time.Minute)
	s.Kick()
	waitFor(t, "the outbox to empty", func() bool { return len(outbox(t, st)) == 0 })
	waitFor(t, "the message in the sink", func() bool { return len(sink.messages(t)) > 0 })
	s.waitRounds(t, 3)
	msgs := sink.messages(t)
	if len(msgs) != 1 {
		t.Fatalf("the sink received %d messages, want exactly 1", len(msgs))
	}
	if got := msgs[0].Header.Get("Subject"); got != "hello" {
		t.Errorf("Subject = %q", got)
	}
	if !strings.Contains(msgs[0].Text, "body text") || msgs[0].ContentType != "text/plain" {
		t.Errorf("want a text/plain body with the text; got %s %q", msgs[0].ContentType, msgs[0].Text)
	}
	if got := s.metric(t, "kiln_mail_sent_total"); got != 1 {
		t.Errorf("kiln_mail_sent_total = %v, want 1", got)
	}
}

func TestSenderHoldsMailWithoutSMTPButStillRunsHooks(t *testing.T) {
	st := openStore(t)
	dir := t.TempDir()
	// More held mail than one store read returns, ahead of the hook, so the
	// hook is only reached if held mail cannot starve it.
	for i := 0; i < drainBatch+5; i++ {
		enqueue(t, st, &store.Outbox{Kind: KindMail, To: "ada@example.org", Subject: "s", Text: "t"})
	}
	enqueue(t, st, &store.Outbox{Kind: KindCommand, To: "touch " + dir + "/ran", Subject: "build.succeeded"})

	s := startSender(t, st, SenderConfig{})
	waitFor(t, "the command hook to run", func() bool { return fileExists(dir + "/ran") })
	waitFor(t, "the hook record to go", func() bool { return len(outbox(t, st)) == drainBatch+5 })
	s.waitRounds(t, 3)
	for _, r := range outbox(t, st) {
		if r.GetKind() != KindMail || r.GetAttempts() != 0 || r.GetLastError() != "" {
			t.Fatalf("held mail must stay untouched: %v", r)
		}
	}
	if got := s.metric(t, "kiln_outbox_length"); got != drainBatch+5 {
		t.Errorf("kiln_outbox_length = %v, want %d", got, drainBatch+5)
	}
}

func TestSenderNeverFallsBackToPlainTextWhenSTARTTLSIsRequired(t *testing.T) {
	port := freePort(t)
	sink := startSMTPSink(t, port) // offers no STARTTLS
	st := openStore(t)
	enqueue(t, st, &store.Outbox{Kind: KindMail, To: "Ada@example.org", Subject: "s", Text: "t"})
	cfg := smtpConfig(port)
	cfg.TLS = TLSStartTLS
	cfg.Backoff = func(int) time.Duration { return time.Hour }
	s := startSender(t, st, cfg)
	waitFor(t, "the failed attempt", func() bool {
		recs := outbox(t, st)
		return len(recs) == 1 && recs[0].GetAttempts() == 1
	})
	s.waitRounds(t, 2)
	if n := len(sink.messages(t)); n != 0 {
		t.Fatalf("%d messages went out in plain text", n)
	}
	if got := outbox(t, st)[0].GetLastError(); !strings.Contains(got, "STARTTLS") {
		t.Errorf("last_error = %q, want it to name STARTTLS", got)
	}
}

func TestRedactRecipientKeepsAddressesOutOfErrors(t *testing.T) {
	r := &store.Outbox{Kind: KindMail, To: "Ada@example.org"}
	got := redactRecipient(r, "550 5.1.1 <ada@EXAMPLE.org>: Recipient address rejected")
	if want := "550 5.1.1 <<recipient>>: Recipient address rejected"; got != want {
		t.Fatalf("redactRecipient = %q, want %q", got, want)
	}
}
