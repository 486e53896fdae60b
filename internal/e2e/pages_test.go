package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/web/webtest"
)

// pagesPlatforms are the three platforms of the pages farm, as check's
// --platform takes them: x86_64 glibc and musl pass littleonly's check,
// s390x (big-endian) fails it.
var pagesPlatforms = []string{
	"os=linux,arch=x86_64,endian=little,data_model=LP64,libc=glibc",
	"os=linux,arch=s390x,endian=big,data_model=LP64,libc=glibc",
	"os=linux,arch=x86_64,endian=little,data_model=LP64,libc=musl",
}

// pagesCheck runs startcompile check of littleonly at rev on the three
// platforms as requester, with extra flags, and returns its JSON result.
func pagesCheck(t *testing.T, f *farmtest.Farm, rev, requester string, extra ...string) (farmtest.Result, checkJSON) {
	t.Helper()
	args := []string{"check", "--project", "littleonly", "--revision", rev, "--json"}
	for _, p := range pagesPlatforms {
		args = append(args, "--platform", p)
	}
	r := f.Startcompile(append(append(args, extra...), requester)...)
	var cr checkJSON
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &cr); err != nil {
		t.Fatalf("check printed %q (%v); stderr:\n%s", r.Stdout, err, r.Stderr)
	}
	return r, cr
}

// checkJSON is what a test reads of `check --json`.
type checkJSON struct {
	Succeeded []checkEntryJSON `json:"succeeded"`
	Failed    []checkEntryJSON `json:"failed"`
}

type checkEntryJSON struct {
	Platform string `json:"platform"`
	BuildID  uint64 `json:"build_id"`
	State    string `json:"state"`
}

// pagesSummaryLists checks that m is the summary of the builds in want
// (build id -> "succeeded" or "failed"): its subject counts them, its text
// lists each under SUCCESS or FAILURE with its link.
func pagesSummaryLists(t *testing.T, m *mailMessage, want map[uint64]string) {
	t.Helper()
	failed := 0
	for _, st := range want {
		if st != "succeeded" {
			failed++
		}
	}
	if s := m.Subject(); !strings.HasPrefix(s, "[kiln] littleonly ") || !strings.HasSuffix(s, fmt.Sprintf("on %d platforms : %d of %d failed", len(want), failed, len(want))) {
		t.Errorf("summary subject %q", s)
	}
	fail, ok, found := strings.Index(m.Text, "FAILURE ("), strings.Index(m.Text, "SUCCESS ("), 0
	if fail < 0 || ok < fail {
		t.Fatalf("summary lacks FAILURE then SUCCESS:\n%s", m.Text)
	}
	for id, st := range want {
		line := fmt.Sprintf("build #%d on ", id)
		at := strings.Index(m.Text, line)
		if at < 0 || (st == "succeeded") != (at > ok) {
			t.Errorf("build %d (%s) not listed in its section:\n%s", id, st, m.Text)
			continue
		}
		found++
		if !strings.Contains(m.Text, fmt.Sprintf("%s/build/%d\n", mailPublicURL, id)) {
			t.Errorf("summary lacks the link of build %d", id)
		}
	}
	if n := strings.Count(m.Text, "build #"); n != len(want) || found != len(want) {
		t.Errorf("summary lists %d builds, want %d:\n%s", n, len(want), m.Text)
	}
}

// TestPagesSummaryMailChartsAndProjectPage is issue 19 on one farm: a
// build server with native, s390x and musl targets builds littleonly
// (broken on s390x) at two commits through `startcompile check`; each
// check mails its requester one summary (the second one across a
// metaserver restart), and the browser checks the project page, the
// charts and the feed, saving the screenshots (to $KILN_SCREENSHOTS when
// set: docs/screenshots holds the committed ones).
func TestPagesSummaryMailChartsAndProjectPage(t *testing.T) {
	port := farmtest.FreePort(t)
	sink := mailStartSink(t, port)
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--sample-interval", "1s",
		"--smtp-addr", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "--smtp-tls", "none",
		"--mail-from", "kiln@kiln.example.org", "--public-url", mailPublicURL)
	repo, c1 := farmtest.CProject(t, farmtest.CProjectOptions{Name: "littleonly", Endian: true, ManifestText: platformLittleOnlyManifest})
	f.AddProject("littleonly", "file://"+repo)
	const multi = "multi"
	token := f.AddBuildServer(multi)
	bsArgs := []string{"--jobs", "2", "--target", "native", "--target", "cross:s390x-linux-gnu", "--target", "musl"}
	bs := f.StartBuildserver(token, bsArgs...)
	platformWaitTargets(t, f, multi, "native", "cross:s390x-linux-gnu", "musl")
	const dev, other = "dev@example.com", "other@example.org"

	var brokenID, okID uint64
	t.Run("check mails one summary listing every build", func(t *testing.T) {
		r, cr := pagesCheck(t, f, c1, dev, "--timeout", "120s")
		expectExit(t, r, 1)
		if len(cr.Succeeded) != 2 || len(cr.Failed) != 1 || !strings.Contains(cr.Failed[0].Platform, "s390x") {
			t.Fatalf("check: %+v", cr)
		}
		brokenID, okID = cr.Failed[0].BuildID, cr.Succeeded[0].BuildID
		msgs := mailWaitSettled(t, f, sink, 1, mailDeliveryTimeout)
		if got := mailFor(msgs, dev); len(got) != 1 {
			t.Fatalf("%s got %d mails, want 1", dev, len(got))
		}
		pagesSummaryLists(t, msgs[0], map[uint64]string{
			cr.Succeeded[0].BuildID: "succeeded", cr.Succeeded[1].BuildID: "succeeded", brokenID: "failed"})
		if sent, err := mailMetric(f, "kiln_mail_sent_total"); err != nil || sent != 1 {
			t.Errorf("kiln_mail_sent_total = %v (%v), want 1", sent, err)
		}
	})

	t.Run("a summary requested before a metaserver restart arrives once after it", func(t *testing.T) {
		c2 := farmtest.Commit(t, repo, map[string]string{"NEWS": "second commit\n"}, "second")
		if err := bs.Stop(); err != nil {
			t.Fatal(err)
		}
		// Nobody builds: check submits and seals, then gives up waiting.
		r, cr := pagesCheck(t, f, c2, dev, "--timeout", "2s")
		if r.Exit == 0 || len(cr.Failed) != 3 || cr.Failed[0].BuildID == 0 {
			t.Fatalf("check without a build server: exit %d %+v\n%s", r.Exit, cr, r.Stderr)
		}
		// Another requester's request for c2 on s390x is mailed on its
		// own, never through dev's summary.
		if r := f.Startcompile("--project", "littleonly", "--revision", c2, "--os", "any", "--arch", "s390x", "--endian", "any", "--data-model", "any", "--libc", "any", "--json", other); r.Exit != 0 {
			t.Fatalf("other's request: exit %d\n%s", r.Exit, r.Stderr)
		}
		f.Meta().Restart()
		// The same build server again: its credential is pinned to the
		// signing key in its data directory.
		if err := bs.Start(); err != nil {
			t.Fatal(err)
		}
		want := map[uint64]string{}
		for _, e := range cr.Failed {
			b := f.GetBuild(t, e.BuildID)
			farmtest.Eventually(t, 120*time.Second, func() error {
				b = f.GetBuild(t, e.BuildID)
				if !b.GetState().Final() {
					return fmt.Errorf("build %d is %s", e.BuildID, b.GetState().Word())
				}
				return nil
			})
			want[e.BuildID] = b.GetState().Word()
		}
		// One more summary for dev, one mail for other's own request.
		msgs := mailWaitSettled(t, f, sink, 3, mailDeliveryTimeout)
		devMails := mailFor(msgs, dev)
		if len(devMails) != 2 || len(mailFor(msgs, other)) != 1 {
			t.Fatalf("mails: %d to %s, %d to %s; want 2 and 1", len(devMails), dev, len(mailFor(msgs, other)), other)
		}
		for _, m := range devMails {
			if strings.Contains(m.Text, fmt.Sprintf("build #%d on ", cr.Failed[0].BuildID)) {
				pagesSummaryLists(t, m, want)
				return
			}
		}
		t.Fatalf("no summary of the second check among %d mails", len(devMails))
	})

	t.Run("the browser sees the project page, the charts and the feed", func(t *testing.T) {
		f.Pin("littleonly-1.0", okID)
		ws := f.StartWebstatus()
		webtest.ProjectCheck(t, ws.URL, "littleonly", webtest.ProjectOptions{
			ScreenshotDir: os.Getenv("KILN_SCREENSHOTS"),
			Platforms:     3, BrokenPlatform: "s390x", BuildID: brokenID, Samples: 3, Pin: "littleonly-1.0",
		})
	})
}

// pagesSlowManifest prints a numbered line every 300 ms for about 3 s, so
// a follower sees the log grow.
const pagesSlowManifest = `options:
  round:
    type: int
    default: 1
    description: makes each test round a build of its own
build:
  - 'for i in 1 2 3 4 5 6 7 8 9 10; do echo "slow line $i"; sleep 0.3; done; echo $KILN_OPT_ROUND > out.txt'
artifacts:
  - out.txt
timeout: 5m
`

// TestLogDashFFollowsARunningBuildToItsEnd starts `startcompile log -f`
// (flags after the subcommand and before it) while a build runs and
// checks that it prints the whole log, lines written after it started
// included, once each, and ends when the build does.
func TestLogDashFFollowsARunningBuildToItsEnd(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Name: "slow", ManifestText: pagesSlowManifest})
	f.AddProject("slow", "file://"+repo)
	f.StartBuildserver(f.AddBuildServer("builder"))
	f.WaitBuildServers(1)
	for round, args := range [][]string{{"log", "-f"}, {"-f", "log"}} {
		r := f.Startcompile("--project", "slow", "--json", "-o", fmt.Sprintf("round=%d", round), "dev@example.com")
		res := parseResult(t, r)
		if res.BuildID == 0 {
			t.Fatalf("submit: %+v\n%s", res, r.Stderr)
		}
		id := strconv.FormatUint(res.BuildID, 10)
		// Wait until the log has begun but is far from done.
		farmtest.Eventually(t, 60*time.Second, func() error {
			r := f.Startcompile("log", id)
			if !strings.Contains(r.Stdout, "slow line 1\n") {
				return fmt.Errorf("log so far: %q", r.Stdout)
			}
			return nil
		})
		if st := f.GetBuild(t, res.BuildID).GetState(); st.Final() {
			t.Fatalf("build %s already %s before the follow began", id, st.Word())
		}
		r = f.Startcompile(append(args, id)...)
		expectExit(t, r, 0)
		for i := 1; i <= 10; i++ {
			if n := strings.Count(r.Stdout, fmt.Sprintf("slow line %d\n", i)); n != 1 {
				t.Fatalf("%v: line %d printed %d times:\n%s", args, i, n, r.Stdout)
			}
		}
		if st := f.GetBuild(t, res.BuildID).GetState(); !st.Final() {
			t.Fatalf("%v returned while build %s is %s", args, id, st.Word())
		}
	}
}
