package worker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// attempt is one assigned attempt, from its Assignment until the metaserver
// acknowledges its result (or drops it). Fields are guarded by Client.mu.
type attempt struct {
	id     uint64
	dir    string
	cancel context.CancelCauseFunc
	// log is nil until the build directory exists, and for attempts refused
	// or returned before anything ran.
	log *logStream
	// hasDir: this run made the build directory (from a prepared spare),
	// so its prepared files exist.
	hasDir bool
	// result is nil while running, then the result awaiting acknowledgement.
	result *kilnv1.AttemptResult
	// dropped: the metaserver no longer wants it; its result is discarded.
	dropped bool
	// phase is the last phase reported, reported again after a reconnect.
	phase kilnv1.Phase
	// held is the source tree exported into the build directory's src,
	// zero until the export is complete.
	held treeKey
	// asg and started describe a run for its signed statement (provenance.go);
	// asg is nil for an attempt answered without running.
	asg     *kilnv1.Assignment
	started time.Time
}

// assign takes an Assignment: starts it when a slot is free, or answers it
// at once (RETURNED when busy or draining; REFUSED/SETUP_FAILED when it
// cannot run here).
func (c *Client) assign(asg *kilnv1.Assignment) {
	id := asg.GetAttemptId()
	log := c.log.With("attempt_id", id, "build_id", asg.GetBuildId())
	c.mu.Lock()
	if _, dup := c.attempts[id]; dup {
		c.mu.Unlock()
		log.Warn("ignoring a repeated assignment")
		return
	}
	var unavailable string
	switch running := c.runningLocked(); {
	case c.draining:
		unavailable = "build server is stopping"
	case running >= c.cfg.Slots:
		unavailable = fmt.Sprintf("all %d slots are busy", c.cfg.Slots)
	case c.busyLocked():
		unavailable = "machine is busy and the volunteer builds only when idle"
	}
	ctx, cancel := context.WithCancelCause(c.life)
	a := &attempt{id: id, dir: c.attemptDir(id), cancel: cancel}
	c.attempts[id] = a
	c.notifyLocked()
	outcome, reason := kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RETURNED, unavailable
	if unavailable == "" {
		outcome, reason = c.runner.check(asg)
	}
	if outcome == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_UNSPECIFIED {
		// Added under c.mu, so never after Run began waiting for attempts.
		c.wg.Add(1)
	}
	c.mu.Unlock()

	if outcome != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_UNSPECIFIED {
		log.Info("not running assignment", "outcome", outcome.String(), "reason", reason)
		c.finish(a, result(outcome, reason, ""))
		return
	}
	c.mu.Lock()
	a.asg, a.started = asg, time.Now()
	c.mu.Unlock()
	log.Info("attempt started", "project", asg.GetProject(), "commit", asg.GetCommit(), "target", asg.GetTargetId())
	c.trimmer.busy()
	go func() {
		defer c.wg.Done()
		defer c.trimmer.idle()
		c.finish(a, c.execute(ctx, a, asg))
	}()
}

// execute prepares the build directory and log, then runs the attempt.
func (c *Client) execute(ctx context.Context, a *attempt, asg *kilnv1.Assignment) *kilnv1.AttemptResult {
	os.RemoveAll(a.dir) // only a crashed earlier run leaves one
	tree := treeKey{asg.GetGitUrl(), asg.GetCommit()}
	spare, holds, err := c.dirs.take(a.dir, tree, func(d string) { c.janitor.discard(d, treeKey{}) })
	if spare {
		c.janitor.poke() // prepare the next one while this build runs
	}
	if err != nil {
		return result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, err.Error(), "")
	}
	c.mu.Lock()
	a.hasDir = true
	c.mu.Unlock()
	l, err := createLog(filepath.Join(a.dir, logName), a.id, c, c.cfg.MaxLogBytes)
	if err != nil {
		return result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, "preparing build directory: "+err.Error(), "")
	}
	c.mu.Lock()
	a.log = l
	c.mu.Unlock()
	return c.runner.run(ctx, job{
		asg:       asg,
		dir:       a.dir,
		log:       l,
		srcExists: holds,
		sourced: func() {
			c.mu.Lock()
			a.held = tree
			c.mu.Unlock()
		},
		progress: func(p kilnv1.Phase) {
			c.mu.Lock()
			a.phase = p
			c.mu.Unlock()
			c.send(progressMsg(a.id, p))
		},
	})
}

// progressMsg is an AttemptProgress message.
func progressMsg(id uint64, p kilnv1.Phase) *kilnv1.SessionRequest {
	return &kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Progress{Progress: &kilnv1.AttemptProgress{AttemptId: id, Phase: p}}}
}

// finish records an attempt's result durably and delivers it.
func (c *Client) finish(a *attempt, r *kilnv1.AttemptResult) {
	r.AttemptId = a.id
	c.mu.Lock()
	l := a.log
	hasDir := a.hasDir
	c.mu.Unlock()
	if l != nil {
		r.LogSize = uint64(l.close())
	}
	if r.GetOutcome() == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		c.signResult(a, r)
	}
	tmp := ""
	if hasDir {
		tmp = filepath.Join(a.dir, resultTmpName)
	}
	if err := c.results.save(r, tmp); err != nil {
		c.log.Error("result kept in memory only", "attempt_id", a.id, "error", err)
	}
	c.mu.Lock()
	dropped := a.dropped
	a.result = r
	c.notifyLocked()
	c.mu.Unlock()
	a.cancel(nil)
	if dropped {
		c.log.Info("attempt dropped by the metaserver; result discarded", "attempt_id", a.id, "outcome", r.GetOutcome().String())
		c.forget(a)
		return
	}
	c.log.Info("attempt finished", "attempt_id", a.id, "outcome", r.GetOutcome().String(), "reason", r.GetReason(),
		"failing_step", r.GetFailingStep(), "log_bytes", r.GetLogSize())
	c.deliver(a)
}

// deliver sends a's log (what this session lacks) and then its result, both
// on the same session so the result never precedes its log. A failure is
// left to the next session, which delivers again.
func (c *Client) deliver(a *attempt) {
	c.mu.Lock()
	l, r := a.log, a.result
	c.mu.Unlock()
	if r == nil {
		return
	}
	var gen uint64
	var err error
	if l != nil {
		gen, err = l.flush()
	} else if g, ok := c.generation(); ok {
		gen = g
	} else {
		err = errNoSession
	}
	if err == nil {
		err = c.sendIn(gen, &kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{Result: r}})
	}
	if err != nil {
		c.log.Debug("result not delivered yet", "attempt_id", a.id, "error", err)
	}
}

// resendAll, right after a Welcome, sends every kept attempt's phase and log
// from the start, and every unacknowledged result again.
func (c *Client) resendAll() {
	c.mu.Lock()
	var list []*attempt
	for _, a := range c.attempts {
		if !a.dropped {
			list = append(list, a)
		}
	}
	c.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].id < list[j].id })
	for _, a := range list {
		c.mu.Lock()
		l, r, phase := a.log, a.result, a.phase
		c.mu.Unlock()
		switch {
		case r != nil:
			c.deliver(a)
		case l != nil:
			if gen, err := l.flush(); err == nil && phase != kilnv1.Phase_PHASE_UNSPECIFIED {
				c.sendIn(gen, progressMsg(a.id, phase))
			}
		}
	}
}

// acknowledge forgets an attempt whose result the metaserver acknowledged
// (accepted or fenced off: either way it is done with it).
func (c *Client) acknowledge(ack *kilnv1.ResultAck) {
	id := ack.GetAttemptId()
	c.mu.Lock()
	a := c.attempts[id]
	if a == nil || a.result == nil {
		c.mu.Unlock()
		c.log.Debug("acknowledgement for no pending result", "attempt_id", id)
		return
	}
	c.mu.Unlock()
	c.log.Info("result acknowledged", "attempt_id", id, "accepted", ack.GetAccepted(), "reason", ack.GetReason())
	c.forget(a)
}

// forget deletes what is left of an attempt: its saved result, its log,
// its build directory (in the background) and finally its entry, so that
// an attempt is gone from c.attempts only once its result file is.
func (c *Client) forget(a *attempt) {
	c.mu.Lock()
	keep := ""
	if a.hasDir {
		// Back to where save took it from: recycling reuses the file.
		keep = filepath.Join(a.dir, resultTmpName)
	}
	held := a.held
	c.mu.Unlock()
	if err := c.results.remove(a.id, keep); err != nil {
		c.log.Warn("cannot delete saved result", "attempt_id", a.id, "error", err)
	}
	if a.log != nil {
		a.log.release()
	}
	c.janitor.discard(a.dir, held)
	c.mu.Lock()
	if c.attempts[a.id] == a {
		delete(c.attempts, a.id)
	}
	c.notifyLocked()
	c.mu.Unlock()
}

// cancelAttempt stops a running attempt at the metaserver's request.
func (c *Client) cancelAttempt(id uint64, reason string) {
	c.mu.Lock()
	a := c.attempts[id]
	running := a != nil && a.result == nil
	if running {
		a.cancel(errCancelledByServer)
	}
	c.mu.Unlock()
	c.log.Info("cancel requested", "attempt_id", id, "reason", reason, "was_running", running)
}

// cancelRunning cancels every running attempt with cause.
func (c *Client) cancelRunning(cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.attempts {
		if a.result == nil {
			a.cancel(cause)
		}
	}
}

// dropAttempts abandons the attempts the metaserver no longer counts as
// current: running ones are cancelled and their results discarded, pending
// results are forgotten.
func (c *Client) dropAttempts(ids []uint64) {
	var done []*attempt
	c.mu.Lock()
	for _, id := range ids {
		a := c.attempts[id]
		if a == nil {
			continue
		}
		if a.result != nil {
			a.dropped = true
			done = append(done, a)
			continue
		}
		a.dropped = true
		a.cancel(errDropped)
	}
	c.notifyLocked()
	c.mu.Unlock()
	for _, a := range done {
		c.log.Info("metaserver dropped a finished attempt; result discarded", "attempt_id", a.id)
		c.forget(a)
	}
	if len(ids) > 0 {
		c.log.Info("metaserver dropped attempts", "attempt_ids", ids)
	}
}
