package bolt_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"testing"
	"time"

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

// BenchmarkBatchPutBuild is 64 concurrent callers each acknowledging one
// build per Batch, fsync on.
func BenchmarkBatchPutBuild(b *testing.B) {
	db := openT(b, filepath.Join(b.TempDir(), "kiln.db"), bolt.Options{})
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			err := db.Batch(func(tx store.Tx) error {
				id, err := tx.NextID("build")
				if err != nil {
					return err
				}
				return tx.PutBuild(benchBuild(id))
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "builds/s")
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
