package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

func TestTheRequestRateLimitPerAddressRefusesTheThirdRequest(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--requests-per-minute", "2")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	f.AddProject("hello", repo)
	// No build server: the requests stay queued.
	for _, level := range []string{"1", "2"} {
		r := f.Startcompile("--project", "hello", "-o", "level="+level, "--json", "flood@example.com")
		expectExit(t, r, 0)
		if got := parseResult(t, r); got.State != "queued" {
			t.Fatalf("request %s: %+v", level, got)
		}
	}
	r := f.Startcompile("--project", "hello", "-o", "level=3", "flood@example.com")
	expectExit(t, r, 2)
	if !strings.Contains(r.Stderr, "metaserver refused the request (ResourceExhausted)") || !strings.Contains(r.Stderr, "too many requests") {
		t.Fatalf("the refused request's message:\n%s", r.Stderr)
	}
	if n := len(listBuilds(t, f)); n != 2 {
		t.Fatalf("%d builds after the refused request, want 2", n)
	}
	// The same address with --json: exit 2 and the error in the JSON.
	r = f.Startcompile("--project", "hello", "-o", "level=3", "--json", "flood@example.com")
	expectExit(t, r, 2)
	if got := parseResult(t, r); got.BuildID != 0 {
		t.Fatalf("refused request answered %+v", got)
	}
	// Another address is not limited.
	r = f.Startcompile("--project", "hello", "-o", "level=3", "--json", "other@example.com")
	expectExit(t, r, 0)
	if got := parseResult(t, r); got.State != "queued" || got.BuildID == 0 {
		t.Fatalf("another address: %+v", got)
	}
	if n := len(listBuilds(t, f)); n != 3 {
		t.Fatalf("%d builds, want 3", n)
	}
}

// The per-network-address limit holds whatever email each request names:
// the third request from this host within the minute is refused even from
// a new requester.
func TestTheRequestRateLimitPerNetworkAddressHoldsAcrossEmails(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--requests-per-minute-per-address", "2")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	f.AddProject("hello", repo)
	for i, email := range []string{"one@example.com", "two@example.com"} {
		r := f.Startcompile("--project", "hello", "-o", "level="+strconv.Itoa(i+1), "--json", email)
		expectExit(t, r, 0)
	}
	r := f.Startcompile("--project", "hello", "-o", "level=3", "three@example.com")
	expectExit(t, r, 2)
	if !strings.Contains(r.Stderr, "ResourceExhausted") || !strings.Contains(r.Stderr, "127.0.0.1") {
		t.Fatalf("the refused request's message names neither the limit nor the address:\n%s", r.Stderr)
	}
	if n := len(listBuilds(t, f)); n != 2 {
		t.Fatalf("%d builds after the refused request, want 2", n)
	}
}
