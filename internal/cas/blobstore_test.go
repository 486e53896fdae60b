package cas

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestStore_Methods_DoneContextFailsBeforeTouchingTheStore(t *testing.T) {
	s := openStore(t)
	sha, _, err := s.Put(t.Context(), strings.NewReader("kept"), "", -1)
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("pending")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := map[string]func() error{
		"Stat":   func() error { _, err := s.Stat(ctx, sha); return err },
		"Open":   func() error { _, _, err := s.Open(ctx, sha); return err },
		"Create": func() error { _, err := s.Create(ctx); return err },
		"Delete": func() error { return s.Delete(ctx, sha) },
		"Walk":   func() error { return s.Walk(ctx, func(string, time.Time) error { return nil }) },
		"Verify": func() error { return s.Verify(ctx, sha) },
		"Commit": func() error { _, _, err := w.Commit(ctx, "", -1); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a done context: %v, want context.Canceled", name, err)
		}
	}
	if _, err := s.Stat(t.Context(), sha); err != nil {
		t.Errorf("blob after the refused Delete: %v", err)
	}
	if got := tmpEntries(t, s); len(got) != 0 {
		t.Errorf("the refused Commit left temporary files: %v", got)
	}
}
