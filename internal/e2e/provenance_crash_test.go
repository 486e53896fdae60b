package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/metadata"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/translog"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const crashManifest = `options:
  round: {type: int, default: 0}
build:
  - "true"
artifacts:
  - x
timeout: 60s
`

// crashSim is a simulated build server that succeeds at once, with its
// artifact sent in the result and a signed statement, and records which
// results the metaserver acknowledged.
type crashSim struct {
	f     *farmtest.Farm
	token string
	mu    sync.Mutex
	asgs  map[uint64]*kilnv1.Assignment
	acked map[uint64]uint64 // build id -> attempt id, accepted results
}

// run serves one session until it ends (the metaserver is killed).
func (s *crashSim) run(ctx context.Context, name string) error {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.token)
	st, err := kilnv1.NewWorkerServiceClient(s.f.Conn()).Session(ctx)
	if err != nil {
		return err
	}
	hello := authHello()
	hello.Slots = 4
	if err := st.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Hello{Hello: hello}}); err != nil {
		return err
	}
	var sendMu sync.Mutex
	for {
		msg, err := st.Recv()
		if err != nil {
			return err
		}
		if asg := msg.GetAssignment(); asg != nil {
			data := []byte(fmt.Sprintf("artifact of build %d attempt %d\n", asg.GetBuildId(), asg.GetAttemptId()))
			sum := sha256.Sum256(data)
			sha := hex.EncodeToString(sum[:])
			s.mu.Lock()
			s.asgs[asg.GetAttemptId()] = asg
			s.mu.Unlock()
			r := &kilnv1.AttemptResult{AttemptId: asg.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED,
				Artifact:     &kilnv1.Artifact{Sha256: sha, Size: uint64(len(data)), Files: []string{"x"}},
				ArtifactData: data, Statement: farmtest.SignStatement(farmtest.SimulatedKey("e2e"), name, asg, sha)}
			sendMu.Lock()
			err := st.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{Result: r}})
			sendMu.Unlock()
			if err != nil {
				return err
			}
		}
		if ack := msg.GetResultAck(); ack != nil && ack.GetAccepted() {
			s.mu.Lock()
			if asg := s.asgs[ack.GetAttemptId()]; asg != nil {
				s.acked[asg.GetBuildId()] = ack.GetAttemptId()
			}
			s.mu.Unlock()
		}
	}
}

func (s *crashSim) ackedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked)
}

// The metaserver is SIGKILLed twice while results (and so log appends)
// stream in: afterwards every acknowledged result's statement and summary
// are in the log, the log has no entry that no build names, and its tree
// is consistent with every checkpoint served before the kills.
func TestProvenanceLogSurvivesSIGKILLDuringAppends(t *testing.T) {
	f := farmtest.New(t)
	// The simulated build server loses the attempts in flight at each
	// kill (it reconnects without them); three such losses in a row would
	// put it aside for minutes, which is not what this test is about.
	m := f.StartMetaserver("--heartbeat", "200ms", "--lease", "60s", "--reconnect-grace", "500ms", "--losses-before-aside", "1000")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Name: "crash", ManifestText: crashManifest})
	f.AddProject("crash", repo)
	sim := &crashSim{f: f, token: f.AddBuildServer("sim"), asgs: map[uint64]*kilnv1.Assignment{}, acked: map[uint64]uint64{}}

	const builds = 60
	client := kilnv1.NewCompileServiceClient(f.Conn())
	for i := range builds {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := client.Submit(ctx, &kilnv1.SubmitRequest{Project: "crash", Email: fmt.Sprintf("crash-%d@example.com", i),
			Options: map[string]string{"round": strconv.Itoa(i)}, Constraints: &kilnv1.PlatformConstraints{}})
		cancel()
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}

	// Checkpoints served, as a requester would have seen them.
	var vkey string
	var seen []tlog.Tree
	var seenMu sync.Mutex
	pollCheckpoints := func(ctx context.Context) {
		for ctx.Err() == nil {
			c, cancel := context.WithTimeout(ctx, time.Second)
			cp, err := kilnv1.NewStatusServiceClient(f.Conn()).GetLogCheckpoint(c, &kilnv1.GetLogCheckpointRequest{})
			cancel()
			if err == nil {
				seenMu.Lock()
				if vkey == "" {
					vkey = cp.GetVerifierKey()
				}
				tree, err := translog.OpenCheckpoint(cp.GetCheckpoint(), vkey)
				if err != nil {
					seenMu.Unlock()
					t.Errorf("checkpoint: %v", err)
					return
				}
				seen = append(seen, tree)
				seenMu.Unlock()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	for round, killAt := range []int{12, 30} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- sim.run(ctx, "sim") }()
		go pollCheckpoints(ctx)
		if err := farmtest.Poll(60*time.Second, func() error {
			if n := sim.ackedCount(); n < killAt {
				return fmt.Errorf("%d results acknowledged, waiting for %d", n, killAt)
			}
			return nil
		}); err != nil {
			cancel()
			t.Fatal(err)
		}
		if err := m.Process.Kill(); err != nil { // SIGKILL, mid-stream
			t.Fatal(err)
		}
		<-done
		cancel()
		t.Logf("kill %d: %d results acknowledged before it", round+1, sim.ackedCount())
		if err := m.Process.Start(); err != nil {
			t.Fatal(err)
		}
		m.WaitReady()
	}
	// The rest completes after the last restart.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = sim.run(ctx, "sim") }()
	// Every build ends: a result committed just before a kill may never
	// have had its acknowledgement delivered, so wait on the builds, not
	// on the acknowledgements.
	if err := farmtest.Poll(90*time.Second, func() error {
		for id := uint64(1); id <= builds; id++ {
			c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := client.GetBuild(c, &kilnv1.GetBuildRequest{BuildId: id})
			cancel()
			if err != nil {
				return err
			}
			if st := r.GetBuild().GetState(); st != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
				return fmt.Errorf("build %d is %s (%d results acknowledged)", id, st.Word(), sim.ackedCount())
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Every acknowledged result's entries are in the one tree.
	named := map[uint64]bool{}
	var tree tlog.Tree
	tiles := &translog.Tiles{Fetch: func(p string) ([]byte, error) {
		r, err := kilnv1.NewStatusServiceClient(f.Conn()).GetLogTile(context.Background(), &kilnv1.GetLogTileRequest{Path: p})
		return r.GetData(), err
	}}
	sim.mu.Lock()
	acked := make(map[uint64]uint64, len(sim.acked))
	for b, a := range sim.acked {
		acked[b] = a
	}
	sim.mu.Unlock()
	for id := uint64(1); id <= builds; id++ {
		resp, err := client.GetProvenance(context.Background(), &kilnv1.GetProvenanceRequest{BuildId: id})
		if err != nil {
			t.Fatalf("build %d: %v", id, err)
		}
		p := resp.GetProvenance()
		if tree, err = translog.OpenCheckpoint(p.GetCheckpoint(), vkey); err != nil {
			t.Fatal(err)
		}
		attempt, wasAcked := acked[id]
		if len(p.GetEntries()) != 2 || (wasAcked && p.GetEntries()[0].GetRef().GetAttemptId() != attempt) {
			t.Fatalf("build %d: entries %v, want the statement of its attempt (acknowledged: %d) and a summary", id, p.GetEntries(), attempt)
		}
		for _, e := range p.GetEntries() {
			if err := translog.CheckInclusion(tree, tiles, int64(e.GetRef().GetIndex()), e.GetData()); err != nil {
				t.Fatalf("build %d entry %d: %v", id, e.GetRef().GetIndex(), err)
			}
			if named[e.GetRef().GetIndex()] {
				t.Fatalf("log entry %d named by two builds", e.GetRef().GetIndex())
			}
			named[e.GetRef().GetIndex()] = true
		}
	}
	// The last tree read above may be older than the newest: take the newest.
	cp, err := kilnv1.NewStatusServiceClient(f.Conn()).GetLogCheckpoint(context.Background(), &kilnv1.GetLogCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if tree, err = translog.OpenCheckpoint(cp.GetCheckpoint(), vkey); err != nil {
		t.Fatal(err)
	}
	if len(acked) < builds-2*4 { // at most 4 slots in flight at each of the 2 kills
		t.Fatalf("only %d of %d results acknowledged", len(acked), builds)
	}
	if tree.N != 2*builds || len(named) != int(tree.N) {
		t.Fatalf("log of %d entries, %d named by the %d builds; want 2 per build, none unnamed", tree.N, len(named), builds)
	}
	seenMu.Lock()
	defer seenMu.Unlock()
	if len(seen) == 0 {
		t.Fatal("no checkpoint seen during the run")
	}
	for _, old := range seen {
		if err := translog.CheckConsistency(tree, tiles, old); err != nil {
			t.Fatalf("the log after the kills is not consistent with a checkpoint of %d entries served before: %v", old.N, err)
		}
	}
	t.Logf("%d builds (%d results acknowledged), log of %d entries, consistent with %d checkpoints seen across 2 SIGKILLs", builds, len(acked), tree.N, len(seen))
}
