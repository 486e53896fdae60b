package compilecli

import (
	"strings"
	"testing"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestCheckSubmitsOneGroupAndSealsIt(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want kilnv1.MailMode
	}{
		{nil, kilnv1.MailMode_MAIL_MODE_SUMMARY},
		{[]string{"--mail", "each"}, kilnv1.MailMode_MAIL_MODE_EACH},
		{[]string{"--mail=none"}, kilnv1.MailMode_MAIL_MODE_NONE},
	} {
		f := matrixFake(t, map[string]kilnv1.BuildState{"s390x": kilnv1.BuildState_BUILD_STATE_FAILED})
		args := append([]string{"check", "--project", "hello"}, tt.args...)
		_, stderr, code := f.run(t, append(args, email)...)
		if code != ExitFailed {
			t.Fatalf("%v: exit %d\n%s", tt.args, code, stderr)
		}
		if len(f.submits) != 2 {
			t.Fatalf("%d submits", len(f.submits))
		}
		group := f.submits[0].GetGroup()
		if len(group) < 16 || f.submits[1].GetGroup() != group {
			t.Fatalf("groups %q and %q: want one random id", group, f.submits[1].GetGroup())
		}
		for _, s := range f.submits {
			if s.GetMail() != tt.want {
				t.Errorf("%v: mail %v, want %v", tt.args, s.GetMail(), tt.want)
			}
		}
		if len(f.seals) != 1 || f.seals[0].GetGroup() != group || f.seals[0].GetEmail() != email {
			t.Fatalf("seals %v, want one of group %s", f.seals, group)
		}
	}
	// Two checks draw two groups.
	a, b := matrixFake(t, nil), matrixFake(t, nil)
	a.run(t, "check", "--project", "hello", email)
	b.run(t, "check", "--project", "hello", email)
	if a.submits[0].GetGroup() == b.submits[0].GetGroup() {
		t.Fatal("two checks share a group id")
	}
}

func TestABadMailValueSubmitsNothing(t *testing.T) {
	for _, args := range [][]string{
		{"check", "--project", "hello", "--mail", "weekly", email},
		{"check", "--project", "hello", "--mail=", email},
		{"--project", "hello", "--mail", "summary", email},
		{"--project", "hello", "--mail", "EACH", email},
	} {
		f := matrixFake(t, nil)
		_, stderr, code := f.run(t, args...)
		if code != ExitInvalid || !strings.Contains(stderr, "mail") || len(f.submits) != 0 || len(f.seals) != 0 {
			t.Fatalf("%q: exit %d, %d submits; stderr %s", args, code, len(f.submits), stderr)
		}
	}
}

func TestSubmitSendsItsMailMode(t *testing.T) {
	f := startFake(t)
	f.submit = answerQueued(5)
	f.watch = script(upd(final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)))
	if _, stderr, code := f.run(t, "--project", "hello", "--mail", "none", email); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if r := f.submits[0]; r.GetMail() != kilnv1.MailMode_MAIL_MODE_NONE || r.GetGroup() != "" {
		t.Fatalf("request %v", r)
	}
}
