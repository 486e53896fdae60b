package web

import (
	"context"
	"net/http"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

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
	// Charts are the queue, targets and cache hit ratio over the last day
	// and the build times per platform of the newest builds, as SVG.
	Charts []chart `json:"charts"`
	// BuildTimes is the data of the build-time chart.
	BuildTimes []distRow `json:"build_times"`
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
	v.Charts, v.BuildTimes = s.overviewCharts(ctx, now)
	s.respond(w, r, "overview", "Kiln build farm", "overview", v)
}

// overviewCharts draws the overview's charts. A metaserver that cannot
// answer for them leaves a note in their place instead of failing the
// page: the numbers above them still stand.
func (s *server) overviewCharts(ctx context.Context, now time.Time) ([]chart, []distRow) {
	var charts []chart
	hist, err := s.status.GetHistory(ctx, &kilnv1.GetHistoryRequest{Since: timestamppb.New(now.Add(-chartWindow))})
	if err != nil {
		s.log.Warn("overview: history", "error", err)
		charts = append(charts, emptyChart("chart-queue", "Queue, targets and cache over time", "The metaserver did not answer for its history."))
	} else {
		charts = historyCharts(hist.GetSamples(), now)
	}
	builds, _, err := s.listBuilds(ctx, &kilnv1.ListBuildsRequest{})
	if err != nil {
		s.log.Warn("overview: builds for the build times", "error", err)
	}
	rows := buildTimes(builds)
	return append(charts, distChart("chart-build-times", "Build time per platform, newest builds", rows)), rows
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
