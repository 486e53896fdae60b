package storetest

import (
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

var sampleCases = []testCase{
	{"samples come back oldest first from a time on", func(t *testing.T, h *harness) {
		for _, m := range []int{3, 1, 2} {
			h.update(func(tx store.Tx) error {
				return tx.PutSample(&store.Sample{At: ts(time.Duration(m) * time.Minute), QueueLength: uint32(m)}, 10)
			})
		}
		h.view(func(tx store.Tx) error {
			var got []uint32
			must(t, tx.Samples(base.Add(2*time.Minute), func(s *store.Sample) error { got = append(got, s.GetQueueLength()); return nil }))
			if len(got) != 2 || got[0] != 2 || got[1] != 3 {
				t.Fatalf("samples since minute 2: %v, want [2 3]", got)
			}
			return nil
		})
	}},
	{"a flood of samples keeps only the newest", func(t *testing.T, h *harness) {
		const keep, n = 50, 400
		h.update(func(tx store.Tx) error {
			for i := range n {
				if err := tx.PutSample(&store.Sample{At: ts(time.Duration(i) * time.Second), QueueLength: uint32(i)}, keep); err != nil {
					return err
				}
			}
			return nil
		})
		h.view(func(tx store.Tx) error {
			var got []uint32
			must(t, tx.Samples(time.Time{}, func(s *store.Sample) error { got = append(got, s.GetQueueLength()); return nil }))
			if len(got) != keep || got[0] != n-keep || got[keep-1] != n-1 {
				t.Fatalf("%d samples kept, first %v; want %d from %d", len(got), got[:min(1, len(got))], keep, n-keep)
			}
			return nil
		})
	}},
	{"a sample without a time or a keep below one is refused", func(t *testing.T, h *harness) {
		if err := h.s.Update(func(tx store.Tx) error { return tx.PutSample(&store.Sample{}, 5) }); err == nil {
			t.Fatal("sample without a time stored")
		}
		if err := h.s.Update(func(tx store.Tx) error { return tx.PutSample(&store.Sample{At: ts(0)}, 0) }); err == nil {
			t.Fatal("keep 0 accepted")
		}
	}},
}

var requestGroupCases = []testCase{
	{"a missing request group is ErrNotFound", func(t *testing.T, h *harness) {
		h.view(func(tx store.Tx) error {
			_, err := tx.RequestGroup("g")
			wantErr(t, "RequestGroup", err, store.ErrNotFound)
			return nil
		})
	}},
	{"a request group is stored, replaced and listed", func(t *testing.T, h *harness) {
		g := &store.RequestGroup{Id: "g1", Email: "a@example.com", Mail: kilnv1.MailMode_MAIL_MODE_SUMMARY, RequestIds: []uint64{1}, CreatedAt: ts(0)}
		h.update(func(tx store.Tx) error { return tx.PutRequestGroup(g) })
		g2 := &store.RequestGroup{Id: "g1", Email: "a@example.com", Mail: kilnv1.MailMode_MAIL_MODE_SUMMARY, RequestIds: []uint64{1, 2}, Sealed: true, CreatedAt: ts(0)}
		h.update(func(tx store.Tx) error { return tx.PutRequestGroup(g2) })
		h.update(func(tx store.Tx) error {
			return tx.PutRequestGroup(&store.RequestGroup{Id: "g0", Email: "b@example.com"})
		})
		h.view(func(tx store.Tx) error {
			got, err := tx.RequestGroup("g1")
			must(t, err)
			wantEqual(t, "RequestGroup", got, g2)
			var ids []string
			must(t, tx.RequestGroups(func(g *store.RequestGroup) error { ids = append(ids, g.GetId()); return nil }))
			if len(ids) != 2 || ids[0] != "g0" || ids[1] != "g1" {
				t.Fatalf("groups %v, want [g0 g1]", ids)
			}
			return nil
		})
		if err := h.s.Update(func(tx store.Tx) error { return tx.PutRequestGroup(&store.RequestGroup{}) }); err == nil {
			t.Fatal("a group without an id stored")
		}
		h.update(func(tx store.Tx) error { return tx.DeleteRequestGroup("g0") })
		err := h.s.Update(func(tx store.Tx) error { return tx.DeleteRequestGroup("g0") })
		wantErr(t, "second DeleteRequestGroup", err, store.ErrNotFound)
		h.view(func(tx store.Tx) error {
			_, err := tx.RequestGroup("g0")
			wantErr(t, "RequestGroup after its deletion", err, store.ErrNotFound)
			return nil
		})
	}},
}
