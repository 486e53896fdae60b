package bolt_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// crashHelperEnv, when set to a path, turns the test binary into the
// crash helper: it commits builds to that store forever, printing each id
// once Update has returned, until it is killed.
const crashHelperEnv = "KILN_BOLT_CRASH_HELPER"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashHelperEnv); path != "" {
		os.Exit(crashHelper(path))
	}
	os.Exit(m.Run())
}

// crashHelper commits one build (plus a request and an outbox message, so
// several buckets and indexes change per commit) per Update and acknowledges
// each on stdout. It stops on its own after a bound, in case nobody kills it.
func crashHelper(path string) int {
	db, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	pad := strings.Repeat("x", 300) // records large enough to split pages often
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		var id uint64
		err := db.Update(func(tx store.Tx) error {
			var err error
			if id, err = tx.NextID("build"); err != nil {
				return err
			}
			b := &store.Build{
				Build:     &kilnv1.Build{Id: id, Project: "crash", State: kilnv1.BuildState_BUILD_STATE_QUEUED, Failure: pad},
				SourceKey: fmt.Sprintf("source-%d", id%7),
			}
			if err := tx.PutBuild(b); err != nil {
				return err
			}
			if err := tx.PutRequest(&store.Request{Id: id, BuildId: id, Email: "dev@example.invalid"}); err != nil {
				return err
			}
			return tx.PutOutbox(&store.Outbox{Id: id, Kind: "mail", Text: pad})
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if _, err := fmt.Fprintf(os.Stdout, "%d\n", id); err != nil {
			return 2
		}
	}
	return 0
}

func TestCrashKeepsAcknowledgedUpdates(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a helper process")
	}
	const killAfter = 300
	path := filepath.Join(t.TempDir(), "kiln.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	killed := false
	kill := func() {
		if !killed {
			killed = true
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	t.Cleanup(kill)
	// Stop reading after a deadline even if the helper hangs.
	watchdog := time.AfterFunc(30*time.Second, kill)
	defer watchdog.Stop()

	var acked []uint64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		id, err := strconv.ParseUint(sc.Text(), 10, 64)
		if err != nil {
			t.Fatalf("helper printed %q", sc.Text())
		}
		acked = append(acked, id)
		if len(acked) == killAfter {
			kill() // mid-stream: the helper is between or inside commits
		}
	}
	// Lines printed before the kill are still read above, until EOF.
	waitErr := cmd.Wait()
	if !watchdog.Stop() {
		t.Fatalf("helper did not reach %d updates in time; stderr: %s", killAfter, stderr.String())
	}
	if len(acked) < killAfter {
		t.Fatalf("helper acknowledged only %d updates (%v); stderr: %s", len(acked), waitErr, stderr.String())
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v, want SIGKILL", waitErr)
	}
	t.Logf("helper acknowledged %d updates before SIGKILL", len(acked))

	// The file is consistent as bbolt sees it.
	raw, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = raw.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		return nil
	})
	if cerr := raw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	db := openT(t, path, bolt.Options{})
	err = db.View(func(tx store.Tx) error {
		for _, id := range acked {
			if _, err := tx.Build(id); err != nil {
				t.Errorf("acknowledged build %d: %v", id, err)
			}
			if rs, err := tx.RequestsForBuild(id); err != nil || len(rs) != 1 {
				t.Errorf("requests of acknowledged build %d: %d, %v", id, len(rs), err)
			}
		}
		// Counters and indexes agree with the records that made it.
		var queued uint64
		if err := tx.BuildsByState(kilnv1.BuildState_BUILD_STATE_QUEUED, func(*store.Build) error { queued++; return nil }); err != nil {
			return err
		}
		counts, err := tx.CountBuildsByState()
		if err != nil {
			return err
		}
		n, err := tx.OutboxLen()
		if err != nil {
			return err
		}
		if counts[kilnv1.BuildState_BUILD_STATE_QUEUED] != queued || uint64(n) != queued || queued < uint64(len(acked)) {
			t.Errorf("after the crash: %d indexed queued, %d counted, %d outbox, %d acknowledged",
				queued, counts[kilnv1.BuildState_BUILD_STATE_QUEUED], n, len(acked))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The sequence continues past every acknowledged id.
	err = db.Update(func(tx store.Tx) error {
		id, err := tx.NextID("build")
		if err == nil && id <= acked[len(acked)-1] {
			t.Errorf("NextID after the crash gave %d, already acknowledged", id)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
