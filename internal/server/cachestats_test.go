package server

import (
	"testing"

	"google.golang.org/protobuf/proto"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// TestAnAttemptKeepsItsCompilerCacheStatistics: what the build server
// reports of its compiler cache with the result stays on the attempt, for
// the build page; an attempt that reports none shows none.
func TestAnAttemptKeepsItsCompilerCacheStatistics(t *testing.T) {
	ts := startTestServer(t, Config{}, queuedBuild(1, "hello", 60))
	ss := ts.connect("bs", nil)
	attempt := ss.assignment().GetAttemptId()
	data := payload(100, 1)
	res := inlineResult(attempt, data, data)
	stats := &kilnv1.CompilerCacheStats{Hits: 41, Misses: 2, Uncacheable: 5}
	res.CompilerCache = stats

	ss.report(res)

	b := ts.build(1)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
		t.Fatalf("build %v; want succeeded", b.GetState())
	}
	if got := b.GetAttempts()[0].GetCompilerCache(); !proto.Equal(got, stats) {
		t.Fatalf("attempt's compiler cache statistics %v; want %v", got, stats)
	}

	ts2 := startTestServer(t, Config{}, queuedBuild(2, "hello", 60))
	ss2 := ts2.connect("bs", nil)
	ss2.report(inlineResult(ss2.assignment().GetAttemptId(), data, data))
	if got := ts2.build(2).GetAttempts()[0].GetCompilerCache(); got != nil {
		t.Fatalf("an attempt that reported no compiler cache shows %v", got)
	}
}
