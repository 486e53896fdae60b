package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// TestFaultSoak submits many builds while faults hit the farm at random:
// build servers killed and restarted, the metaserver killed and restarted,
// connections cut. Every acknowledged build must end in exactly one final
// state with its artifact stored once. KILN_SOAK_BUILDS sets the count
// (default 200).
func TestFaultSoak(t *testing.T) {
	n := 200
	if v, err := strconv.Atoi(os.Getenv("KILN_SOAK_BUILDS")); err == nil && v > 0 {
		n = v
	}
	manifest := `options:
  n: {type: int, default: 0}
build:
  - echo "build $KILN_OPT_N" > out.txt
artifacts: [out.txt]
timeout: 1m
`
	f, _ := faultFarm(t, manifest, "1500ms")
	type builder struct {
		proc  *farmtest.Process
		proxy *faultProxy
	}
	var builders []builder
	for i := 0; i < 3; i++ {
		proxy := newFaultProxy(t, f.Meta().Addr)
		p := f.StartBuildserver(f.AddBuildServer("soak-"+strconv.Itoa(i)), "--metaserver", proxy.Addr(), "--jobs", "2")
		builders = append(builders, builder{p, proxy})
	}
	f.WaitBuildServers(3)
	client := kilnv1.NewCompileServiceClient(f.Conn())
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()

	// Submit every build, retrying until acknowledged (a retry of a request
	// whose answer was lost joins the same build).
	acked := make([]uint64, n)
	faults := map[string]int{}
	var mu sync.Mutex
	for i := 0; i < n; i++ {
		err := farmtest.Poll(60*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := client.Submit(ctx, &kilnv1.SubmitRequest{Project: "hello", Email: fmt.Sprintf("soak-%d@example.com", i),
				Options: map[string]string{"n": strconv.Itoa(i)}})
			if err != nil {
				return err
			}
			acked[i] = resp.GetBuild().GetId()
			return nil
		})
		if err != nil {
			t.Fatalf("request %d never acknowledged: %v", i, err)
		}
		if i%8 == 7 { // a fault every few builds
			b := builders[rng.IntN(len(builders))]
			switch k := rng.IntN(10); {
			case k < 4:
				b.proc.Kill()
				if err := b.proc.Restart(); err != nil {
					t.Fatal(err)
				}
				faults["buildserver killed"]++
			case k < 5:
				f.Meta().Process.Kill()
				f.Meta().Restart()
				faults["metaserver killed"]++
			default:
				b.proxy.Cut()
				d := time.Duration(200+rng.IntN(2500)) * time.Millisecond
				mu.Lock()
				faults["connection cut"]++
				mu.Unlock()
				go func() { time.Sleep(d); b.proxy.Heal() }()
			}
		}
	}
	for _, b := range builders {
		b.proxy.Heal()
	}

	// Every acknowledged build ends, exactly once, with its artifact.
	lost, duplicated := 0, 0
	seen := map[uint64]bool{}
	for i, id := range acked {
		var b *kilnv1.Build
		err := farmtest.Poll(3*time.Minute, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := client.GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: id})
			if err != nil {
				return err
			}
			b = resp.GetBuild()
			if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
				return fmt.Errorf("build %d (request %d) is %s: %s", id, i, b.GetState(), outcomes(b))
			}
			return nil
		})
		if err != nil {
			lost++
			t.Errorf("%v", err)
			continue
		}
		succeeded := 0
		for _, a := range b.GetAttempts() {
			if a.GetOutcome() == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
				succeeded++
			}
		}
		if succeeded != 1 || seen[id] {
			duplicated++
			t.Errorf("build %d: %d succeeded attempts (%s), seen before %v", id, succeeded, outcomes(b), seen[id])
		}
		seen[id] = true
		if _, err := os.Stat(blobPath(f.MetaDataDir(), b.GetArtifact().GetSha256())); err != nil {
			lost++
			t.Errorf("build %d: artifact missing: %v", id, err)
		}
	}
	if got := len(listBuilds(t, f)); got != n {
		duplicated += max(got-n, 0)
		t.Errorf("%d builds stored for %d distinct requests", got, n)
	}
	total := 0
	for _, c := range faults {
		total += c
	}
	t.Logf("soak: builds=%d faults=%d %v lost=%d duplicated=%d time=%s", n, total, faults, lost, duplicated, time.Since(start).Round(time.Millisecond))
	fmt.Printf("soak: builds=%d faults=%d %v lost=%d duplicated=%d time=%s\n", n, total, faults, lost, duplicated, time.Since(start).Round(time.Millisecond))
}
