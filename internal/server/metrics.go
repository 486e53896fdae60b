package server

import (
	"github.com/kilnbuild/kiln/internal/platform"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// metrics are the metaserver's Prometheus series. Labels are bounded: build
// states, answer kinds and platform identity fields only.
type metrics struct {
	reg *prometheus.Registry

	submitted     *prometheus.CounterVec
	finished      *prometheus.CounterVec
	attempts      *prometheus.CounterVec
	queueWait     prometheus.Histogram
	dispatchDelay prometheus.Histogram
	cacheHits     prometheus.Counter
	cacheMisses   prometheus.Counter
	uploadBytes   prometheus.Counter
	commitSeconds prometheus.Histogram
	commitChanges prometheus.Counter
	downloadBytes prometheus.Counter
	targets       *prometheus.GaugeVec
	evicted       prometheus.Counter
	diskFull      prometheus.Gauge
	// Trust (verify.go): results by what became of them, disputes lost
	// by volunteers, build servers marked for it, builds verified.
	replicaResults *prometheus.CounterVec
	disputesLost   prometheus.Counter
	markedServers  prometheus.Gauge
	verified       *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_requests_total", Help: "Build requests accepted, by how they were answered (cached, joined, queued).",
		}, []string{"answer"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_builds_finished_total", Help: "Builds that reached a final state, by state.",
		}, []string{"state"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_attempts_finished_total", Help: "Attempts that ended, by outcome.",
		}, []string{"outcome"}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kiln_queue_wait_seconds", Help: "Time from a build's creation (or requeue) to its dispatch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 12),
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kiln_store_commit_seconds", Help: "Duration of each store transaction of the committer (one group commit, fsynced).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		commitChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_store_changes_total", Help: "State changes written by the committer (many share one transaction)."}),
		dispatchDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kiln_dispatch_latency_seconds", Help: "Time from the dispatch decision to the assignment being sent (includes the commit).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		cacheHits:     prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_cache_hits_total", Help: "Requests answered from the artifact cache."}),
		cacheMisses:   prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_cache_misses_total", Help: "Requests the cache could not answer."}),
		uploadBytes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_artifact_upload_bytes_total", Help: "Artifact bytes received from build servers."}),
		downloadBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_artifact_download_bytes_total", Help: "Artifact bytes sent to requesters."}),
		evicted:       prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_cache_evictions_total", Help: "Artifacts evicted from the cache (LRU, unpinned)."}),
		diskFull:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_store_disk_full", Help: "1 while commits find the disk full (writes refused, reads served), else 0."}),
		targets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_connected_targets", Help: "Connected build targets by platform.",
		}, platform.FilterFields),
		replicaResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_replica_results_total", Help: "Successful results recorded toward verification, by the verification they left the build in.",
		}, []string{"verification"}),
		disputesLost:  prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_disputes_lost_total", Help: "Results that lost a dispute other operators settled (their build server is marked)."}),
		markedServers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_build_servers_marked", Help: "Build servers marked for losing a dispute; see /buildservers."}),
		verified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_verification_ended_total", Help: "Builds whose verification ended, by outcome (verified, not_reproducible) and the results it took.",
		}, []string{"verification", "results"}),
	}
	m.reg.MustRegister(m.replicaResults, m.disputesLost, m.markedServers, m.verified)
	m.reg.MustRegister(m.submitted, m.finished, m.attempts, m.queueWait, m.dispatchDelay, m.commitSeconds, m.commitChanges,
		m.cacheHits, m.cacheMisses, m.uploadBytes, m.downloadBytes, m.targets, m.evicted, m.diskFull,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// targetLabels are the kiln_connected_targets label values of a target:
// its measured platform.FilterFields.
func targetLabels(info *kilnv1.SystemInfo) []string {
	out := make([]string, 0, len(platform.FilterFields))
	for _, pf := range platform.Registry {
		if pf.Filterable {
			out = append(out, pf.Measured(info))
		}
	}
	return out
}

// Register adds collectors declared elsewhere (the mail sender's) to the registry.
func (s *Server) Register(cs ...prometheus.Collector) { s.metrics.reg.MustRegister(cs...) }

// buildsCollector reports how many builds are in each state, read from the
// store's per-state counters at scrape time (O(states), no scan).
type buildsCollector struct{ s *Server }

var buildsDesc = prometheus.NewDesc("kiln_builds", "Builds by current state.", []string{"state"}, nil)

func (c buildsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- buildsDesc }

func (c buildsCollector) Collect(ch chan<- prometheus.Metric) {
	_ = c.s.st.View(func(tx store.Tx) error {
		counts, err := tx.CountBuildsByState()
		if err != nil {
			return err
		}
		for _, st := range kilnv1.BuildStates() {
			ch <- prometheus.MustNewConstMetric(buildsDesc, prometheus.GaugeValue, float64(counts[st]), st.Word())
		}
		return nil
	})
}

// MetricsHandler serves /metrics.
func (s *Server) MetricsHandler() http.Handler {
	s.metrics.reg.MustRegister(buildsCollector{s},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kiln_queue_depth", Help: "Builds waiting in the queue."}, func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return float64(s.sched.QueueLen())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kiln_running_builds", Help: "Attempts holding a lease."}, func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return float64(s.sched.Attempts())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kiln_connected_build_servers", Help: "Build servers with a live session."}, func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return float64(len(s.sessions))
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kiln_oldest_queued_seconds", Help: "Age of the oldest queued build."}, func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			if b := s.sched.Oldest(); b != nil {
				if ab := s.active[b.ID]; ab != nil {
					return s.now().Sub(ab.rec.GetBuild().GetCreatedAt().AsTime()).Seconds()
				}
			}
			return 0
		}),
	)
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{Registry: s.metrics.reg})
}

// counterValue reads a counter's current value.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
