package worker

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const (
	// welcomeTimeout bounds the wait for Welcome after Hello.
	welcomeTimeout = 30 * time.Second
	// defaultHeartbeat is used when Welcome names no heartbeat interval;
	// minHeartbeat bounds how often a misconfigured metaserver can make us send.
	defaultHeartbeat = 5 * time.Second
	minHeartbeat     = 10 * time.Millisecond
)

type sessionStream = grpc.BidiStreamingClient[kilnv1.SessionRequest, kilnv1.SessionResponse]

// sessions keeps a session up until life ends (nil) or the metaserver
// refuses the credential (*AuthError).
func (c *Client) sessions(life context.Context, rpc kilnv1.WorkerServiceClient) error {
	var b reconnects
	for {
		start := time.Now()
		established, err := c.session(life, rpc)
		if life.Err() != nil || c.stopping.Load() {
			return nil
		}
		if status.Code(err) == codes.Unauthenticated {
			return &AuthError{Err: err}
		}
		if established && time.Since(start) >= backoffStable {
			b.reset()
		}
		delay := b.next()
		c.log.Warn("session with the metaserver ended; reconnecting", "error", err, "established", established, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-life.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session runs one session to its end. established reports whether Welcome
// arrived; err is why the session ended.
func (c *Client) session(life context.Context, rpc kilnv1.WorkerServiceClient) (established bool, err error) {
	ctx, cancel := context.WithCancel(life)
	defer cancel()
	stream, err := rpc.Session(ctx)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	hello := &kilnv1.Hello{
		Version:           c.cfg.Version,
		Targets:           c.targets,
		Slots:             uint32(c.cfg.Slots),
		Policy:            c.cfg.Policy,
		RunningAttemptIds: c.knownIDsLocked(),
		Unsandboxed:       c.cfg.Unsandboxed,
		Draining:          c.draining,
		RejectedTargets:   c.rejected,
		PublicKey:         c.key.Public().(ed25519.PublicKey),
	}
	c.mu.Unlock()
	if err := stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Hello{Hello: hello}}); err != nil {
		return false, recvStatus(stream, err)
	}
	timer := time.AfterFunc(welcomeTimeout, cancel)
	resp, err := stream.Recv()
	timer.Stop()
	if err != nil {
		return false, err
	}
	w := resp.GetWelcome()
	if w == nil {
		return false, fmt.Errorf("metaserver answered Hello with %T, not Welcome", resp.GetMsg())
	}
	interval := time.Duration(w.GetHeartbeatIntervalMs()) * time.Millisecond
	if interval <= 0 {
		interval = defaultHeartbeat
	}
	interval = max(interval, minHeartbeat)
	c.log.Info("session established", "build_server", w.GetBuildServer(), "heartbeat_interval", interval,
		"lease", time.Duration(w.GetLeaseMs())*time.Millisecond, "running", len(hello.RunningAttemptIds),
		"kept", len(w.GetKeepAttemptIds()), "dropped", len(w.GetDropAttemptIds()))
	c.mu.Lock()
	c.name = w.GetBuildServer()
	c.mu.Unlock()
	c.dropAttempts(w.GetDropAttemptIds())
	c.runner.inlineMax.Store(w.GetMaxInlineArtifactBytes())

	gen := c.install(stream)
	defer c.uninstall(gen)
	c.resendAll()

	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		c.heartbeats(ctx, gen, interval)
		cancel() // a failed heartbeat ends the session
	}()
	err = c.receive(stream)
	cancel()
	<-hbDone
	return true, err
}

// recvStatus turns the io.EOF of a failed Send into the call's status.
func recvStatus(stream sessionStream, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.Recv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// receive handles the metaserver's messages until the stream fails.
func (c *Client) receive(stream sessionStream) error {
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		switch m := resp.GetMsg().(type) {
		case *kilnv1.SessionResponse_Assignment:
			c.assign(m.Assignment)
		case *kilnv1.SessionResponse_Cancel:
			c.cancelAttempt(m.Cancel.GetAttemptId(), m.Cancel.GetReason())
		case *kilnv1.SessionResponse_ResultAck:
			c.acknowledge(m.ResultAck)
		case *kilnv1.SessionResponse_Welcome:
			c.dropAttempts(m.Welcome.GetDropAttemptIds())
		default:
			c.log.Warn("ignoring unknown message from the metaserver", "type", fmt.Sprintf("%T", m))
		}
	}
}

// heartbeats sends a Heartbeat every interval, and at once when poked,
// until ctx ends or a send fails.
func (c *Client) heartbeats(ctx context.Context, gen uint64, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.hbWake:
		}
		c.mu.Lock()
		hb := &kilnv1.Heartbeat{RunningAttemptIds: c.knownIDsLocked(), Draining: c.draining, Busy: c.busyLocked()}
		c.mu.Unlock()
		if err := c.sendIn(gen, &kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Heartbeat{Heartbeat: hb}}); err != nil {
			c.log.Debug("heartbeat not sent", "error", err)
			return
		}
	}
}

// pokeHeartbeat asks for a heartbeat now (e.g. to announce draining).
func (c *Client) pokeHeartbeat() {
	select {
	case c.hbWake <- struct{}{}:
	default:
	}
}

// install makes stream the current session and returns its number.
func (c *Client) install(stream sessionStream) uint64 {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.gen++
	c.stream = stream
	return c.gen
}

// uninstall ends session gen, if it is still the current one.
func (c *Client) uninstall(gen uint64) {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.gen == gen {
		c.stream = nil
	}
}

// generation implements logSender.
func (c *Client) generation() (uint64, bool) {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.gen, c.stream != nil
}

// sendIn implements logSender: it sends m on session gen, the only way
// anything but Hello is sent, so Sends never run concurrently.
func (c *Client) sendIn(gen uint64, m *kilnv1.SessionRequest) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.stream == nil || c.gen != gen {
		return errNoSession
	}
	return c.stream.Send(m)
}

// send sends m on the current session, if any.
func (c *Client) send(m *kilnv1.SessionRequest) error {
	gen, ok := c.generation()
	if !ok {
		return errNoSession
	}
	return c.sendIn(gen, m)
}
