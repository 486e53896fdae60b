// Package sched decides which build runs where: the queue of builds waiting
// for a target, the connected build servers with their targets and free
// slots, matching (platform constraints, required tools, the volunteer's
// policy, exclusions), attempt leases and retry limits.
//
// It does no I/O and has no locks: the metaserver owns one Scheduler and
// calls it under its own mutex, then persists what the Scheduler decided
// before telling anyone (assignments are sent only after the attempt is
// committed).
//
// Matching is by class: targets with the same measured platform identity,
// tools and policy form one class, checked once per build; within a class any
// target whose server has a free slot will do. With thousands of volunteers on
// a handful of platforms a match costs a few class checks, not one per target.
package sched

import (
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Build is a queued or running build as the scheduler sees it.
type Build struct {
	ID          uint64
	Project     string
	Constraints *kilnv1.PlatformConstraints
	Requires    []string
	Options     map[string]string
	// TimeoutSeconds is the build's wall-time limit (the manifest's
	// timeout); a volunteer whose policy caps build time below it does not
	// get the build.
	TimeoutSeconds uint32
	// Excluded maps the build servers that must not get this build to
	// when that ends (a setup failure, a refusal, or the build held past
	// its time there). Exclusions expire so that a build is never stuck
	// behind its only matching volunteer; an expired entry is ignored.
	Excluded map[string]time.Time
	// NotBefore delays a retry.
	NotBefore time.Time
	// Attempt is the current attempt while the build runs.
	Attempt *Attempt
	// Replica is set while the build waits for more results of other
	// operators to be verified (internal/server/verify.go): Constraints
	// then pin the first result's platform identity, no target of an
	// operator in HaveOperators gets it, and Quorum is how many operators
	// must agree (for WaitingReasons).
	Replica       bool
	HaveOperators map[string]bool
	Quorum        int

	queued bool
	// unmatchedSince is when Unmatched first found no connected target
	// that fits b; zero while one fits or before the first check.
	unmatchedSince time.Time
}

// skips reports whether b must not go to srv at now: srv is marked,
// excluded from it, put aside, or, for a replica, of an operator that
// already has a result for it.
func (b *Build) skips(srv *Server, now time.Time) bool {
	return srv.Marked || b.ExcludedAt(srv.Name, now) || now.Before(srv.PutAsideUntil) || (b.Replica && b.HaveOperators[srv.Operator])
}

// ExcludedAt reports whether server name is excluded from b at now.
func (b *Build) ExcludedAt(name string, now time.Time) bool {
	until, ok := b.Excluded[name]
	return ok && now.Before(until)
}

// Exclude keeps server name from getting b until until (a later exclusion
// already in place is kept), and forgets exclusions that ended before now.
func (b *Build) Exclude(name string, now, until time.Time) {
	if b.Excluded == nil {
		b.Excluded = map[string]time.Time{}
	}
	for n, u := range b.Excluded {
		if !now.Before(u) {
			delete(b.Excluded, n)
		}
	}
	if until.After(b.Excluded[name]) {
		b.Excluded[name] = until
	}
}

// Target is one target of a connected build server.
type Target struct {
	ID     string
	Info   *kilnv1.SystemInfo
	Server *Server
	class  *class
}

// Jobs is one build's share of t's CPUs: the CPUs its system info reports
// over the builds its server runs at once (its slots), at least 1. A
// --jobs 2 volunteer on 16 CPUs gives each build 8; the build server
// computes the same share for the build's KILN_JOBS.
func (t *Target) Jobs() int {
	slots := 1
	if t.Server != nil {
		slots = max(t.Server.Slots, 1)
	}
	return max(int(t.Info.GetCpus())/slots, 1)
}

// Server is a connected build server.
type Server struct {
	Name string
	// Operator is the person or organisation behind the server's
	// credential: a replica never goes to an operator that already has a
	// result for its build.
	Operator string
	// Marked is set once the server's result lost a dispute others
	// settled: its results count for no verification, so it gets no new
	// work at all (giving it any would only cost builds, and hand its
	// artifacts to requests that accept unverified results).
	Marked  bool
	Targets []*Target
	Slots   int
	Policy  *kilnv1.BuildServerPolicy
	// Draining and Busy servers take no new work.
	Draining bool
	Busy     bool
	// PutAsideUntil is set after repeated lost attempts (setup failures,
	// lapsed leases, builds held past their time): until then the server
	// gets no new work.
	PutAsideUntil time.Time
	// Running maps attempt id to attempt.
	Running map[uint64]*Attempt
}

// canTake reports whether the server may get new work (PutAsideUntil is
// checked at match time, against the clock).
func (s *Server) canTake() bool {
	return !s.Draining && !s.Busy && len(s.Running) < s.Slots
}

// Attempt is a build running on a target under a lease.
type Attempt struct {
	ID         uint64
	Build      *Build
	Server     *Server
	Target     *Target
	LeaseUntil time.Time
	// Detached is true while the attempt's server has no session; the
	// attempt keeps its lease until it lapses.
	Detached bool
	// Deadline is when the attempt must have ended whatever its
	// heartbeats: the build's time limit plus a grace, from its start.
	// Zero: none. The caller sets it after Start or Restore.
	Deadline time.Time
}

// Scheduler holds the queue and the connected servers. Not safe for
// concurrent use.
type Scheduler struct {
	queue    queue
	servers  map[string]*Server
	attempts map[uint64]*Attempt
	classes  classes
}

// New returns an empty scheduler.
func New() *Scheduler {
	return &Scheduler{
		servers:  make(map[string]*Server),
		attempts: make(map[uint64]*Attempt),
		classes:  newClasses(),
	}
}

// Enqueue puts b in the queue (ordered by id). A build already queued is left alone.
func (s *Scheduler) Enqueue(b *Build) {
	if b.queued {
		return
	}
	b.Attempt = nil
	b.queued = true
	b.unmatchedSince = time.Time{}
	s.queue.insert(b)
}

// Dequeue removes b from the queue (cancelled, or about to run).
func (s *Scheduler) Dequeue(b *Build) {
	if !b.queued {
		return
	}
	b.queued = false
	s.queue.remove(b)
}

// Queued reports whether b is in the queue.
func (b *Build) Queued() bool { return b.queued }

// QueueLen is the number of queued builds.
func (s *Scheduler) QueueLen() int { return s.queue.len() }

// QueuePosition is b's 1-based position in the queue, 0 when not queued.
func (s *Scheduler) QueuePosition(b *Build) int {
	if !b.queued {
		return 0
	}
	return s.queue.position(b) + 1
}

// Oldest returns the queued build with the smallest id, or nil.
func (s *Scheduler) Oldest() *Build { return s.queue.first() }

// Connect adds (or replaces) a connected server. Attempts the previous
// incarnation of the server held and that are still known are carried over
// by the caller with Adopt.
func (s *Scheduler) Connect(srv *Server) {
	if old, ok := s.servers[srv.Name]; ok {
		s.Disconnect(old.Name)
	}
	if srv.Running == nil {
		srv.Running = make(map[uint64]*Attempt)
	}
	s.servers[srv.Name] = srv
	for _, t := range srv.Targets {
		t.Server = srv
		s.classes.add(t)
	}
	s.classes.refresh(srv)
}

// Disconnect removes a server from matching. Its attempts stay, detached,
// until their leases lapse or the server reconnects and adopts them.
func (s *Scheduler) Disconnect(name string) {
	srv, ok := s.servers[name]
	if !ok {
		return
	}
	s.classes.setFree(srv, false)
	for _, t := range srv.Targets {
		s.classes.remove(t)
	}
	for _, a := range srv.Running {
		a.Detached = true
	}
	delete(s.servers, name)
}

// LapseBy shortens the leases of the attempts connected server name
// holds so that they lapse by until, unless the server reconnects and
// adopts them first; a lease ending sooner is kept. It returns how many
// attempts it shortened. Call it before Disconnect when the server's
// connection closed (a crash, a kill, a reboot): heartbeats cannot come
// on a closed connection, and waiting the whole lease for them only delays
// the build. A silent partition, where the connection stays open, is left
// to the lease.
func (s *Scheduler) LapseBy(name string, until time.Time) int {
	srv, ok := s.servers[name]
	if !ok {
		return 0
	}
	n := 0
	for _, a := range srv.Running {
		if until.Before(a.LeaseUntil) {
			a.LeaseUntil = until
			n++
		}
	}
	return n
}

// Server returns the connected server by name, or nil.
func (s *Scheduler) Server(name string) *Server { return s.servers[name] }

// Servers returns the connected servers (in no particular order).
func (s *Scheduler) Servers() []*Server {
	out := make([]*Server, 0, len(s.servers))
	for _, srv := range s.servers {
		out = append(out, srv)
	}
	return out
}

// TargetCount is the number of connected targets.
func (s *Scheduler) TargetCount() int { return s.classes.targets }

// Start records that b runs as attempt id on t, leased until leaseUntil,
// and removes b from the queue.
func (s *Scheduler) Start(b *Build, t *Target, id uint64, leaseUntil time.Time) *Attempt {
	s.Dequeue(b)
	a := &Attempt{ID: id, Build: b, Server: t.Server, Target: t, LeaseUntil: leaseUntil}
	b.Attempt = a
	t.Server.Running[id] = a
	s.attempts[id] = a
	s.classes.refresh(t.Server)
	return a
}

// Adopt attaches a detached attempt to srv (a reconnect that reported it).
func (s *Scheduler) Adopt(a *Attempt, srv *Server, leaseUntil time.Time) {
	if a.Server != nil && a.Server != srv {
		delete(a.Server.Running, a.ID)
	}
	a.Server = srv
	for _, t := range srv.Targets {
		if t.ID == a.Target.ID {
			a.Target = t
		}
	}
	a.Detached = false
	a.LeaseUntil = leaseUntil
	srv.Running[a.ID] = a
	s.Refresh(srv)
}

// Restore registers an attempt that was running before a metaserver restart.
// Its server is not connected yet; the attempt waits detached for it until
// leaseUntil.
func (s *Scheduler) Restore(b *Build, serverName, targetID string, id uint64, leaseUntil time.Time) *Attempt {
	s.Dequeue(b)
	srv := &Server{Name: serverName, Running: map[uint64]*Attempt{}}
	a := &Attempt{ID: id, Build: b, Server: srv, Target: &Target{ID: targetID, Server: srv}, LeaseUntil: leaseUntil, Detached: true}
	srv.Running[id] = a
	b.Attempt = a
	s.attempts[id] = a
	return a
}

// Attempt returns a current attempt by id, or nil.
func (s *Scheduler) Attempt(id uint64) *Attempt { return s.attempts[id] }

// Finish ends an attempt: it no longer holds a slot or a lease.
func (s *Scheduler) Finish(a *Attempt) {
	delete(s.attempts, a.ID)
	if a.Server != nil {
		delete(a.Server.Running, a.ID)
		s.Refresh(a.Server)
	}
	if a.Build.Attempt == a {
		a.Build.Attempt = nil
	}
}

// Renew extends the leases of the listed attempts that srv holds.
func (s *Scheduler) Renew(srv *Server, ids []uint64, until time.Time) {
	for _, id := range ids {
		if a, ok := srv.Running[id]; ok && s.attempts[id] == a {
			a.LeaseUntil = until
		}
	}
}

// Expired returns the attempts whose lease lapsed before now.
func (s *Scheduler) Expired(now time.Time) []*Attempt {
	var out []*Attempt
	for _, a := range s.attempts {
		if now.After(a.LeaseUntil) {
			out = append(out, a)
		}
	}
	return out
}

// Overdue returns the attempts past their Deadline at now: held by a build
// server that heartbeats but has not ended them within the build's time
// limit plus grace. The caller takes the build back.
func (s *Scheduler) Overdue(now time.Time) []*Attempt {
	var out []*Attempt
	for _, a := range s.attempts {
		if !a.Deadline.IsZero() && now.After(a.Deadline) {
			out = append(out, a)
		}
	}
	return out
}

// Unmatched returns the queued builds that no connected target has fitted
// (platform, tools, policy; load, exclusions and put-aside servers aside)
// at any call for at least after, up to now. The clock of a build starts at
// the first call that finds nothing fitting it and restarts whenever a
// target fits, so the caller calls it periodically; a fresh Scheduler (a
// restart) starts every clock again. It costs one fit check per queued
// build and class.
func (s *Scheduler) Unmatched(now time.Time, after time.Duration) []*Build {
	var out []*Build
	for b := s.queue.after(0); b != nil; b = s.queue.after(b.ID) {
		if s.classes.fitsAny(b) {
			b.unmatchedSince = time.Time{}
			continue
		}
		if b.unmatchedSince.IsZero() {
			b.unmatchedSince = now
		}
		if now.Sub(b.unmatchedSince) >= after {
			out = append(out, b)
		}
	}
	return out
}

// UnmatchedSince is when Unmatched first found no connected target fitting
// b (zero: one fits, or not checked yet).
func (b *Build) UnmatchedSince() time.Time { return b.unmatchedSince }

// Attempts is the number of attempts holding a lease.
func (s *Scheduler) Attempts() int { return len(s.attempts) }

// Dispatch walks the queue in order and calls start for each build that a
// free target can take; start must call Start (which takes the slot) or
// return false to stop the walk. The walk ends early once no server has a
// free slot, so a long queue of unmatched builds costs nothing while the
// farm is busy.
func (s *Scheduler) Dispatch(now time.Time, start func(b *Build, t *Target) bool) {
	if s.classes.freeServers == 0 || s.queue.len() == 0 {
		return
	}
	// A cursor by id, not a copy of the queue: start removes builds, and
	// a deep queue would otherwise be copied on every dispatch.
	for b := s.queue.after(0); b != nil; b = s.queue.after(b.ID) {
		if s.classes.freeServers == 0 {
			return
		}
		if !b.queued || now.Before(b.NotBefore) {
			continue
		}
		if t := s.classes.match(b, now); t != nil {
			if !start(b, t) {
				return
			}
		}
	}
}

// Match returns the best target with a free slot for b, or nil.
// Native targets are preferred over emulated ones.
func (s *Scheduler) Match(b *Build, now time.Time) *Target {
	return s.classes.match(b, now)
}

// Refresh recomputes whether srv can take work after its Draining, Busy or
// PutAsideUntil changed.
func (s *Scheduler) Refresh(srv *Server) {
	if s.servers[srv.Name] == srv {
		s.classes.refresh(srv)
	}
}
