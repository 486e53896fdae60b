package mail

import (
	"errors"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
)

func TestEnqueueAssignsIDsAndMakesTheRecordDue(t *testing.T) {
	st := openStore(t)
	before := time.Now()
	for want := uint64(1); want <= 3; want++ {
		m := &store.Outbox{Kind: KindMail, To: "ada@EXAMPLE.org", Subject: "s", Text: "t", Attempts: 9, LastError: "stale"}
		enqueue(t, st, m)
		if m.GetId() != want {
			t.Fatalf("id = %d, want %d", m.GetId(), want)
		}
	}
	recs := outbox(t, st)
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	for _, r := range recs {
		next := r.GetNextAttemptAt().AsTime()
		if next.Before(before.Add(-time.Second)) || next.After(time.Now()) || !next.Equal(r.GetCreatedAt().AsTime()) {
			t.Errorf("record %d: next_attempt_at %v, created_at %v, want both now", r.GetId(), next, r.GetCreatedAt().AsTime())
		}
		if r.GetAttempts() != 0 || r.GetLastError() != "" || r.GetTo() != "ada@example.org" {
			t.Errorf("record %d: attempts %d, last_error %q, to %q", r.GetId(), r.GetAttempts(), r.GetLastError(), r.GetTo())
		}
	}
}

func TestEnqueueRefusesRecordsThatCannotBeDelivered(t *testing.T) {
	tests := []struct {
		name string
		m    *store.Outbox
		is   error
	}{
		{"mail to a display name is refused", &store.Outbox{Kind: KindMail, To: "Ada <ada@example.org>", Text: "t"}, ErrInvalidAddress},
		{"mail with a header in the address is refused", &store.Outbox{Kind: KindMail, To: "ada@example.org\r\nBcc: eve@example.org", Text: "t"}, ErrInvalidAddress},
		{"mail without a body is refused", &store.Outbox{Kind: KindMail, To: "ada@example.org"}, ErrInvalidRecord},
		{"a relative webhook URL is refused", &store.Outbox{Kind: KindWebhook, To: "/hook"}, ErrInvalidRecord},
		{"a webhook to another scheme is refused", &store.Outbox{Kind: KindWebhook, To: "file:///etc/passwd"}, ErrInvalidRecord},
		{"an empty command is refused", &store.Outbox{Kind: KindCommand}, ErrInvalidRecord},
		{"an unknown kind is refused", &store.Outbox{Kind: "pigeon", To: "x"}, ErrInvalidRecord},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := openStore(t)
			err := st.Update(func(tx store.Tx) error { return Enqueue(tx, tt.m) })
			if !errors.Is(err, tt.is) || !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("Enqueue = %v, want an error wrapping %v and ErrInvalidRecord", err, tt.is)
			}
			if n := len(outbox(t, st)); n != 0 {
				t.Fatalf("%d records written", n)
			}
		})
	}
}

func TestEnqueueBuildMailRefusesABadAddress(t *testing.T) {
	st := openStore(t)
	err := st.Update(func(tx store.Tx) error {
		return EnqueueBuildMail(tx, "ada", succeededBuild(), ComposeOptions{})
	})
	if !errors.Is(err, ErrInvalidAddress) {
		t.Fatalf("EnqueueBuildMail = %v, want ErrInvalidAddress", err)
	}
}
