package sched

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// class is a set of targets that a build either fits or does not, as a
// whole: same measured platform identity, same tools, same policy.
type class struct {
	key     string
	info    *kilnv1.SystemInfo
	policy  *kilnv1.BuildServerPolicy
	members map[*Target]struct{}
	// free holds the members whose server can take work now.
	free map[*Target]struct{}
}

type classes struct {
	byKey map[string]*class
	// native and emulated keep match order stable: native first.
	native, emulated []*class
	targets          int
	freeSet          map[*Server]bool
	freeServers      int
}

func newClasses() classes {
	return classes{byKey: map[string]*class{}, freeSet: map[*Server]bool{}}
}

func classKey(t *Target) string {
	var b strings.Builder
	b.Write(platform.IdentityKey(t.Info))
	b.WriteByte(0)
	tools := make([]string, 0, len(t.Info.GetTools()))
	for name := range t.Info.GetTools() {
		tools = append(tools, name)
	}
	sort.Strings(tools)
	b.WriteString(strings.Join(tools, ","))
	b.WriteByte(0)
	if t.Info.GetEmulated() {
		b.WriteByte('e')
	}
	b.WriteByte(0)
	if p := t.Server.Policy; p != nil {
		raw, _ := proto.MarshalOptions{Deterministic: true}.Marshal(p)
		b.Write(raw)
	}
	return b.String()
}

func (cs *classes) add(t *Target) {
	key := classKey(t)
	c, ok := cs.byKey[key]
	if !ok {
		c = &class{key: key, info: t.Info, policy: t.Server.Policy, members: map[*Target]struct{}{}, free: map[*Target]struct{}{}}
		cs.byKey[key] = c
		if t.Info.GetEmulated() {
			cs.emulated = append(cs.emulated, c)
		} else {
			cs.native = append(cs.native, c)
		}
	}
	t.class = c
	c.members[t] = struct{}{}
	cs.targets++
}

func (cs *classes) remove(t *Target) {
	c := t.class
	if c == nil {
		return
	}
	delete(c.members, t)
	delete(c.free, t)
	t.class = nil
	cs.targets--
	if len(c.members) == 0 {
		delete(cs.byKey, c.key)
		cs.native = without(cs.native, c)
		cs.emulated = without(cs.emulated, c)
	}
}

func without(list []*class, c *class) []*class {
	for i, x := range list {
		if x == c {
			return append(list[:i], list[i+1:]...)
		}
	}
	return list
}

func (cs *classes) refresh(srv *Server) { cs.setFree(srv, srv.canTake()) }

func (cs *classes) setFree(srv *Server, free bool) {
	if cs.freeSet[srv] != free {
		if free {
			cs.freeSet[srv] = true
			cs.freeServers++
		} else {
			delete(cs.freeSet, srv)
			cs.freeServers--
		}
	}
	for _, t := range srv.Targets {
		if t.class == nil {
			continue
		}
		if free {
			t.class.free[t] = struct{}{}
		} else {
			delete(t.class.free, t)
		}
	}
}

func (cs *classes) match(b *Build, now time.Time) *Target {
	for _, list := range [2][]*class{cs.native, cs.emulated} {
		for _, c := range list {
			if len(c.free) == 0 || !fits(c, b) {
				continue
			}
			for t := range c.free {
				if b.skips(t.Server, now) {
					continue
				}
				return t
			}
		}
	}
	return nil
}

// fitsAny reports whether any connected class fits b, free or not.
func (cs *classes) fitsAny(b *Build) bool {
	for _, list := range [2][]*class{cs.native, cs.emulated} {
		for _, c := range list {
			if fits(c, b) {
				return true
			}
		}
	}
	return false
}

// fits reports whether builds of b's kind may run on c's targets at all.
func fits(c *class, b *Build) bool {
	return platform.Satisfies(c.info, b.Constraints) && c.info.MissingTool(b.Requires) == "" && refusal(c.policy, b) == ""
}

// refusal returns why a volunteer's policy refuses b, or "" (the rule is
// kilnv1.BuildServerPolicy.Refusal, which the build server applies again).
func refusal(p *kilnv1.BuildServerPolicy, b *Build) string {
	return p.Refusal(b.Project, b.Options, b.TimeoutSeconds)
}

// WaitingReasons says why no target took b: for each unmet constraint how
// many connected targets fail it, then tools, policy, exclusions and load.
func (s *Scheduler) WaitingReasons(b *Build, now time.Time) []string {
	total := s.classes.targets
	if total == 0 {
		return []string{"no build server is connected"}
	}
	fail := map[string]int{}
	var order []string
	note := func(reason string, n int) {
		if _, ok := fail[reason]; !ok {
			order = append(order, reason)
		}
		fail[reason] += n
	}
	fitting, fittingFree := 0, 0
	operators := map[string]bool{}
	for _, list := range [2][]*class{s.classes.native, s.classes.emulated} {
		for _, c := range list {
			n := len(c.members)
			ok := true
			for _, field := range platform.Unmet(c.info, b.Constraints) {
				note(fmt.Sprintf("%s=%s", field, platform.Get(b.Constraints, field)), n)
				ok = false
			}
			if tool := c.info.MissingTool(b.Requires); tool != "" {
				note("requires "+tool, n)
				ok = false
			}
			if r := refusal(c.policy, b); r != "" {
				note("policy: "+r, n)
				ok = false
			}
			if ok {
				fitting += n
				for t := range c.members {
					operators[t.Server.Operator] = true
				}
				for t := range c.free {
					if !b.skips(t.Server, now) {
						fittingFree++
					}
				}
			}
		}
	}
	var out []string
	for _, reason := range order {
		out = append(out, fmt.Sprintf("%s: %d of %d connected targets do not match", reason, fail[reason], total))
	}
	if b.Replica {
		for op := range b.HaveOperators {
			operators[op] = true
		}
		out = append(out, fmt.Sprintf("verification: %d of %d operators have a matching target", min(len(operators), max(b.Quorum, len(b.HaveOperators))), max(b.Quorum, len(b.HaveOperators)+1)))
	}
	switch {
	case fitting == 0:
		out = append(out, "no connected target matches")
	case fittingFree == 0:
		out = append(out, fmt.Sprintf("all %d matching targets are busy, excluded or put aside", fitting))
	case now.Before(b.NotBefore):
		out = append(out, "retry delayed until "+b.NotBefore.UTC().Format(time.RFC3339))
	}
	return out
}
