package e2e

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/kilnbuild/kiln/internal/compilecli"
	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/provenance"
	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	"github.com/kilnbuild/kiln/internal/translog"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// expectRefused requires exit status code and a stderr saying want.
func expectRefused(t *testing.T, r farmtest.Result, code int, want string) {
	t.Helper()
	if r.Exit != code || !strings.Contains(r.Stderr, want) {
		t.Fatalf("exit %d, stderr %q; want exit %d saying %q\nstdout: %s", r.Exit, r.Stderr, code, want, r.Stdout)
	}
}

// A build is downloaded with its provenance checked, verified again
// offline from the kept bundle, and each tampering is refused: a changed
// artifact byte, a statement signed with another key, a checkpoint of
// another log, and a log that rewrote an entry.
func TestProvenanceDownloadVerifiesOfflineAndRefusesTampering(t *testing.T) {
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 1)
	out := filepath.Join(t.TempDir(), "out")
	r := f.Startcompile("--project", "hello", "--download", out, "--json", "dev@example.com")
	expectExit(t, r, 0)
	if !strings.Contains(r.Stderr, "built by builder-1") || !strings.Contains(r.Stderr, "verified by kiln-log") {
		t.Fatalf("download does not say who built and verified it:\n%s", r.Stderr)
	}
	checkServedLog(t, f.StartWebstatus(), out)

	jsonOut := filepath.Join(t.TempDir(), "result.json")
	if err := os.WriteFile(jsonOut, []byte(r.Stdout), 0o644); err != nil {
		t.Fatal(err)
	}

	// Offline: the metaserver is down; the bundle proves it alone.
	m := f.Meta()
	if err := m.Process.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{out, filepath.Join(out, "hello"), jsonOut} {
		v := f.Startcompile("verify", "--dial-timeout", "1s", path)
		expectExit(t, v, 0)
		if !strings.Contains(v.Stdout, "built by builder-1") || !strings.Contains(v.Stdout, "verified by kiln-log") {
			t.Fatalf("verify %s does not say who built and verified it:\n%s", path, v.Stdout)
		}
	}

	// A changed byte, in the unpacked file or in the archive kept.
	for _, path := range []string{filepath.Join(out, "hello"), filepath.Join(out, compilecli.ProvenanceDir, "artifact.tar.gz")} {
		restore := flipByte(t, path, 100)
		expectRefused(t, f.Startcompile("verify", "--dial-timeout", "1s", out), 1, "provenance check failed")
		restore()
	}
	expectExit(t, f.Startcompile("verify", "--dial-timeout", "1s", out), 0)

	// A statement signed with another key (its reference rewritten to match).
	bundlePath := filepath.Join(out, compilecli.ProvenanceDir, "provenance.json")
	orig, err := os.ReadFile(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	forgeStatement(t, bundlePath, farmtest.SimulatedKey("thief"))
	expectRefused(t, f.Startcompile("verify", "--dial-timeout", "1s", out), 1, "signature does not verify")
	if err := os.WriteFile(bundlePath, orig, 0o644); err != nil {
		t.Fatal(err)
	}

	// A checkpoint of another log: the metaserver comes back with another key.
	keyPath := filepath.Join(f.MetaDataDir(), provenance.KeyFile)
	if err := os.Rename(keyPath, keyPath+".orig"); err != nil {
		t.Fatal(err)
	}
	startAgain(t, m)
	expectRefused(t, f.Startcompile("verify", out), 1, "not from the log this machine knows")
	out2 := filepath.Join(t.TempDir(), "out2")
	expectRefused(t, f.Startcompile("status", "--download", out2, "1"), 3, "not from the log this machine knows")
	if _, err := os.Stat(filepath.Join(out2, "hello")); err == nil {
		t.Fatal("an artifact whose provenance failed was unpacked")
	}
	if err := m.Process.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(keyPath+".orig", keyPath); err != nil {
		t.Fatal(err)
	}

	// The operator rewrites the summary (validly signed with the
	// metaserver's own key) and appends one more entry: the tree no longer
	// extends the one this requester saw.
	rewriteLog(t, f.MetaDataDir(), keyPath)
	startAgain(t, m)
	expectRefused(t, f.Startcompile("verify", out), 1, "not consistent with the checkpoint seen before")
	expectRefused(t, f.Startcompile("status", "--download", out2, "1"), 3, "not consistent with the checkpoint seen before")
}

// flipByte changes the byte at offset in path and returns the undo.
func flipByte(t *testing.T, path string, offset int) func() {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	changed := append([]byte(nil), data...)
	changed[offset%len(changed)] ^= 0x20
	if err := os.WriteFile(path, changed, 0o755); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.WriteFile(path, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// forgeStatement re-signs the bundle's statement with key, keeping the
// entry's recorded key, and fixes the entry's reference to its new bytes.
func forgeStatement(t *testing.T, path string, key ed25519.PrivateKey) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var b kilnv1.Provenance
	if err := protojson.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	for _, e := range b.GetEntries() {
		if e.GetRef().GetKind() != provenance.KindStatement {
			continue
		}
		ent, err := provenance.ParseEntry(e.GetData())
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			Payload string `json:"payload"`
		}
		if err := json.Unmarshal(ent.Envelope, &env); err != nil {
			t.Fatal(err)
		}
		st, err := provenance.Open(ent.Envelope, ent.Key)
		if err != nil {
			t.Fatal(err)
		}
		forged, err := provenance.Seal(key, st)
		if err != nil {
			t.Fatal(err)
		}
		ent.Envelope = forged
		if e.Data, err = ent.Marshal(); err != nil {
			t.Fatal(err)
		}
		e.Ref.Sha256 = provenance.SHA256(e.Data)
	}
	js, err := protojson.Marshal(&b)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, js, 0o644); err != nil {
		t.Fatal(err)
	}
}

// rewriteLog rebuilds the stopped metaserver's log with its summary entry
// replaced by another, validly signed, and one entry more.
func rewriteLog(t *testing.T, dataDir, keyPath string) {
	t.Helper()
	dbPath := filepath.Join(dataDir, "kiln.db")
	var entries [][]byte
	raw, err := bbolt.Open(dbPath, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = raw.Update(func(tx *bbolt.Tx) error {
		c := tx.Bucket([]byte("tlog_entries")).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			entries = append(entries, append([]byte(nil), v...))
		}
		for _, b := range []string{"tlog_entries", "tlog_hashes"} {
			if err := tx.DeleteBucket([]byte(b)); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte("meta")).Delete([]byte("tlog_size"))
	})
	raw.Close()
	if err != nil || len(entries) != 2 {
		t.Fatalf("reading the log: %d entries, %v; want 2", len(entries), err)
	}
	key, err := provenance.LoadOrCreateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := provenance.ParseEntry(entries[1])
	if err != nil {
		t.Fatal(err)
	}
	st, err := provenance.Open(sum.Envelope, sum.Key)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := provenance.Summary(st)
	rewritten, err := provenance.NewSummary(v.GetVerifier().GetId(), sum.Build, provenance.Subject(st),
		[]provenance.StatementRef{{Index: 0, EntrySHA256: v.GetInputAttestations()[0].GetDigest()["sha256"]}}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Envelope, err = provenance.Seal(key, rewritten); err != nil {
		t.Fatal(err)
	}
	if entries[1], err = sum.Marshal(); err != nil {
		t.Fatal(err)
	}
	entries = append(entries, entries[1])
	db, err := bolt.Open(dbPath, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx store.Tx) error {
		for _, e := range entries {
			if _, err := translog.Append(tx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startAgain starts the stopped metaserver with its arguments.
func startAgain(t *testing.T, m *farmtest.Metaserver) {
	t.Helper()
	if err := m.Process.Start(); err != nil {
		t.Fatal(err)
	}
	m.WaitReady()
}

// checkServedLog reads the log as webstatus serves it, /log/checkpoint and
// /log/tile/..., and proves the download's entries included in it.
func checkServedLog(t *testing.T, ws *farmtest.Webstatus, out string) {
	t.Helper()
	fetch := func(path string) ([]byte, http.Header, error) {
		resp, err := http.Get(ws.URL + path)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return body, resp.Header, err
	}
	cp, h, err := fetch("/log/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(out, compilecli.ProvenanceDir, "provenance.json"))
	if err != nil {
		t.Fatal(err)
	}
	var b kilnv1.Provenance
	if err := protojson.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	if h.Get("X-Kiln-Log-Verifier") != b.GetVerifierKey() {
		t.Fatalf("webstatus names log key %q, the download %q", h.Get("X-Kiln-Log-Verifier"), b.GetVerifierKey())
	}
	tree, err := translog.OpenCheckpoint(cp, b.GetVerifierKey())
	if err != nil {
		t.Fatalf("/log/checkpoint: %v", err)
	}
	tiles := &translog.Tiles{Fetch: func(p string) ([]byte, error) { d, _, err := fetch("/log/" + p); return d, err }}
	for _, e := range b.GetEntries() {
		if err := translog.CheckInclusion(tree, tiles, int64(e.GetRef().GetIndex()), e.GetData()); err != nil {
			t.Fatalf("entry %d through webstatus's tiles: %v", e.GetRef().GetIndex(), err)
		}
	}
	if len(tiles.Data) == 0 {
		t.Fatal("no tile was read from webstatus")
	}
	if _, _, err := fetch("/log/tile/8/0/999"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("a tile beyond the log: %v, want 404", err)
	}
}
