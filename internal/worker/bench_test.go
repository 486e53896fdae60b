package worker

import (
	"log/slog"
	"os"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// BenchmarkNoopBuild measures what the build server adds to a build that
// does nothing: assignment to acknowledged result of a `true` step with one
// small artifact, source already in the mirror, over loopback gRPC.
func BenchmarkNoopBuild(b *testing.B) {
	f := startFake(b)
	url, commit := makeRepo(b, map[string]string{"hello": "hello\n"})
	cfg := testConfig(b, f)
	cfg.Logger = benchLogger()
	r := startClient(b, cfg)
	f.waitFor(b, "Hello", func() bool { return len(f.hellos) == 1 })
	rec := &kilnv1.Recipe{BuildSteps: []string{"true"}, Artifacts: []string{"hello"}, TimeoutSeconds: 60}
	run := func(id uint64) {
		f.push(b, assign(assignment(id, url, commit, rec)))
		res := f.waitResult(b, id)
		if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
			b.Fatalf("outcome %v: %s", res.GetOutcome(), res.GetReason())
		}
		waitIdle(b, r.c)
	}
	run(1) // clones the mirror
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		run(uint64(i + 2))
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N)/1000, "ms/build")
}

// benchLogger logs at debug level to stderr when KILN_BENCH_DEBUG is set
// (to see the per-phase timings), else only warnings.
func benchLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("KILN_BENCH_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
