package compilecli

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// frameCounter is a loopback proxy in front of a metaserver that reads the
// HTTP/2 frames its one client sends: the windows the client's SETTINGS
// announce and the PINGs it starts.
type frameCounter struct {
	addr string
	done chan struct{}

	mu         sync.Mutex
	pings      int
	windows    []uint32
	connWindow uint32
	err        error
}

func startFrameCounter(t *testing.T, upstream string) *frameCounter {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	fc := &frameCounter{addr: lis.Addr().String(), done: make(chan struct{})}
	go func() {
		defer close(fc.done)
		client, err := lis.Accept()
		if err != nil {
			fc.fail(err)
			return
		}
		defer client.Close()
		server, err := net.Dial("tcp", upstream)
		if err != nil {
			fc.fail(err)
			return
		}
		defer server.Close()
		go func() {
			_, _ = io.Copy(client, server)
			client.Close()
		}()
		pr, pw := io.Pipe()
		parsed := make(chan struct{})
		go func() {
			defer close(parsed)
			fc.read(pr)
			_, _ = io.Copy(io.Discard, pr) // never block the copy below
		}()
		_, _ = io.Copy(server, io.TeeReader(client, pw))
		pw.Close()
		<-parsed
	}()
	return fc
}

func (fc *frameCounter) fail(err error) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.err == nil {
		fc.err = err
	}
}

// read parses the client's side of the connection: the preface, then frames.
func (fc *frameCounter) read(r io.Reader) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(r, preface); err != nil || string(preface) != http2.ClientPreface {
		fc.fail(errors.New("no HTTP/2 client preface"))
		return
	}
	fr := http2.NewFramer(io.Discard, r)
	fr.SetMaxReadFrameSize(1 << 24)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
				fc.fail(err)
			}
			return
		}
		fc.mu.Lock()
		switch f := f.(type) {
		case *http2.PingFrame:
			if !f.IsAck() {
				fc.pings++
			}
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				fc.windows = append(fc.windows, v)
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 && fc.connWindow == 0 {
				fc.connWindow = 65535 + f.Increment
			}
		}
		fc.mu.Unlock()
	}
}

// TestAWaitStartsNoBandwidthEstimates follows a build whose states and log
// arrive in many data frames, through a proxy that reads the client's
// frames. gRPC's dynamic window would answer data with a PING (a
// bandwidth-delay estimate) and grow the window from 64 KiB; the client's
// fixed window (flowWindow) starts none and announces the full window from
// the first SETTINGS.
func TestAWaitStartsNoBandwidthEstimates(t *testing.T) {
	f := startFake(t)
	f.submit = answerQueued(5)
	msgs := []*kilnv1.WatchBuildResponse{upd(queued(5)), upd(running(5, kilnv1.Phase_PHASE_BUILDING))}
	line := strings.Repeat("x", 1023) + "\n"
	for i := range 64 {
		msgs = append(msgs, logChunk(uint64(i*len(line)), line))
	}
	msgs = append(msgs, upd(final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)))
	f.watch = script(msgs...)
	fc := startFrameCounter(t, f.addr)

	_, stderr, code := runWith(t, Env{Getenv: envWith(EnvMetaserver, fc.addr), Measure: measured(x86Info())}, "--project", "hello", "--wait", email)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if n := strings.Count(stderr, line); n != 64 {
		t.Fatalf("%d of the 64 log lines shown; the case tests nothing", n)
	}
	select {
	case <-fc.done:
	case <-time.After(testTimeout):
		t.Fatal("the client's connection was not closed")
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.err != nil {
		t.Fatal(fc.err)
	}
	if len(fc.windows) != 1 || fc.windows[0] != flowWindow || fc.connWindow != flowWindow {
		t.Errorf("stream windows announced %v, connection window %d; want %d from the start", fc.windows, fc.connWindow, flowWindow)
	}
	if fc.pings != 0 {
		t.Errorf("the client started %d PINGs; want none", fc.pings)
	}
}
