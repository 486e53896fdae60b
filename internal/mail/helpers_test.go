package mail

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	netmail "net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	"github.com/prometheus/client_golang/prometheus"
)

// waitTimeout bounds every wait of these tests.
const waitTimeout = 10 * time.Second

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "kiln.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// outbox returns every record, due or not.
func outbox(t *testing.T, st store.Store) []*store.Outbox {
	t.Helper()
	var recs []*store.Outbox
	err := st.View(func(tx store.Tx) error {
		var err error
		recs, err = tx.DueOutbox(time.Now().Add(100*365*24*time.Hour), 100000)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func enqueue(t *testing.T, st store.Store, m *store.Outbox) {
	t.Helper()
	if err := st.Update(func(tx store.Tx) error { return Enqueue(tx, m) }); err != nil {
		t.Fatal(err)
	}
}

// fakeClock is a settable clock for SenderConfig.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// runningSender is a Sender whose Run goroutine the test owns.
type runningSender struct {
	*Sender
	reg  *prometheus.Registry
	stop func()
}

// startSender runs a Sender on st until the test ends. Unset Poll is 10ms.
func startSender(t *testing.T, st store.Store, cfg SenderConfig) *runningSender {
	t.Helper()
	if cfg.Poll == 0 {
		cfg.Poll = 10 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := NewSender(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collectors()...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(waitTimeout):
				t.Errorf("Run did not return %s after cancel", waitTimeout)
			}
		})
	}
	t.Cleanup(stop)
	return &runningSender{Sender: s, reg: reg, stop: stop}
}

// waitRounds kicks the sender and waits until n more drain rounds finished,
// so a test can claim that nothing more happened.
func (s *runningSender) waitRounds(t *testing.T, n uint64) {
	t.Helper()
	target := s.rounds.Load() + n
	waitFor(t, fmt.Sprintf("%d drain rounds", n), func() bool {
		s.Kick()
		return s.rounds.Load() >= target
	})
}

// metric returns the value of the counter or gauge called name.
func (s *runningSender) metric(t *testing.T, name string) float64 {
	t.Helper()
	families, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		m := f.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// freePort returns a loopback TCP port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

const smtpSinkPath = "/usr/sbin/smtp-sink"

// smtpSink is postfix's smtp-sink on a loopback port, writing one file per
// message into dir.
type smtpSink struct {
	dir string
}

// startSMTPSink starts smtp-sink on 127.0.0.1:port, waits until it accepts
// connections and kills it (by PID) when the test ends.
func startSMTPSink(t *testing.T, port int) *smtpSink {
	t.Helper()
	if _, err := os.Stat(smtpSinkPath); err != nil {
		t.Skipf("smtp-sink not installed (%v): install postfix to run the SMTP tests", err)
	}
	// Not t.TempDir: smtp-sink drops to nobody, who must traverse every
	// parent directory, and t.TempDir's parents are private.
	dir, err := os.MkdirTemp("", "kiln-smtp-sink-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var args []string
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody")
	}
	args = append(args, "-d", filepath.Join(dir, "%M."), addr, "100")
	cmd := exec.Command(smtpSinkPath, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	waitFor(t, "smtp-sink to listen on "+addr, func() bool {
		select {
		case <-exited:
			t.Fatalf("smtp-sink exited: %s", out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return &smtpSink{dir: dir}
}

// sinkMail is one message smtp-sink received.
type sinkMail struct {
	Header      netmail.Header
	Text, HTML  string
	ContentType string
}

// messages reads every message file written so far.
func (s *smtpSink) messages(t *testing.T) []*sinkMail {
	t.Helper()
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []*sinkMail
	for _, e := range entries {
		f, err := os.Open(filepath.Join(s.dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m, err := parseSinkMail(f)
		f.Close()
		if err != nil {
			// A file still being written: the caller polls again.
			continue
		}
		out = append(out, m)
	}
	return out
}

func parseSinkMail(r io.Reader) (*sinkMail, error) {
	msg, err := netmail.ReadMessage(r)
	if err != nil {
		return nil, err
	}
	sm := &sinkMail{Header: msg.Header}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return nil, err
	}
	sm.ContentType = mediaType
	if !strings.HasPrefix(mediaType, "multipart/") {
		var body io.Reader = msg.Body
		if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(body)
		}
		b, err := io.ReadAll(body)
		if err != nil {
			return nil, err
		}
		if mediaType == "text/html" {
			sm.HTML = string(b)
		} else {
			sm.Text = string(b)
		}
		return sm, nil
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(p) // multipart decodes quoted-printable
		if err != nil {
			return nil, err
		}
		switch ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); ct {
		case "text/plain":
			sm.Text = string(body)
		case "text/html":
			sm.HTML = string(body)
		}
	}
	if sm.Text == "" {
		return nil, errors.New("no text part (yet)")
	}
	return sm, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
