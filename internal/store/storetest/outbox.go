package storetest

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/store"
)

func message(id uint64, next *timestamppb.Timestamp) *store.Outbox {
	return &store.Outbox{Id: id, Kind: "mail", To: "dev@example.invalid", Subject: "built", NextAttemptAt: next, CreatedAt: ts(0), BuildId: 3}
}

func (h *harness) putMessages(ms ...*store.Outbox) {
	h.t.Helper()
	h.update(func(tx store.Tx) error {
		for _, m := range ms {
			if err := tx.PutOutbox(m); err != nil {
				return err
			}
		}
		return nil
	})
}

// due returns the ids DueOutbox gives.
func (h *harness) due(now time.Time, limit int) []uint64 {
	h.t.Helper()
	var ids []uint64
	h.view(func(tx store.Tx) error {
		ms, err := tx.DueOutbox(now, limit)
		if err != nil {
			return err
		}
		for _, m := range ms {
			ids = append(ids, m.GetId())
		}
		return nil
	})
	return ids
}

func (h *harness) outboxLen() int {
	h.t.Helper()
	var n int
	h.view(func(tx store.Tx) (err error) {
		n, err = tx.OutboxLen()
		return err
	})
	return n
}

var outboxCases = []testCase{
	{"due messages come by next attempt time, then id", func(t *testing.T, h *harness) {
		h.putMessages(
			message(1, ts(2*time.Second)),
			message(4, ts(time.Hour)),
			message(3, ts(0)),
			message(2, ts(0)),
			message(5, nil), // no next attempt time: due at once
			message(6, ts(-time.Hour)),
			message(7, timestamppb.New(time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC))),
		)
		now := base.Add(2 * time.Second)
		wantIDs(t, "due", h.due(now, 10), []uint64{7, 5, 6, 2, 3, 1})
		wantIDs(t, "limit 2", h.due(now, 2), []uint64{7, 5})
		wantIDs(t, "a nanosecond earlier", h.due(now.Add(-time.Nanosecond), 10), []uint64{7, 5, 6, 2, 3})
		wantIDs(t, "in two hours", h.due(base.Add(2*time.Hour), 10), []uint64{7, 5, 6, 2, 3, 1, 4})
		if n := h.outboxLen(); n != 7 {
			t.Fatalf("OutboxLen: got %d, want 7", n)
		}
	}},
	{"a message read back is equal to the one put", func(t *testing.T, h *harness) {
		want := message(1, ts(5))
		want.Body = []byte(`{"build":3}`)
		want.LastError = "421 try later"
		want.Attempts = 2
		h.putMessages(want)
		h.view(func(tx store.Tx) error {
			ms, err := tx.DueOutbox(base.Add(time.Second), 1)
			must(t, err)
			if len(ms) != 1 {
				t.Fatalf("DueOutbox: got %d messages, want 1", len(ms))
			}
			wantEqual(t, "message", ms[0], want)
			return nil
		})
	}},
	{"rescheduling a message moves it in the due order and counts it once", func(t *testing.T, h *harness) {
		h.putMessages(message(1, ts(0)), message(2, ts(time.Second)))
		m := message(1, ts(time.Minute))
		m.Attempts = 1
		h.putMessages(m)
		wantIDs(t, "due after the retry was scheduled", h.due(base.Add(time.Second), 10), []uint64{2})
		wantIDs(t, "due once the retry is due", h.due(base.Add(time.Minute), 10), []uint64{2, 1})
		if n := h.outboxLen(); n != 2 {
			t.Fatalf("OutboxLen: got %d, want 2", n)
		}
	}},
	{"a deleted message is neither due nor counted", func(t *testing.T, h *harness) {
		h.putMessages(message(1, ts(0)), message(2, ts(0)), message(3, ts(0)))
		h.update(func(tx store.Tx) error { return tx.DeleteOutbox(2) })
		wantIDs(t, "due", h.due(base, 10), []uint64{1, 3})
		if n := h.outboxLen(); n != 2 {
			t.Fatalf("OutboxLen: got %d, want 2", n)
		}
		err := h.s.Update(func(tx store.Tx) error { return tx.DeleteOutbox(2) })
		wantErr(t, "deleting it again", err, store.ErrNotFound)
		h.update(func(tx store.Tx) error {
			if err := tx.DeleteOutbox(1); err != nil {
				return err
			}
			return tx.DeleteOutbox(3)
		})
		wantIDs(t, "due when empty", h.due(base.Add(time.Hour), 10), nil)
		if n := h.outboxLen(); n != 0 {
			t.Fatalf("OutboxLen when empty: got %d, want 0", n)
		}
	}},
}
