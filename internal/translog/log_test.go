package translog_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	"github.com/kilnbuild/kiln/internal/translog"
)

func openStore(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "kiln.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func notary(t *testing.T, name string) *translog.Notary {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	n, err := translog.NewNotary(name, key)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func appendN(t *testing.T, db store.Store, from, to int) {
	t.Helper()
	err := db.Update(func(tx store.Tx) error {
		for i := from; i < to; i++ {
			n, err := translog.Append(tx, []byte(fmt.Sprintf(`{"entry":%d}`, i)))
			if err != nil {
				return err
			}
			if n != int64(i) {
				return fmt.Errorf("entry %d appended at %d", i, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// proof returns the checkpoint's tree and the tiles proving entries and
// consistency from known, as a server hands them out.
func proof(t *testing.T, db store.Store, no *translog.Notary, entries []int64, known int64) (tlog.Tree, *translog.Tiles) {
	t.Helper()
	var cp []byte
	tiles := &translog.Tiles{}
	err := db.View(func(tx store.Tx) error {
		var tree tlog.Tree
		var err error
		if cp, tree, err = no.Checkpoint(tx); err != nil {
			return err
		}
		tiles.Data, err = translog.Prove(tx, tree, entries, known)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	tree, err := translog.OpenCheckpoint(cp, no.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	return tree, tiles
}

func TestLog_AppendProveCheck(t *testing.T) {
	db, no := openStore(t), notary(t, "kiln.test")
	appendN(t, db, 0, 5)
	old, _ := proof(t, db, no, nil, 0)
	appendN(t, db, 5, 300) // past one full tile of 256
	tree, tiles := proof(t, db, no, []int64{0, 4, 257, 299}, old.N)
	if tree.N != 300 {
		t.Fatalf("tree of %d entries, want 300", tree.N)
	}
	for _, n := range []int64{0, 4, 257, 299} {
		if err := translog.CheckInclusion(tree, tiles, n, []byte(fmt.Sprintf(`{"entry":%d}`, n))); err != nil {
			t.Errorf("entry %d: %v", n, err)
		}
	}
	if err := translog.CheckConsistency(tree, tiles, old); err != nil {
		t.Errorf("consistency with the tree of 5: %v", err)
	}
	// Hostile: a changed entry is not the one at its index.
	err := translog.CheckInclusion(tree, tiles, 4, []byte(`{"entry":44}`))
	if !errors.Is(err, translog.ErrInconsistent) {
		t.Errorf("changed entry: %v, want ErrInconsistent", err)
	}
}

// A log that rewrites an entry (or drops one and appends another) has a
// tree that is not an extension of the one a client saw: refused.
func TestLog_RewrittenLogFailsConsistency(t *testing.T) {
	no := notary(t, "kiln.test")
	honest := openStore(t)
	appendN(t, honest, 0, 10)
	seen, _ := proof(t, honest, no, nil, 0)

	for name, build := range map[string]func(store.Tx) error{
		"rewrites entry 3": func(tx store.Tx) error {
			for i := 0; i < 12; i++ {
				e := fmt.Sprintf(`{"entry":%d}`, i)
				if i == 3 {
					e = `{"entry":"three"}`
				}
				if _, err := translog.Append(tx, []byte(e)); err != nil {
					return err
				}
			}
			return nil
		},
		"drops entry 9": func(tx store.Tx) error {
			for i := 0; i < 12; i++ {
				if i == 9 {
					continue
				}
				if _, err := translog.Append(tx, []byte(fmt.Sprintf(`{"entry":%d}`, i))); err != nil {
					return err
				}
			}
			return nil
		},
	} {
		t.Run(name, func(t *testing.T) {
			forked := openStore(t)
			if err := forked.Update(build); err != nil {
				t.Fatal(err)
			}
			tree, tiles := proof(t, forked, no, nil, seen.N)
			err := translog.CheckConsistency(tree, tiles, seen)
			if !errors.Is(err, translog.ErrInconsistent) {
				t.Fatalf("CheckConsistency = %v, want ErrInconsistent", err)
			}
		})
	}
	// A shorter log than the one seen is refused too.
	short := openStore(t)
	appendN(t, short, 0, 4)
	tree, tiles := proof(t, short, no, nil, 0)
	if err := translog.CheckConsistency(tree, tiles, seen); !errors.Is(err, translog.ErrInconsistent) {
		t.Fatalf("shorter log: %v, want ErrInconsistent", err)
	}
}

func TestOpenCheckpoint_OtherLogRefused(t *testing.T) {
	db := openStore(t)
	appendN(t, db, 0, 3)
	mine, other := notary(t, "kiln.test"), notary(t, "kiln.test")
	var cp []byte
	if err := db.View(func(tx store.Tx) (err error) { cp, _, err = other.Checkpoint(tx); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := translog.OpenCheckpoint(cp, mine.VerifierKey); !errors.Is(err, translog.ErrOtherLog) {
		t.Fatalf("checkpoint of another log: %v, want ErrOtherLog", err)
	}
	if _, err := translog.OpenCheckpoint(cp, other.VerifierKey); err != nil {
		t.Fatalf("its own log: %v", err)
	}
}

func TestAppend_RefusesForkAndBadEntry(t *testing.T) {
	db := openStore(t)
	appendN(t, db, 0, 2)
	err := db.Update(func(tx store.Tx) error {
		return tx.AppendTlog(1, []byte("x"), make([]tlog.Hash, 1))
	})
	if !errors.Is(err, store.ErrTlogFork) {
		t.Fatalf("append at 1 of a log of 2: %v, want ErrTlogFork", err)
	}
	err = db.Update(func(tx store.Tx) error { _, err := translog.Append(tx, []byte("a\nb")); return err })
	if !errors.Is(err, translog.ErrBadEntry) {
		t.Fatalf("entry with a newline: %v, want ErrBadEntry", err)
	}
	var size int64
	_ = db.View(func(tx store.Tx) (err error) { size, err = tx.TlogSize(); return err })
	if size != 2 {
		t.Fatalf("size %d after refused appends, want 2", size)
	}
}

func TestTile_DataAndBeyondSize(t *testing.T) {
	db := openStore(t)
	appendN(t, db, 0, 3)
	err := db.View(func(tx store.Tx) error {
		d, err := translog.Tile(tx, "tile/8/data/000.p/3")
		if err != nil {
			return err
		}
		if want := "{\"entry\":0}\n{\"entry\":1}\n{\"entry\":2}\n"; string(d) != want {
			return fmt.Errorf("data tile %q, want %q", d, want)
		}
		if _, err := translog.Tile(tx, "tile/8/0/000.p/4"); !errors.Is(err, translog.ErrNoTile) {
			return fmt.Errorf("tile beyond the log: %v, want ErrNoTile", err)
		}
		if _, err := translog.Tile(tx, "tile/8/../x"); err == nil {
			return errors.New("bad path accepted")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkAppend is one success's share of a commit: its two entries
// (statement and summary, ~1.5 KiB each) appended inside a transaction
// that commits every 8 successes, as the committer groups them.
func BenchmarkAppend(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "kiln.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	entry := make([]byte, 1500)
	for i := range entry {
		entry[i] = 'a'
	}
	b.ResetTimer()
	start := cpuTime()
	for b.Loop() {
		err := db.Update(func(tx store.Tx) error {
			for range 16 {
				if _, err := translog.Append(tx, entry); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/8/1e3, "µs/success")
	reportCPU(b, start, 8, "cpu-µs/success")
}

// reportCPU reports the process's CPU time per op (user + system), which
// a busy machine inflates less than the wall time of ns/op.
func reportCPU(b *testing.B, start time.Duration, perOp float64, unit string) {
	b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N)/perOp, unit)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
