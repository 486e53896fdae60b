package main

import (
	"context"
	"fmt"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Lease and reconnect grace of the redispatch scenario's metaserver: its
// defaults, named here so the report can set the figure beside them.
const (
	redispatchLease = 30 * time.Second
	redispatchGrace = 3 * time.Second
)

// runRedispatch measures how long a build waits after its build server is
// SIGKILLed mid-build before it starts on another: two real build servers
// of one slot, a build that runs until stopped; per round the harness
// kills the one running it, reads when the second attempt started (the
// metaserver's timestamp, same clock), cancels the build and starts the
// killed server again.
func runRedispatch(ctx context.Context, e *env) error {
	src, commit, err := makeProjectWith(ctx, e.dir, slowManifest)
	if err != nil {
		return err
	}
	// Losing a build per round must not put a server aside.
	m, err := startMetaserver(ctx, e.bins, e.dir, "--lease", redispatchLease.String(),
		"--reconnect-grace", redispatchGrace.String(), "--losses-before-aside", "1000000")
	if err != nil {
		return err
	}
	defer m.close()
	if err := m.addProject(ctx, projectName, src); err != nil {
		return err
	}
	admin, closeAdmin, err := m.admin()
	if err != nil {
		return err
	}
	defer closeAdmin()
	tokens := map[string]string{}
	servers := map[string]*buildserver{}
	for i := range 2 {
		name := fmt.Sprintf("volunteer-%d", i)
		if tokens[name], err = m.addBuildServer(ctx, name); err != nil {
			return err
		}
		if servers[name], err = startBuildserver(e.bins, e.dir, m, name, tokens[name], 1, e.cfg.Sandbox, false); err != nil {
			return err
		}
	}
	if err := m.waitConnected(ctx, 2, readyTimeout); err != nil {
		return err
	}
	reqs, err := newRequests(ctx, commit)
	if err != nil {
		return err
	}
	var redispatch, lost durations
	e.rep.logf("%d rounds: a build runs, its build server is SIGKILLed, the other takes it (lease %s, reconnect grace %s)",
		e.cfg.Kills, redispatchLease, redispatchGrace)
	for range e.cfg.Kills {
		r, err := m.Compile.Submit(ctx, reqs.next())
		if err != nil {
			return fmt.Errorf("submit: %w", err)
		}
		id := r.GetBuild().GetId()
		holder, err := waitAttempt(ctx, m, id, 1, kilnv1.Phase_PHASE_BUILDING)
		if err != nil {
			return err
		}
		killed := time.Now()
		servers[holder.GetBuildServer()].Proc.kill()
		second, err := waitAttempt(ctx, m, id, 2, kilnv1.Phase_PHASE_UNSPECIFIED)
		if err != nil {
			return err
		}
		redispatch.add(second.GetStartedAt().AsTime().Sub(killed))
		b, err := m.Compile.GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: id})
		if err != nil {
			return err
		}
		lost.add(b.GetBuild().GetAttempts()[0].GetFinishedAt().AsTime().Sub(killed))
		if _, err := admin.CancelBuild(ctx, &kilnv1.CancelBuildRequest{BuildId: id, Reason: "redispatch measured"}); err != nil {
			return fmt.Errorf("cancel build %d: %w", id, err)
		}
		name := holder.GetBuildServer()
		if servers[name], err = startBuildserver(e.bins, e.dir, m, name, tokens[name], 1, e.cfg.Sandbox, false); err != nil {
			return err
		}
		if err := m.waitConnected(ctx, 2, readyTimeout); err != nil {
			return err
		}
	}
	e.rep.add(figure{Scenario: "redispatch", Name: "SIGKILL → started elsewhere p50", Value: ms(redispatch.pct(50)), Unit: "ms",
		Target: 5000, AtMost: true, Bound: ms(redispatchLease), BoundName: "the lease (what it waited before)",
		Note: fmt.Sprintf("kill → started on the other build server: %s\nkill → first attempt LOST: %s\nreconnect grace %s, lease %s (a silent partition still waits the lease)",
			redispatch.describe(), lost.describe(), redispatchGrace, redispatchLease)})
	e.rep.add(figure{Scenario: "redispatch", Name: "SIGKILL → started elsewhere max", Value: ms(redispatch.pct(100)), Unit: "ms", NoTarget: true})
	return nil
}

// waitAttempt polls build id until its attempt number n exists and, unless
// phase is unspecified, has reached phase; it returns that attempt.
func waitAttempt(ctx context.Context, m *meta, id uint64, n int, phase kilnv1.Phase) (*kilnv1.Attempt, error) {
	var got *kilnv1.Attempt
	err := pollUntil(ctx, 2*redispatchLease, func() error {
		r, err := m.Compile.GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: id})
		if err != nil {
			return err
		}
		b := r.GetBuild()
		if b.GetState().Final() {
			return fmt.Errorf("build %d ended %s (%s)", id, b.GetState(), b.GetFailure())
		}
		atts := b.GetAttempts()
		if len(atts) < n {
			return fmt.Errorf("build %d has %d attempts, waiting for attempt %d", id, len(atts), n)
		}
		a := atts[n-1]
		if phase != kilnv1.Phase_PHASE_UNSPECIFIED && a.GetPhase() != phase {
			return fmt.Errorf("attempt %d of build %d in phase %s", n, id, a.GetPhase())
		}
		got = a
		return nil
	})
	return got, err
}
