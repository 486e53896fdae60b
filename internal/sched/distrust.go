package sched

// WithdrawTarget takes target id of the connected server srv out of
// matching until srv connects again (a new Hello builds a new Server):
// the metaserver no longer trusts srv with that target, for instance after
// an artifact that does not match the target's claimed platform. Attempts
// running on it keep their leases; the server's other targets stay. It
// reports whether srv offered the target and it was still matched.
func (s *Scheduler) WithdrawTarget(srv *Server, id string) bool {
	if s.servers[srv.Name] != srv {
		return false
	}
	for _, t := range srv.Targets {
		if t.ID == id && t.class != nil {
			s.classes.remove(t)
			return true
		}
	}
	return false
}
