package storetest

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/kilnbuild/kiln/internal/store"
)

// tlogHashes is n stored hashes for an entry, distinct per entry.
func tlogHashes(entry int64, n int64) []tlog.Hash {
	out := make([]tlog.Hash, n)
	for i := range out {
		out[i][0], out[i][1] = byte(entry), byte(i)
	}
	return out
}

// appendTlog appends entries from..to-1 with their hash counts.
func appendTlog(tx store.Tx, from, to int64) error {
	for n := from; n < to; n++ {
		count := tlog.StoredHashCount(n+1) - tlog.StoredHashCount(n)
		if err := tx.AppendTlog(n, []byte(fmt.Sprintf("entry %d", n)), tlogHashes(n, count)); err != nil {
			return err
		}
	}
	return nil
}

var tlogCases = []testCase{
	{"an empty log has size 0 and no entry", func(t *testing.T, h *harness) {
		err := h.s.View(func(tx store.Tx) error {
			if n, err := tx.TlogSize(); err != nil || n != 0 {
				return fmt.Errorf("TlogSize = %d, %v; want 0", n, err)
			}
			if _, err := tx.TlogEntry(0); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("TlogEntry(0) = %v, want ErrNotFound", err)
			}
			if _, err := tx.TlogHashes([]int64{0}); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("TlogHashes([0]) = %v, want ErrNotFound", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}},
	{"appended entries and hashes survive a reopen", func(t *testing.T, h *harness) {
		if err := h.s.Update(func(tx store.Tx) error { return appendTlog(tx, 0, 5) }); err != nil {
			t.Fatal(err)
		}
		h.reopen()
		err := h.s.View(func(tx store.Tx) error {
			if n, err := tx.TlogSize(); err != nil || n != 5 {
				return fmt.Errorf("TlogSize = %d, %v; want 5", n, err)
			}
			if e, err := tx.TlogEntry(3); err != nil || string(e) != "entry 3" {
				return fmt.Errorf("TlogEntry(3) = %q, %v", e, err)
			}
			// Entry 4's hashes start at StoredHashCount(4).
			first := tlog.StoredHashCount(4)
			got, err := tx.TlogHashes([]int64{first})
			if err != nil || got[0] != tlogHashes(4, 1)[0] {
				return fmt.Errorf("TlogHashes(%d) = %v, %v", first, got, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}},
	{"an append not at the end is refused and writes nothing", func(t *testing.T, h *harness) {
		if err := h.s.Update(func(tx store.Tx) error { return appendTlog(tx, 0, 3) }); err != nil {
			t.Fatal(err)
		}
		for _, n := range []int64{0, 2, 4} {
			err := h.s.Update(func(tx store.Tx) error { return tx.AppendTlog(n, []byte("fork"), tlogHashes(n, 1)) })
			if !errors.Is(err, store.ErrTlogFork) {
				t.Fatalf("AppendTlog(%d) on a log of 3: %v, want ErrTlogFork", n, err)
			}
		}
		err := h.s.View(func(tx store.Tx) error {
			if n, err := tx.TlogSize(); err != nil || n != 3 {
				return fmt.Errorf("TlogSize = %d, %v; want 3", n, err)
			}
			if e, err := tx.TlogEntry(2); err != nil || string(e) != "entry 2" {
				return fmt.Errorf("TlogEntry(2) = %q, %v", e, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}},
	{"an append in a failed transaction is not kept", func(t *testing.T, h *harness) {
		boom := errors.New("boom")
		err := h.s.Update(func(tx store.Tx) error {
			if err := appendTlog(tx, 0, 2); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update = %v, want boom", err)
		}
		if err := h.s.Update(func(tx store.Tx) error { return appendTlog(tx, 0, 1) }); err != nil {
			t.Fatalf("appending entry 0 after the rolled-back appends: %v", err)
		}
	}},
}
