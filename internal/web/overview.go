package web

import (
	"net/http"
	"slices"
	"sort"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// overviewView is the data of / and /metaserverstatus.
type overviewView struct {
	Overview pbOverview `json:"overview"`
	// BuildsByState lists every known state in lifecycle order (zero counts
	// included), then any state name the metaserver reports that this
	// version does not know.
	BuildsByState []stateCount `json:"builds_by_state"`
	// CacheHitRatio is hits/(hits+misses); null before the first lookup.
	CacheHitRatio *float64 `json:"cache_hit_ratio"`
	// OldestWaitSeconds is how long the oldest queued build has waited;
	// null when the queue is empty.
	OldestWaitSeconds *float64 `json:"oldest_wait_seconds"`
	UptimeSeconds     *float64 `json:"uptime_seconds"`
	// BuildServers are the connected build servers with their targets.
	BuildServers []pbServer `json:"build_servers"`
}

// stateCount is one row of the builds-by-state table.
type stateCount struct {
	State string `json:"state"`
	Count uint64 `json:"count"`
}

func (s *server) handleOverview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.rpcContext(r)
	defer cancel()
	ov, err := s.status.GetOverview(ctx, &kilnv1.GetOverviewRequest{})
	if err != nil {
		s.writeError(w, r, fromRPC(err, "overview"))
		return
	}
	servers, err := s.status.ListBuildServers(ctx, &kilnv1.ListBuildServersRequest{})
	if err != nil {
		s.writeError(w, r, fromRPC(err, "build server list"))
		return
	}
	now := s.now()
	v := overviewView{Overview: pbOverview{ov}, BuildsByState: countStates(ov.GetBuildsByState())}
	if n := ov.GetCacheHits() + ov.GetCacheMisses(); n > 0 {
		ratio := float64(ov.GetCacheHits()) / float64(n)
		v.CacheHitRatio = &ratio
	}
	if ts := ov.GetOldestQueuedAt(); ts != nil {
		wait := now.Sub(ts.AsTime()).Seconds()
		v.OldestWaitSeconds = &wait
	}
	if ts := ov.GetStartedAt(); ts != nil {
		up := now.Sub(ts.AsTime()).Seconds()
		v.UptimeSeconds = &up
	}
	for _, bs := range servers.GetBuildServers() {
		if bs.GetConnected() {
			v.BuildServers = append(v.BuildServers, pbServer{bs})
		}
	}
	if v.BuildServers == nil {
		v.BuildServers = []pbServer{}
	}
	s.respond(w, r, "overview", "Kiln build farm", "overview", v)
}

// countStates orders the metaserver's state counts for display.
func countStates(m map[string]uint64) []stateCount {
	known := stateWords()
	out := make([]stateCount, 0, len(known)+len(m))
	for _, st := range known {
		out = append(out, stateCount{State: st, Count: m[st]})
	}
	var extra []string
	for k := range m {
		if !slices.Contains(known, k) {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	for _, k := range extra {
		out = append(out, stateCount{State: k, Count: m[k]})
	}
	return out
}
