package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// A requester's cancel withdraws its own wait only (issue 13, item 2):
// these tests play the attacker who joins a build to cancel it.

func TestCancelJoinThenCancelLeavesTheVictimsBuildRunning(t *testing.T) {
	port := farmtest.FreePort(t)
	sink := mailStartSink(t, port)
	f := mailFarm(t, port, farmtest.CProjectOptions{ManifestText: slowManifest(6)})
	web := f.StartWebstatus()
	bs := f.StartBuildserver(f.AddBuildServer("builder"))
	f.WaitBuildServers(1)
	const victim, attacker = "victim.private@example.org", "attacker.evil@example.net"
	needles := []string{"victim.private", "attacker.evil"}

	first := parseResult(t, f.Startcompile("--project", "hello", "--revision", "main", "--json", victim))
	// The attacker asks for the same build (its parameters are public)...
	joined := parseResult(t, f.Startcompile("--project", "hello", "--revision", "main", "--json", attacker))
	if !joined.Joined || joined.BuildID != first.BuildID {
		t.Fatalf("the attacker's request did not join the victim's build: %+v, %+v", first, joined)
	}
	id := strconv.FormatUint(first.BuildID, 10)
	waitRunningOn(t, f, first.BuildID, "builder")

	// ... and cancels it: only its own wait goes.
	r := f.Startcompile("cancel", "--email", attacker, id)
	expectExit(t, r, 0)
	if !strings.Contains(r.Stdout, "your wait is withdrawn") || !strings.Contains(r.Stdout, "goes on") {
		t.Fatalf("the attacker's cancel printed %q; want its wait withdrawn and the build going on", r.Stdout)
	}
	if b := f.GetBuild(t, first.BuildID); b.GetState() != kilnv1.BuildState_BUILD_STATE_RUNNING || b.GetWaiters() != 1 || b.GetFailure() != "" {
		t.Fatalf("the victim's build after the attacker's cancel: %s, %d waiters, failure %q; want running for the victim",
			b.GetState(), b.GetWaiters(), b.GetFailure())
	}
	mailCheckNoAddress(t, f, web.URL, first.BuildID, "after the attacker's cancel", needles)
	// A stranger's cancel, and the attacker's second one, are refused.
	expectExit(t, f.Startcompile("cancel", "--email", "stranger@example.com", id), 2)
	r = f.Startcompile("cancel", "--email", attacker, id)
	expectExit(t, r, 2)
	if !strings.Contains(r.Stderr, "already withdrawn") {
		t.Fatalf("a second withdrawal said %q; want that it is already withdrawn", r.Stderr)
	}

	r = f.Startcompile("status", "--wait", "--json", id)
	expectExit(t, r, 0)
	if got := parseResult(t, r); got.State != "succeeded" {
		t.Fatalf("the victim's build: %+v; want succeeded", got)
	}
	msgs := mailWaitSettled(t, f, sink, 1, mailDeliveryTimeout)
	got := mailFor(msgs, victim)
	if len(got) != 1 || !strings.HasSuffix(got[0].Subject(), ": succeeded (verified)") {
		t.Fatalf("the victim got %d mails (%v); want one saying succeeded (verified)", len(got), msgs)
	}
	if strings.Contains(strings.ToLower(got[0].Text), "attacker.evil") {
		t.Fatalf("the victim's mail names the attacker:\n%s", got[0].Text)
	}
	if n := len(mailFor(msgs, attacker)); n != 0 {
		t.Fatalf("the attacker got %d mails after withdrawing; want none", n)
	}
	if strings.Contains(bs.Logs(), "CANCELLED") {
		t.Fatalf("the build server was told to cancel the victim's build:\n%s", bs.Logs())
	}
	mailCheckNoAddress(t, f, web.URL, first.BuildID, "when succeeded", needles)
}

func TestCancelTheLastWithdrawalCancelsAQueuedBuildAndMailsNobody(t *testing.T) {
	port := farmtest.FreePort(t)
	sink := mailStartSink(t, port)
	f := mailFarm(t, port, farmtest.CProjectOptions{Manifest: true})
	web := f.StartWebstatus()
	const ada, bob = "ada.private@example.org", "bob.private@example.net"
	// No build server: the build stays queued.
	first := parseResult(t, f.Startcompile("--project", "hello", "--revision", "main", "--json", ada))
	joined := parseResult(t, f.Startcompile("--project", "hello", "--revision", "main", "--json", bob))
	if first.State != "queued" || !joined.Joined || joined.BuildID != first.BuildID {
		t.Fatalf("requests: %+v\n%+v", first, joined)
	}
	id := strconv.FormatUint(first.BuildID, 10)
	r := f.Startcompile("cancel", "--email", ada, id)
	expectExit(t, r, 0)
	if b := f.GetBuild(t, first.BuildID); b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED || b.GetWaiters() != 1 {
		t.Fatalf("after ada withdrew: %s with %d waiters; want queued for bob", b.GetState(), b.GetWaiters())
	}
	r = f.Startcompile("cancel", "--email", bob, id)
	expectExit(t, r, 0)
	if strings.TrimSpace(r.Stdout) != "build "+id+" cancelled" {
		t.Fatalf("the last withdrawal printed %q", r.Stdout)
	}
	// Cancelled in the transaction that queues its mail: an empty outbox
	// now means no mail at all.
	mailWaitSettled(t, f, sink, 0, mailDeliveryTimeout)

	r = f.Startcompile("status", "--json", id)
	expectExit(t, r, 1)
	if got := parseResult(t, r); got.State != "cancelled" || got.Failure != "withdrawn by its last requester" {
		t.Fatalf("status: %+v; want cancelled, withdrawn by its last requester", got)
	}
	mailCheckNoAddress(t, f, web.URL, first.BuildID, "when cancelled", []string{"ada.private", "bob.private"})
	// A build server arriving later neither builds it nor causes a mail.
	mailStartBuilder(t, f)
	expectExit(t, f.Startcompile("--project", "hello", "-o", "level=1", "--wait", "--json", "carol@example.org"), 0)
	if b := f.GetBuild(t, first.BuildID); b.GetState() != kilnv1.BuildState_BUILD_STATE_CANCELLED || len(b.GetAttempts()) != 0 {
		t.Fatalf("cancelled build after a build server came: %s, %d attempts", b.GetState(), len(b.GetAttempts()))
	}
	msgs := mailWaitSettled(t, f, sink, 1, mailDeliveryTimeout)
	if len(mailFor(msgs, "carol@example.org")) != 1 {
		t.Fatalf("mail went to %v; want carol's build only", msgs)
	}
}
