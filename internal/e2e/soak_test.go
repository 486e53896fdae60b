package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kilnbuild/kiln/internal/auth"
	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/store/pgstore"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// soakManifest builds at once: the soak is about faults, not build time.
const soakManifest = `options:
  n: {type: int, default: 0}
build:
  - echo "build $KILN_OPT_N" > out.txt
artifacts: [out.txt]
timeout: 1m
`

// soakArgs are the soak metaservers' flags: a short lease, so that a
// lost attempt goes elsewhere within the test's time, and short
// penalties. The faults come every few builds, so each build server
// loses attempts in a row (metaserver kills and link cuts count against
// it) and would be put aside for the default 5 minutes, or excluded from
// a build for 10 after an upload cut: with all three out, a build waits
// past the test's bound (seen with a load average of 11).
var soakArgs = []string{"--heartbeat", "200ms", "--lease", "1500ms", "--inline-artifact-bytes", "0", "--aside-for", "2s", "--exclude-for", "2s"}

// soakFarm is a farm of one storage layout as the soak drives it.
type soakFarm struct {
	f *farmtest.Farm
	// metas are the metaservers; addrs is the --metaserver value clients
	// get (every metaserver's address).
	metas []*farmtest.Metaserver
	// metaFault hits the metaservers (the fault's kind is its n-th) and
	// returns once they serve again, naming what it did.
	metaFault func(t *testing.T, n int) string
	// stored checks that the artifact sha is in the blob store.
	stored func(t *testing.T, sha string) error
}

// soakBuilds is the builds count: KILN_SOAK_BUILDS, else def.
func soakBuilds(def int) int {
	if v, err := strconv.Atoi(os.Getenv("KILN_SOAK_BUILDS")); err == nil && v > 0 {
		return v
	}
	return def
}

// TestFaultSoak submits many builds while faults hit the farm at random:
// build servers killed and restarted, metaservers killed and restarted,
// connections cut. Every acknowledged build must end in exactly one final
// state with its artifact stored once. It runs on both storage layouts:
// bbolt and a blob directory under one metaserver, and PostgreSQL and an
// S3 bucket (versitygw) under two metaservers, one the writer and one a
// standby, where the faults kill the writer (the standby takes over) and
// restart it gracefully. KILN_SOAK_BUILDS sets the count of each layout
// (default 200).
func TestFaultSoak(t *testing.T) {
	t.Run("bbolt+directory", func(t *testing.T) {
		f := farmtest.New(t)
		f.StartMetaserver(soakArgs...)
		repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{ManifestText: soakManifest})
		f.AddProject("hello", repo)
		soak(t, soakBuilds(200), &soakFarm{
			f:     f,
			metas: []*farmtest.Metaserver{f.Meta()},
			metaFault: func(t *testing.T, _ int) string {
				if err := f.Meta().Process.Kill(); err != nil {
					t.Fatal(err)
				}
				f.Meta().Restart()
				return "metaserver killed"
			},
			stored: func(_ *testing.T, sha string) error {
				_, err := os.Stat(blobPath(f.MetaDataDir(), sha))
				return err
			},
		})
	})
	t.Run("postgres+s3", func(t *testing.T) {
		sf := newScaledFarm(t)
		// Both metaservers are standbys: the first finds the lock free and
		// writes; each restarts as a standby of the other.
		a := sf.StartMetaserver(append([]string{"--standby"}, soakArgs...)...)
		b := sf.StartStandby(soakArgs...)
		repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{ManifestText: soakManifest})
		sf.AddProject("hello", repo)
		s3c := sf.s3Client(t)
		soak(t, soakBuilds(200), &soakFarm{
			f:     sf.Farm,
			metas: []*farmtest.Metaserver{a, b},
			metaFault: func(t *testing.T, n int) string {
				w, other := a, b
				if writerAddr(t, sf.StoreURL) == b.Addr {
					w, other = b, a
				}
				if n%2 == 0 {
					// kill -9: the lock goes with its connection and the
					// other takes over; then the killed one comes back, a
					// standby (it may win the lock itself when restarted at
					// once: the test waits for the takeover first).
					killed := time.Now()
					if err := w.Process.Kill(); err != nil {
						t.Fatal(err)
					}
					waitWriter(t, sf.StoreURL, other.Addr)
					t.Logf("writer %s killed: %s took over within %s", w.Addr, other.Addr, time.Since(killed).Round(time.Millisecond))
					w.Restart()
					return "writer killed"
				}
				// SIGTERM: the writer hands over and comes back a standby.
				stopped := time.Now()
				if err := w.Process.Stop(); err != nil {
					t.Fatalf("writer on SIGTERM: %v", err)
				}
				waitWriter(t, sf.StoreURL, other.Addr)
				t.Logf("writer %s stopped (SIGTERM): %s took over within %s", w.Addr, other.Addr, time.Since(stopped).Round(time.Millisecond))
				w.Restart()
				return "writer restarted"
			},
			stored: func(t *testing.T, sha string) error {
				_, err := s3c.StatObject(t.Context(), sf.bucket, "blobs/"+sha, minio.StatObjectOptions{})
				return err
			},
		})
	})
}

// writerAddr is the address of the metaserver holding the store's writer
// lock, as the database names it ("" while none does).
func writerAddr(t *testing.T, storeURL string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	e, held, err := pgstore.Writer(ctx, storeURL)
	if err != nil {
		t.Fatalf("finding the writer: %v", err)
	}
	if !held {
		return ""
	}
	return e.Addr
}

// waitWriter waits until the metaserver at addr is the store's writer.
func waitWriter(t *testing.T, storeURL, addr string) {
	t.Helper()
	farmtest.Eventually(t, 30*time.Second, func() error {
		if got := writerAddr(t, storeURL); got != addr {
			return errorf("the writer is %q, want %s", got, addr)
		}
		return nil
	})
}

// soak is TestFaultSoak's body on one layout: n builds, a fault every few.
func soak(t *testing.T, n int, sf *soakFarm) {
	f := sf.f
	var addrs []string
	for _, m := range sf.metas {
		addrs = append(addrs, m.Addr)
	}
	// The build servers reach each metaserver through a proxy of their
	// own (a cut cuts them all); the test's client is given every address,
	// as startcompile would be.
	type builder struct {
		proc    *farmtest.Process
		proxies []*faultProxy
	}
	var builders []builder
	for i := 0; i < 3; i++ {
		var proxies []*faultProxy
		var via []string
		for _, a := range addrs {
			p := newFaultProxy(t, a)
			proxies = append(proxies, p)
			via = append(via, p.Addr())
		}
		p := f.StartBuildserver(f.AddBuildServer("soak-"+strconv.Itoa(i)), "--metaserver", strings.Join(via, ","), "--jobs", "2")
		builders = append(builders, builder{p, proxies})
	}
	f.WaitBuildServers(3)
	target, opts, err := auth.MetaserverTarget(strings.Join(addrs, ","))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(target, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := kilnv1.NewCompileServiceClient(conn)
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()

	// Submit every build, retrying until acknowledged (a retry of a request
	// whose answer was lost joins the same build).
	acked := make([]uint64, n)
	faults := map[string]int{}
	var mu sync.Mutex
	metaFaults := 0
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
		if i%8 != 7 { // a fault every few builds
			continue
		}
		if i%24 == 23 { // every third fault hits the metaservers
			kind := sf.metaFault(t, metaFaults)
			metaFaults++
			faults[kind]++
			continue
		}
		b := builders[rng.IntN(len(builders))]
		if rng.IntN(9) < 4 {
			b.proc.Kill()
			if err := b.proc.Restart(); err != nil {
				t.Fatal(err)
			}
			faults["buildserver killed"]++
			continue
		}
		for _, p := range b.proxies {
			p.Cut()
		}
		d := time.Duration(200+rng.IntN(2500)) * time.Millisecond
		mu.Lock()
		faults["connection cut"]++
		mu.Unlock()
		go func() {
			time.Sleep(d)
			for _, p := range b.proxies {
				p.Heal()
			}
		}()
	}
	for _, b := range builders {
		for _, p := range b.proxies {
			p.Heal()
		}
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
		if err := sf.stored(t, b.GetArtifact().GetSha256()); err != nil {
			lost++
			t.Errorf("build %d: artifact missing: %v", id, err)
		}
	}
	// Every stored build, page by page (KILN_SOAK_BUILDS may exceed a page).
	got, token := 0, ""
	for page := 0; page == 0 || token != ""; page++ {
		if page > n/100+10 {
			t.Fatalf("ListBuilds: more than %d pages for %d builds", page, n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		list, err := kilnv1.NewStatusServiceClient(conn).ListBuilds(ctx, &kilnv1.ListBuildsRequest{PageSize: 100, PageToken: token})
		cancel()
		if err != nil {
			t.Fatalf("ListBuilds: %v", err)
		}
		got += len(list.GetBuilds())
		token = list.GetNextPageToken()
	}
	if got != n {
		duplicated += max(got-n, 0)
		t.Errorf("%d builds stored for %d distinct requests", got, n)
	}
	total := 0
	for _, c := range faults {
		total += c
	}
	line := fmt.Sprintf("soak %s: builds=%d faults=%d %v lost=%d duplicated=%d time=%s", t.Name(), n, total, faults, lost, duplicated, time.Since(start).Round(time.Millisecond))
	t.Log(line)
	fmt.Println(line)
}
