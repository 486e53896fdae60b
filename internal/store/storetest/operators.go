package storetest

import (
	"testing"

	"github.com/kilnbuild/kiln/internal/store"
)

func operator(name string) *store.Operator {
	return &store.Operator{Name: name, CreatedAt: ts(0)}
}

var operatorCases = []testCase{
	{"a missing operator is ErrNotFound", func(t *testing.T, h *harness) {
		h.view(func(tx store.Tx) error {
			_, err := tx.Operator("nope")
			wantErr(t, "Operator", err, store.ErrNotFound)
			return nil
		})
	}},
	{"a created operator reads back equal after a reopen", func(t *testing.T, h *harness) {
		want := operator("acme")
		h.update(func(tx store.Tx) error { return tx.CreateOperator(want) })
		h.reopen()
		h.view(func(tx store.Tx) error {
			got, err := tx.Operator("acme")
			must(t, err)
			wantEqual(t, "Operator", got, want)
			return nil
		})
	}},
	{"creating an operator twice is ErrExists and keeps the first", func(t *testing.T, h *harness) {
		first := operator("acme")
		h.update(func(tx store.Tx) error { return tx.CreateOperator(first) })
		second := operator("acme")
		second.CreatedAt = ts(60)
		err := h.s.Update(func(tx store.Tx) error { return tx.CreateOperator(second) })
		wantErr(t, "second CreateOperator", err, store.ErrExists)
		h.view(func(tx store.Tx) error {
			got, err := tx.Operator("acme")
			must(t, err)
			wantEqual(t, "Operator", got, first)
			return nil
		})
	}},
	{"operators are listed by name", func(t *testing.T, h *harness) {
		h.update(func(tx store.Tx) error {
			for _, n := range []string{"zeta", "acme", "mid"} {
				if err := tx.CreateOperator(operator(n)); err != nil {
					return err
				}
			}
			return nil
		})
		h.view(func(tx store.Tx) error {
			os, err := tx.Operators()
			must(t, err)
			var names []string
			for _, o := range os {
				names = append(names, o.GetName())
			}
			if len(names) != 3 || names[0] != "acme" || names[1] != "mid" || names[2] != "zeta" {
				t.Fatalf("Operators: got %v, want [acme mid zeta]", names)
			}
			return nil
		})
	}},
	{"a build server keeps its operator and agreement counts", func(t *testing.T, h *harness) {
		want := server("b1", "hash1")
		want.Operator = "acme"
		want.AgreeingInRow = map[string]uint32{"id1": 4}
		want.DisputesLost, want.Marked = 1, "lost a dispute on build 7"
		h.update(func(tx store.Tx) error { return tx.CreateBuildServer(want) })
		h.reopen()
		h.view(func(tx store.Tx) error {
			got, err := tx.BuildServer("b1")
			must(t, err)
			wantEqual(t, "BuildServer", got, want)
			return nil
		})
	}},
}
