package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

// mailLinkRE finds a labelled link in a mail's normalized text.
func mailLinkRE(label string) *regexp.Regexp {
	return regexp.MustCompile(`(?:^| )` + label + `: (https?://\S+)`)
}

// mailLinkGet fetches url as a browser would and returns its body.
func mailLinkGet(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(body)
}

// The links a notification carries must lead somewhere real: the
// metaserver's --public-url names a running webstatus, and from the mail
// alone a requester reaches the build page, its log, and the artifact whose
// bytes hash to the sha256 the mail announced.
func TestMailLinksLeadToTheBuildPageLogAndArtifactInWebstatus(t *testing.T) {
	port := farmtest.FreePort(t)
	sink := mailStartSink(t, port)
	webAddr := farmtest.FreeAddr(t)
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s",
		"--smtp-addr", sink.Addr, "--smtp-tls", "none",
		"--mail-from", "kiln@kiln.example.org", "--public-url", "http://"+webAddr)
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	f.AddProject("hello", repo)
	web := f.StartWebstatusAt(webAddr)
	mailStartBuilder(t, f)

	const ada = "ada@example.org"
	req := parseResult(t, f.Startcompile("--project", "hello", "--json", ada))
	if req.Cached || req.BuildID == 0 {
		t.Fatalf("request: %+v, want a new build", req)
	}
	done := parseResult(t, f.Startcompile("status", "--wait", "--json", strconv.FormatUint(req.BuildID, 10)))
	if done.State != "succeeded" || done.ArtifactSHA256 == "" {
		t.Fatalf("build: %+v, want succeeded with an artifact", done)
	}
	msgs := mailFor(mailWaitSettled(t, f, sink, 1, mailDeliveryTimeout), ada)
	if len(msgs) != 1 {
		t.Fatalf("%s received %d mails, want 1", ada, len(msgs))
	}
	text := mailNorm(msgs[0].Text)
	links := map[string]string{}
	for _, label := range []string{"build", "log"} {
		m := mailLinkRE(label).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("the mail has no %q link:\n%s", label, msgs[0].Text)
		}
		if !strings.HasPrefix(m[1], web.URL+"/") {
			t.Fatalf("%s link %q does not point at the webstatus named by --public-url (%s)", label, m[1], web.URL)
		}
		links[label] = m[1]
	}

	page := mailLinkGet(t, links["build"])
	for _, want := range []string{fmt.Sprintf("build %d", req.BuildID), "succeeded", done.ArtifactSHA256} {
		if !strings.Contains(strings.ToLower(page), strings.ToLower(want)) {
			t.Errorf("build page behind the mail's link lacks %q", want)
		}
	}
	href := regexp.MustCompile(`<a href="([^"]+)" id="artifact-link"`).FindStringSubmatch(page)
	if href == nil {
		t.Fatalf("build page has no artifact link:\n%s", page)
	}
	artifact := mailLinkGet(t, web.URL+href[1])
	sum := sha256.Sum256([]byte(artifact))
	if got := hex.EncodeToString(sum[:]); got != done.ArtifactSHA256 {
		t.Fatalf("artifact behind the page's link hashes to %s (%d bytes), the mail announced %s", got, len(artifact), done.ArtifactSHA256)
	}

	if log := mailLinkGet(t, links["log"]); !strings.Contains(log, "hello.c") {
		t.Errorf("log page behind the mail's link does not show the build's commands:\n%s", log)
	}
}
