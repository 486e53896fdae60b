package bolt_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// openT opens path and closes it when the test ends.
func openT(t testing.TB, path string, opts bolt.Options) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// rawUpdate runs fn in a bbolt transaction on the closed store file at path.
func rawUpdate(t *testing.T, path string, fn func(*bbolt.Tx) error) {
	t.Helper()
	raw, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// rawView runs fn in a read-only bbolt transaction on the closed store file.
func rawView(t *testing.T, path string, fn func(*bbolt.Tx) error) {
	t.Helper()
	raw, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.View(fn); err != nil {
		t.Fatal(err)
	}
}

// setVersion writes a schema version into a closed store file directly.
func setVersion(t *testing.T, path string, v uint64) {
	t.Helper()
	raw, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	err = raw.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("meta"))
		if err != nil {
			return err
		}
		return b.Put([]byte("version"), []byte{0, 0, 0, 0, 0, 0, 0, byte(v)})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpen(t *testing.T) {
	t.Run("a new file is created readable by its owner only", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kiln.db")
		db := openT(t, path, bolt.Options{})
		if db.Path() != path {
			t.Fatalf("Path: got %q, want %q", db.Path(), path)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Fatalf("mode: got %v, want 0600", perm)
		}
	})
	t.Run("a file from a newer schema is refused and left untouched", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kiln.db")
		db := openT(t, path, bolt.Options{})
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		setVersion(t, path, bolt.SchemaVersion+1)
		_, err := bolt.Open(path, bolt.Options{})
		var sv *bolt.SchemaVersionError
		if !errors.As(err, &sv) || sv.Found != bolt.SchemaVersion+1 || sv.Supported != bolt.SchemaVersion {
			t.Fatalf("Open: got %v, want a SchemaVersionError for version %d", err, bolt.SchemaVersion+1)
		}
		// The refusal released the file: it can be fixed and opened again.
		setVersion(t, path, bolt.SchemaVersion)
		openT(t, path, bolt.Options{})
	})
	t.Run("a version 1 file is upgraded: its active-by-source index is dropped and every record kept", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kiln.db")
		db := openT(t, path, bolt.Options{})
		queuedB := &store.Build{Build: &kilnv1.Build{Id: 1, Project: "p", State: kilnv1.BuildState_BUILD_STATE_QUEUED}, SourceKey: "s"}
		doneB := &store.Build{Build: &kilnv1.Build{Id: 2, Project: "p", State: kilnv1.BuildState_BUILD_STATE_SUCCEEDED}, SourceKey: "s"}
		err := db.Update(func(tx store.Tx) error {
			if err := tx.PutBuild(queuedB); err != nil {
				return err
			}
			return tx.PutBuild(doneB)
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		// Version 1 is version 2 plus the index by source of active builds.
		setVersion(t, path, 1)
		rawUpdate(t, path, func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucket([]byte("builds_active_by_source"))
			if err != nil {
				return err
			}
			return b.Put(append([]byte{1, 's'}, 0, 0, 0, 0, 0, 0, 0, 1), []byte{})
		})

		db = openT(t, path, bolt.Options{})
		err = db.View(func(tx store.Tx) error {
			for _, want := range []*store.Build{queuedB, doneB} {
				got, err := tx.Build(want.GetBuild().GetId())
				if err != nil || !proto.Equal(got, want) {
					t.Errorf("Build(%d) after the upgrade: got %v, %v; want %v", want.GetBuild().GetId(), got, err, want)
				}
			}
			active, err := tx.ActiveBuildsBySource("s")
			if err != nil || len(active) != 1 || active[0].GetBuild().GetId() != 1 {
				t.Errorf("ActiveBuildsBySource after the upgrade: got %v, %v; want build 1", active, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		rawView(t, path, func(tx *bbolt.Tx) error {
			if v := tx.Bucket([]byte("meta")).Get([]byte("version")); !bytes.Equal(v, []byte{0, 0, 0, 0, 0, 0, 0, bolt.SchemaVersion}) {
				t.Errorf("version after the upgrade: got %x, want %d", v, bolt.SchemaVersion)
			}
			if tx.Bucket([]byte("builds_active_by_source")) != nil {
				t.Error("builds_active_by_source survived the upgrade")
			}
			return nil
		})
		openT(t, path, bolt.Options{}) // and the upgraded file opens again
	})
	t.Run("a version 3 file is upgraded: samples and request groups start empty, every record kept", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kiln.db")
		db := openT(t, path, bolt.Options{})
		b := &store.Build{Build: &kilnv1.Build{Id: 1, Project: "p", State: kilnv1.BuildState_BUILD_STATE_SUCCEEDED}, SourceKey: "s"}
		if err := db.Update(func(tx store.Tx) error { return tx.PutBuild(b) }); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		// Version 3 is version 4 without samples/ and request_groups/.
		setVersion(t, path, 3)
		rawUpdate(t, path, func(tx *bbolt.Tx) error {
			for _, name := range []string{"samples", "request_groups"} {
				if err := tx.DeleteBucket([]byte(name)); err != nil {
					return err
				}
			}
			return nil
		})
		db = openT(t, path, bolt.Options{})
		err := db.Update(func(tx store.Tx) error {
			got, err := tx.Build(1)
			if err != nil || !proto.Equal(got, b) {
				t.Errorf("Build(1) after the upgrade: %v, %v", got, err)
			}
			n := 0
			if err := tx.Samples(time.Time{}, func(*store.Sample) error { n++; return nil }); err != nil || n != 0 {
				t.Errorf("samples after the upgrade: %d, %v", n, err)
			}
			if _, err := tx.RequestGroup("g"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("RequestGroup after the upgrade: %v", err)
			}
			return tx.PutSample(&store.Sample{At: timestamppb.Now()}, 10)
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		rawView(t, path, func(tx *bbolt.Tx) error {
			if v := tx.Bucket([]byte("meta")).Get([]byte("version")); !bytes.Equal(v, []byte{0, 0, 0, 0, 0, 0, 0, bolt.SchemaVersion}) {
				t.Errorf("version after the upgrade: got %x, want %d", v, bolt.SchemaVersion)
			}
			return nil
		})
	})
	t.Run("a version 4 file is upgraded: operators/ is created and build servers keep no operator", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kiln.db")
		db := openT(t, path, bolt.Options{})
		old := &store.BuildServer{Name: "b1", TokenHash: "h1", BuildsSucceeded: 2}
		if err := db.Update(func(tx store.Tx) error { return tx.CreateBuildServer(old) }); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		// Version 4 is version 5 without the operators bucket.
		setVersion(t, path, 4)
		rawUpdate(t, path, func(tx *bbolt.Tx) error { return tx.DeleteBucket([]byte("operators")) })

		db = openT(t, path, bolt.Options{})
		err := db.Update(func(tx store.Tx) error {
			got, err := tx.BuildServer("b1")
			if err != nil || !proto.Equal(got, old) || got.GetOperator() != "" {
				t.Errorf("BuildServer after the upgrade: got %v, %v; want %v with no operator", got, err, old)
			}
			if ops, err := tx.Operators(); err != nil || len(ops) != 0 {
				t.Errorf("Operators after the upgrade: got %v, %v; want none", ops, err)
			}
			return tx.CreateOperator(&store.Operator{Name: "acme"})
		})
		if err != nil {
			t.Fatalf("creating an operator in the upgraded file: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		rawView(t, path, func(tx *bbolt.Tx) error {
			if v := tx.Bucket([]byte("meta")).Get([]byte("version")); !bytes.Equal(v, []byte{0, 0, 0, 0, 0, 0, 0, bolt.SchemaVersion}) {
				t.Errorf("version after the upgrade: got %x, want %d", v, bolt.SchemaVersion)
			}
			return nil
		})
	})
	t.Run("a file held by another opener is refused after the timeout", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kiln.db")
		openT(t, path, bolt.Options{})
		start := time.Now()
		_, err := bolt.Open(path, bolt.Options{Timeout: 300 * time.Millisecond})
		if !errors.Is(err, berrors.ErrTimeout) {
			t.Fatalf("second Open: got %v, want ErrTimeout", err)
		}
		if waited := time.Since(start); waited < 200*time.Millisecond || waited > 5*time.Second {
			t.Fatalf("second Open gave up after %v, want about 300ms (bbolt retries every 50ms)", waited)
		}
	})
}

func TestTx(t *testing.T) {
	db := openT(t, filepath.Join(t.TempDir(), "kiln.db"), bolt.Options{NoSync: true})
	t.Run("writes inside View are ErrReadOnly", func(t *testing.T) {
		err := db.View(func(tx store.Tx) error {
			return tx.PutBuild(&store.Build{Build: &kilnv1.Build{Id: 1, State: kilnv1.BuildState_BUILD_STATE_QUEUED}})
		})
		if !errors.Is(err, bolt.ErrReadOnly) || !errors.Is(err, berrors.ErrTxNotWritable) {
			t.Fatalf("got %v, want ErrReadOnly", err)
		}
	})
	t.Run("a transaction used after its closure is ErrTxDone", func(t *testing.T) {
		var kept store.Tx
		if err := db.Update(func(tx store.Tx) error { kept = tx; return nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := kept.NextID("build"); !errors.Is(err, bolt.ErrTxDone) {
			t.Fatalf("NextID: got %v, want ErrTxDone", err)
		}
		if _, err := kept.Build(1); !errors.Is(err, bolt.ErrTxDone) {
			t.Fatalf("Build: got %v, want ErrTxDone", err)
		}
	})
	invalid := []struct {
		name  string
		write func(store.Tx) error
	}{
		{"a build without an id", func(tx store.Tx) error {
			return tx.PutBuild(&store.Build{Build: &kilnv1.Build{State: kilnv1.BuildState_BUILD_STATE_QUEUED}})
		}},
		{"a build without a state", func(tx store.Tx) error { return tx.PutBuild(&store.Build{Build: &kilnv1.Build{Id: 1}}) }},
		{"a nil build", func(tx store.Tx) error { return tx.PutBuild(nil) }},
		{"a project without a name", func(tx store.Tx) error { return tx.CreateProject(&store.Project{}) }},
		{"a build server without a name", func(tx store.Tx) error { return tx.CreateBuildServer(&store.BuildServer{}) }},
		{"a request without an id", func(tx store.Tx) error { return tx.PutRequest(&store.Request{BuildId: 1}) }},
		{"an artifact without a cache key", func(tx store.Tx) error { return tx.PutArtifact(&store.Artifact{SourceKey: "s"}) }},
		{"a pin without a name", func(tx store.Tx) error { return tx.CreatePin(&store.Pin{}) }},
		{"an outbox message without an id", func(tx store.Tx) error { return tx.PutOutbox(&store.Outbox{}) }},
		{"an empty sequence name", func(tx store.Tx) error { _, err := tx.NextID(""); return err }},
	}
	for _, c := range invalid {
		t.Run(c.name+" is ErrInvalid", func(t *testing.T) {
			if err := db.Update(c.write); !errors.Is(err, bolt.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
	t.Run("indexes filled in id order keep their leaf pages nearly full", func(t *testing.T) {
		db := openT(t, filepath.Join(t.TempDir(), "kiln.db"), bolt.Options{NoSync: true})
		for start := uint64(1); start <= 5000; start += 100 {
			// Small commits, as the metaserver's, so every leaf splits many times.
			err := db.Update(func(tx store.Tx) error {
				for id := start; id < start+100; id++ {
					b := &store.Build{Build: &kilnv1.Build{Id: id, Project: "p", State: kilnv1.BuildState_BUILD_STATE_SUCCEEDED}}
					if err := tx.PutBuild(b); err != nil {
						return err
					}
					if err := tx.PutRequest(&store.Request{Id: id, BuildId: id}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, name := range []string{"builds_by_state", "builds_by_project", "builds_by_arch", "requests_by_build"} {
			fill, err := db.LeafFill(name)
			if err != nil || fill < 0.9 {
				t.Errorf("%s: leaf pages %.0f%% full (%v), want at least 90%%", name, 100*fill, err)
			}
		}
	})
	t.Run("ListBuilds returns nothing for a limit of 0 and at most MaxListLimit", func(t *testing.T) {
		err := db.Update(func(tx store.Tx) error {
			for id := uint64(1); id <= bolt.MaxListLimit+5; id++ {
				if err := tx.PutBuild(&store.Build{Build: &kilnv1.Build{Id: id, State: kilnv1.BuildState_BUILD_STATE_QUEUED}}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = db.View(func(tx store.Tx) error {
			if bs, err := tx.ListBuilds(store.BuildFilter{}, 0, 0); err != nil || len(bs) != 0 {
				t.Errorf("limit 0: got %d builds, %v", len(bs), err)
			}
			if bs, err := tx.ListBuilds(store.BuildFilter{}, 0, 1<<20); err != nil || len(bs) != bolt.MaxListLimit {
				t.Errorf("huge limit: got %d builds, %v; want %d", len(bs), err, bolt.MaxListLimit)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// A version-3 file (before the transparency log) opens as version 4 with
// an empty log that appends work on.
func TestOpen_UpgradesVersion5ToAnEmptyTransparencyLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kiln.db")
	db := openT(t, path, bolt.Options{})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	setVersion(t, path, 5) // version 5 is version 6 without the log
	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		for _, b := range []string{"tlog_entries", "tlog_hashes"} {
			if err := tx.DeleteBucket([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	db = openT(t, path, bolt.Options{})
	err := db.Update(func(tx store.Tx) error {
		if n, err := tx.TlogSize(); err != nil || n != 0 {
			return fmt.Errorf("TlogSize after the upgrade = %d, %v; want 0", n, err)
		}
		return tx.AppendTlog(0, []byte("first"), make([]tlog.Hash, 1))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	rawView(t, path, func(tx *bbolt.Tx) error {
		if v := tx.Bucket([]byte("meta")).Get([]byte("version")); !bytes.Equal(v, []byte{0, 0, 0, 0, 0, 0, 0, bolt.SchemaVersion}) {
			t.Errorf("version after the upgrade: %x, want %d", v, bolt.SchemaVersion)
		}
		return nil
	})
}
