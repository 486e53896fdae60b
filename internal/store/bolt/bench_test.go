package bolt_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// benchBuild is a build record of realistic size (about 400 bytes).
func benchBuild(id uint64) *store.Build {
	return &store.Build{
		Build: &kilnv1.Build{
			Id: id, Project: fmt.Sprintf("project-%d", id%50), Revision: "main",
			Commit:      "0123456789abcdef0123456789abcdef01234567",
			Options:     map[string]string{"opt": "O2", "debug": "no", "lto": "yes"},
			Constraints: &kilnv1.PlatformConstraints{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64"},
			State:       kilnv1.BuildState_BUILD_STATE_QUEUED,
		},
		Recipe:    &kilnv1.Recipe{BuildSteps: []string{"./configure", "make"}, CheckSteps: []string{"make check"}},
		SourceKey: fmt.Sprintf("%064x", id%20000),
		GitUrl:    "https://example.invalid/project.git",
	}
}

func benchArtifact(i int) *store.Artifact {
	return &store.Artifact{
		CacheKey:  fmt.Sprintf("%064x", i),
		SourceKey: fmt.Sprintf("%064x", i/4), // four platforms per source
		BuildId:   uint64(i + 1),
		Artifact:  &kilnv1.Artifact{Sha256: fmt.Sprintf("%064x", i), Size: 1 << 20, Files: []string{"bin/tool", "lib/libtool.so"}},
		Platform:  &kilnv1.SystemInfo{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", Libc: "glibc", LibcVersion: "2.36"},
		Project:   "project", Commit: "0123456789abcdef0123456789abcdef01234567",
	}
}

// fill writes n records through put in transactions of 5,000.
func fill(b *testing.B, db *bolt.DB, n int, put func(tx store.Tx, i int) error) {
	b.Helper()
	for start := 0; start < n; start += 5000 {
		err := db.Update(func(tx store.Tx) error {
			for i := start; i < min(start+5000, n); i++ {
				if err := put(tx, i); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdatePutBuild is one acknowledged build per fsynced commit.
func BenchmarkUpdatePutBuild(b *testing.B) {
	db := openT(b, filepath.Join(b.TempDir(), "kiln.db"), bolt.Options{})
	start := time.Now()
	n := 0
	for b.Loop() {
		err := db.Update(func(tx store.Tx) error {
			id, err := tx.NextID("build")
			if err != nil {
				return err
			}
			return tx.PutBuild(benchBuild(id))
		})
		if err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "builds/s")
}

// BenchmarkGetBuild reads one random build among 100,000 in its own View.
func BenchmarkGetBuild(b *testing.B) {
	const n = 100_000
	db := openT(b, filepath.Join(b.TempDir(), "kiln.db"), bolt.Options{NoSync: true})
	fill(b, db, n, func(tx store.Tx, i int) error { return tx.PutBuild(benchBuild(uint64(i + 1))) })
	rng := rand.New(rand.NewPCG(1, 2))
	for b.Loop() {
		id := rng.Uint64N(n) + 1
		err := db.View(func(tx store.Tx) error {
			bld, err := tx.Build(id)
			if err == nil && bld.GetBuild().GetId() != id {
				err = fmt.Errorf("asked for %d, got %d", id, bld.GetBuild().GetId())
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkArtifactsBySource looks up the four artifacts of one random
// source among 100,000 artifacts.
func BenchmarkArtifactsBySource(b *testing.B) {
	const n = 100_000
	db := openT(b, filepath.Join(b.TempDir(), "kiln.db"), bolt.Options{NoSync: true})
	fill(b, db, n, func(tx store.Tx, i int) error { return tx.PutArtifact(benchArtifact(i)) })
	rng := rand.New(rand.NewPCG(1, 2))
	for b.Loop() {
		src := fmt.Sprintf("%064x", rng.IntN(n/4))
		err := db.View(func(tx store.Tx) error {
			as, err := tx.ArtifactsBySource(src)
			if err == nil && len(as) != 4 {
				err = fmt.Errorf("source %s: %d artifacts, want 4", src, len(as))
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListBuildsByProject lists the newest 50 builds of one project
// among 100,000 builds of 50 projects (the status page's query).
func BenchmarkListBuildsByProject(b *testing.B) {
	const n = 100_000
	db := openT(b, filepath.Join(b.TempDir(), "kiln.db"), bolt.Options{NoSync: true})
	fill(b, db, n, func(tx store.Tx, i int) error { return tx.PutBuild(benchBuild(uint64(i + 1))) })
	rng := rand.New(rand.NewPCG(1, 2))
	for b.Loop() {
		f := store.BuildFilter{Project: fmt.Sprintf("project-%d", rng.IntN(50))}
		err := db.View(func(tx store.Tx) error {
			bs, err := tx.ListBuilds(f, 0, 50)
			if err == nil && len(bs) != 50 {
				err = fmt.Errorf("%+v: %d builds, want 50", f, len(bs))
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// cycleServers is how many build servers BenchmarkCommitCycles counts
// results for, as the loadtest's sim scenario.
const cycleServers = 1000

// cycleBatch is how many builds enter, get dispatched and finish in each
// commit of BenchmarkCommitCycles.
const cycleBatch = 32

// BenchmarkCommitCycles replays the metaserver's writes for the sim
// scenario's dispatch + result cycle through its group commit: each
// fsynced Update carries cycleBatch submits (request id, QUEUED build,
// request), the dispatches of the builds submitted one commit earlier
// (RUNNING with an attempt) and the results of those dispatched one commit
// earlier (final build, cache entry, inline blob, requests marked notified,
// the build server's counter). One op is one commit; the metrics are per
// cycle (one build through all three stages): CPU of the whole process
// (user + system, so the kernel's share of pwrite and fdatasync counts) and
// pages written.
func BenchmarkCommitCycles(b *testing.B) {
	db := openT(b, filepath.Join(b.TempDir(), "kiln.db"), bolt.Options{})
	servers := make([]string, cycleServers)
	err := db.Update(func(tx store.Tx) error {
		for i := range servers {
			servers[i] = fmt.Sprintf("sim-%04d", i)
			err := tx.CreateBuildServer(&store.BuildServer{Name: servers[i], TokenHash: fmt.Sprintf("%064x", i+1<<40),
				Targets: []*kilnv1.Target{{Id: "t0", System: cyclePlatform}}})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	var queued, running []*store.Build // submitted / dispatched by the previous commit
	next := uint64(1)
	cycles := 0
	pages0, cpu0 := db.PagesWritten(), cpuTime(b)
	for b.Loop() {
		var submitted, dispatched []*store.Build
		err := db.Update(func(tx store.Tx) error {
			submitted, dispatched = submitted[:0], dispatched[:0]
			for range cycleBatch {
				rec := cycleBuild(next)
				next++
				if err := tx.PutBuild(rec); err != nil {
					return err
				}
				reqID, err := tx.NextID("request")
				if err != nil {
					return err
				}
				if err := tx.PutRequest(&store.Request{Id: reqID, BuildId: rec.Build.Id, Email: "load@example.invalid", CreatedAt: rec.Build.CreatedAt}); err != nil {
					return err
				}
				submitted = append(submitted, rec)
			}
			for i, q := range queued {
				rec := proto.Clone(q).(*store.Build)
				rec.Build.State = kilnv1.BuildState_BUILD_STATE_RUNNING
				rec.Build.StartedAt = timestamppb.Now()
				rec.Build.Platform = cyclePlatform
				rec.Build.Attempts = append(rec.Build.Attempts, &kilnv1.Attempt{Id: rec.Build.Id<<8 | 1,
					BuildServer: servers[(int(rec.Build.Id)+i)%cycleServers], TargetId: "t0",
					Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RUNNING, StartedAt: rec.Build.StartedAt})
				if err := tx.PutBuild(rec); err != nil {
					return err
				}
				dispatched = append(dispatched, rec)
			}
			for _, r := range running {
				if err := finishCycle(tx, r); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		cycles += len(running)
		queued, running = submitted, dispatched
	}
	if cycles > 0 {
		b.ReportMetric(float64(cpuTime(b)-cpu0)/1e3/float64(cycles), "cpu-µs/cycle")
		b.ReportMetric(float64(db.PagesWritten()-pages0)/float64(cycles), "pages/cycle")
	}
}

var cyclePlatform = &kilnv1.SystemInfo{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", Libc: "glibc", LibcVersion: "2.36"}

// cycleBuild is a QUEUED build as the sim scenario submits them: one
// project, a distinct option per build, so a distinct source key.
func cycleBuild(id uint64) *store.Build {
	opts := map[string]string{"n": fmt.Sprint(id)}
	return &store.Build{
		Build: &kilnv1.Build{
			Id: id, Project: "load", Revision: "0123456789abcdef0123456789abcdef01234567",
			Commit: "0123456789abcdef0123456789abcdef01234567", Options: opts,
			Constraints: &kilnv1.PlatformConstraints{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", Libc: "glibc"},
			State:       kilnv1.BuildState_BUILD_STATE_QUEUED, CreatedAt: timestamppb.Now(),
		},
		Recipe:    &kilnv1.Recipe{BuildSteps: []string{"true"}},
		SourceKey: digest("source", id),
		GitUrl:    "file:///srv/git/load.git",
	}
}

// finishCycle writes what the metaserver writes when r's attempt succeeds.
func finishCycle(tx store.Tx, r *store.Build) error {
	rec := proto.Clone(r).(*store.Build)
	id := rec.Build.Id
	now := timestamppb.Now()
	att := rec.Build.Attempts[len(rec.Build.Attempts)-1]
	att.Outcome, att.FinishedAt = kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED, now
	blob := fmt.Appendf(nil, "loadtest artifact of build %d attempt %d\n", id, att.Id)
	rec.Build.State, rec.Build.FinishedAt = kilnv1.BuildState_BUILD_STATE_SUCCEEDED, now
	rec.Build.Artifact = &kilnv1.Artifact{Sha256: digest("blob", id), Size: uint64(len(blob)), Files: []string{"out.txt"}}
	rec.Build.CacheKey = digest("cache", id)
	server, err := tx.BuildServer(att.BuildServer)
	if err != nil {
		return err
	}
	server.BuildsSucceeded++
	if err := tx.PutBuildServer(server); err != nil {
		return err
	}
	if err := tx.PutBuild(rec); err != nil {
		return err
	}
	err = tx.PutArtifact(&store.Artifact{CacheKey: rec.Build.CacheKey, SourceKey: rec.SourceKey, BuildId: id,
		Artifact: rec.Build.Artifact, Platform: rec.Build.Platform, Project: rec.Build.Project, Commit: rec.Build.Commit,
		CreatedAt: now, LastUsed: now})
	if err != nil {
		return err
	}
	if err := tx.PutBlob(rec.Build.Artifact.Sha256, blob); err != nil {
		return err
	}
	reqs, err := tx.RequestsForBuild(id)
	if err != nil {
		return err
	}
	for _, q := range reqs {
		q.Notified = true
		if err := tx.PutRequest(q); err != nil {
			return err
		}
	}
	return nil
}

// digest is a sha256-like hex key, random-looking as real ones are.
func digest(kind string, id uint64) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s %d", kind, id))
	return hex.EncodeToString(sum[:])
}

// cpuTime is the process's user + system CPU time in nanoseconds.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkPutSampleFullRing is the metaserver's sample of a minute once
// a day of them is kept: one put and one delete of the oldest among
// 1,440, in a transaction without fsync (the committer's transaction
// carries it with whatever else it commits).
func BenchmarkPutSampleFullRing(b *testing.B) {
	const keep = 1440
	db := openT(b, filepath.Join(b.TempDir(), "kiln.db"), bolt.Options{NoSync: true})
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	put := func() {
		at = at.Add(time.Minute)
		err := db.Update(func(tx store.Tx) error {
			return tx.PutSample(&store.Sample{At: timestamppb.New(at), QueueLength: 3, ConnectedTargets: 4, CacheHits: 1}, keep)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	for range keep {
		put()
	}
	for b.Loop() {
		put()
	}
}
