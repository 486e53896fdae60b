package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/web/webtest"
)

// webRequester is the address every request of the web tests is made with;
// no page may ever show it (nor any other address).
const webRequester = "secret.requester@example.org"

// webEmailRe matches anything shaped like an email address.
var webEmailRe = regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`)

// webLiveManifest is the kiln.yaml of the "live" project, whose one build
// step is driven by the test: it prints "live line N is here" once the file
// CTRL/go-N exists, and ends (successfully) once CTRL/stop exists. It gives
// up by itself after about 150 s, so even a leaked step cannot loop on.
const webLiveManifest = `build:
  - |
    echo "live build waiting for the test"
    n=0; t=0
    while [ ! -e CTRL/stop ] && [ $t -lt 1500 ]; do
      if [ -e CTRL/go-$((n+1)) ]; then
        n=$((n+1)); echo "live line $n is here"
      else
        sleep 0.1; t=$((t+1))
      fi
    done
    echo "live build done after $n lines" > done.txt
artifacts:
  - done.txt
timeout: 5m
`

// TestWebPagesOfARealFarmWorkInABrowser builds one project to the end and
// keeps a second build running under the test's control, then checks
// webstatus in headless Chromium (every page, links, the live log), every
// link of every page over HTTP, the JSON form of every page, the artifact
// download, and that no page shows the requester's address.
//
// The build server runs with --sandbox none so the live build's step can
// watch a directory of the test (bubblewrap would give it a private /tmp).
func TestWebPagesOfARealFarmWorkInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a farm and a browser")
	}
	ctrl := t.TempDir()
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s")
	helloRepo, head := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	liveRepo, _ := farmtest.CProject(t, farmtest.CProjectOptions{
		Name:         "live",
		ManifestText: strings.ReplaceAll(webLiveManifest, "CTRL", ctrl),
	})
	f.AddProject("hello", "file://"+helloRepo)
	f.AddProject("live", "file://"+liveRepo)
	f.StartBuildserver(f.AddBuildServer("volunteer-1"), "--sandbox", "none")
	f.WaitBuildServers(1)
	// Registered after the build server's cleanup, so it runs first: the
	// live step ends before its build server is killed.
	t.Cleanup(func() { _ = os.WriteFile(filepath.Join(ctrl, "stop"), nil, 0o644) })

	out := filepath.Join(t.TempDir(), "out")
	r := f.Startcompile("--project", "hello", "--download", out, "--json", webRequester)
	expectExit(t, r, 0)
	done := parseResult(t, r)
	if done.State != "succeeded" || done.Commit != head || done.ArtifactSHA256 == "" {
		t.Fatalf("finished build: %+v; want succeeded at %s with an artifact", done, head)
	}

	r = f.Startcompile("--project", "live", "--json", webRequester)
	expectExit(t, r, 0)
	live := parseResult(t, r)
	if live.BuildID == 0 || live.BuildID == done.BuildID {
		t.Fatalf("live build: %+v", live)
	}

	ws := f.StartWebstatus()
	c := &webClient{t: t, base: ws.URL}
	liveID := strconv.FormatUint(live.BuildID, 10)
	// Wait until the live step runs and waits for the test.
	farmtest.Eventually(t, 60*time.Second, func() error {
		var v struct {
			State string `json:"state"`
			Log   string `json:"log"`
		}
		if err := c.getJSON("/build/"+liveID+"/log", &v); err != nil {
			return err
		}
		if v.State != "running" || !strings.Contains(v.Log, "live build waiting for the test") {
			return fmt.Errorf("live build is %s with log %q", v.State, v.Log)
		}
		return nil
	})

	t.Run("every page and link answers over HTTP, as HTML and JSON, without addresses", func(t *testing.T) {
		c := &webClient{t: t, base: ws.URL}
		doneID := strconv.FormatUint(done.BuildID, 10)
		pages := []string{"/", "/metaserverstatus", "/buildservers", "/builds",
			"/builds?project=hello", "/builds?state=running",
			"/build/" + doneID, "/build/" + doneID + "/log?snapshot=1",
			"/build/" + liveID, "/build/" + liveID + "/log?snapshot=1"}
		c.checkPagesAndLinks(pages)
		for _, p := range append(pages, "/build/"+doneID+"/log", "/build/"+doneID+"/artifact") {
			c.checkJSON(p)
		}
		var b struct {
			State string `json:"state"`
			Final bool   `json:"final"`
		}
		if err := c.getJSON("/build/"+liveID, &b); err != nil || b.State != "running" || b.Final {
			t.Errorf("/build/%s as JSON: %+v, %v; want running, not final", liveID, b, err)
		}
	})

	t.Run("the artifact link downloads the bytes startcompile reported", func(t *testing.T) {
		c := &webClient{t: t, base: ws.URL}
		c.checkArtifact(done)
	})

	t.Run("Chromium sees every page, follows links and the live log", func(t *testing.T) {
		shots := webScreenshotDir(t)
		n := 0
		webtest.BrowserCheck(t, ws.URL, done.BuildID, webtest.Options{
			ScreenshotDir: shots,
			LiveBuildID:   live.BuildID,
			NextLine: func(t *testing.T) string {
				n++
				if err := os.WriteFile(filepath.Join(ctrl, "go-"+strconv.Itoa(n)), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				return fmt.Sprintf("live line %d is here", n)
			},
		})
		if t.Skipped() || t.Failed() {
			return
		}
		pngs, _ := filepath.Glob(filepath.Join(shots, "*.png"))
		if len(pngs) < 11 {
			t.Errorf("%d screenshots in %s, want at least 11 (pages, links, live log)", len(pngs), shots)
		}
		for _, p := range pngs {
			b, err := os.ReadFile(p)
			if err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
				t.Errorf("screenshot %s is not a PNG (%d bytes, %v)", p, len(b), err)
			}
		}
	})

	// Let the live build end; its followed log must end with it.
	if err := os.WriteFile(filepath.Join(ctrl, "stop"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	liveOut := filepath.Join(t.TempDir(), "live")
	r = f.Startcompile("status", "--download", liveOut, "--json", liveID)
	expectExit(t, r, 0)
	if got := parseResult(t, r); got.State != "succeeded" {
		t.Fatalf("live build after stop: %+v", got)
	}
	doneTxt, err := os.ReadFile(filepath.Join(liveOut, "done.txt"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("live build artifact: %s", strings.TrimSpace(string(doneTxt)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Not ?snapshot: the streaming form must end now that the build is final.
	body, status, err := c.get(ctx, "/build/"+liveID+"/log", "")
	if err != nil || status != http.StatusOK {
		t.Fatalf("log page of the finished live build: %d, %v", status, err)
	}
	if !strings.Contains(body, "live build waiting for the test") || !strings.Contains(body, "succeeded") {
		t.Errorf("log page of the finished live build lacks its log or state:\n%s", body)
	}
	if webEmailRe.MatchString(body) {
		t.Errorf("log page shows an address: %q", webEmailRe.FindString(body))
	}
}

// webScreenshotDir is $KILN_SCREENSHOTS/e2e-farm when that is set (so a
// person can look at them and the package web's own shots are not
// overwritten), else a temporary directory.
func webScreenshotDir(t *testing.T) string {
	if d := os.Getenv("KILN_SCREENSHOTS"); d != "" {
		return filepath.Join(d, "e2e-farm")
	}
	return t.TempDir()
}

// webClient reads webstatus over plain HTTP.
type webClient struct {
	t    *testing.T
	base string
}

var webHTTP = &http.Client{}

// get fetches path (absolute path with query) with the Accept header
// accept ("" for the browser default) and returns the body read until the
// server ends it or ctx does.
func (c *webClient) get(ctx context.Context, path, accept string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return "", 0, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := webHTTP.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode, err
}

// getJSON decodes path's JSON form into v.
func (c *webClient) getJSON(path string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, status, err := c.get(ctx, path, "application/json")
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s as JSON: status %d: %s", path, status, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		return fmt.Errorf("GET %s as JSON: %w in %q", path, err, body)
	}
	return nil
}

// checkJSON checks that path answers valid JSON with no address in it.
func (c *webClient) checkJSON(path string) {
	c.t.Helper()
	var v any
	if err := c.getJSON(path, &v); err != nil {
		c.t.Error(err)
		return
	}
	b, _ := json.Marshal(v)
	if m := webEmailRe.FindString(string(b)); m != "" {
		c.t.Errorf("GET %s as JSON shows the address %q", path, m)
	}
}

// webHrefRe finds link targets in HTML.
var webHrefRe = regexp.MustCompile(`(?:href|src|action)="([^"]*)"`)

// checkPagesAndLinks loads each page as HTML, checks it shows no address,
// and then requests every same-site link found on any of them: each must
// answer 200. Streaming answers (the log of a running build) count as soon
// as their headers arrive.
func (c *webClient) checkPagesAndLinks(pages []string) {
	t := c.t
	t.Helper()
	links := map[string]string{} // link -> page it was found on
	for _, p := range pages {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		body, status, err := c.get(ctx, p, "")
		cancel()
		if err != nil || status != http.StatusOK {
			t.Errorf("GET %s: status %d, %v", p, status, err)
			continue
		}
		if !strings.Contains(body, "<h1") {
			t.Errorf("GET %s: no heading in\n%s", p, body)
		}
		if strings.Contains(body, webRequester) || webEmailRe.MatchString(body) {
			t.Errorf("GET %s shows an address %q", p, webEmailRe.FindString(body))
		}
		for _, m := range webHrefRe.FindAllStringSubmatch(body, -1) {
			u, err := url.Parse(html.UnescapeString(m[1]))
			if err != nil {
				t.Errorf("%s links to %q: %v", p, m[1], err)
				continue
			}
			if u.Scheme != "" || u.Host != "" || u.Path == "" {
				continue // elsewhere, or a fragment of this page
			}
			if !strings.HasPrefix(u.Path, "/") {
				base, _ := url.Parse(p)
				u = base.ResolveReference(u)
			}
			u.Fragment = ""
			if _, seen := links[u.String()]; !seen {
				links[u.String()] = p
			}
		}
	}
	if len(links) < len(pages) {
		t.Errorf("found only %d links on %d pages: %v", len(links), len(pages), links)
	}
	for link, from := range links {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+link, nil)
		resp, err := webHTTP.Do(req) // returns at the headers: fine for streams
		if err != nil {
			t.Errorf("link %s (on %s): %v", link, from, err)
		} else {
			if resp.StatusCode != http.StatusOK {
				t.Errorf("link %s (on %s): status %s", link, from, resp.Status)
			}
			resp.Body.Close()
		}
		cancel()
	}
	t.Logf("%d links on %d pages answer 200", len(links), len(pages))
}

// webArtifactLinkRe finds the artifact link of a build page.
var webArtifactLinkRe = regexp.MustCompile(`<a href="([^"]+)" id="artifact-link" download="([^"]+)"`)

// checkArtifact follows the build page's artifact link and checks the bytes
// against what startcompile --json reported.
func (c *webClient) checkArtifact(res result) {
	t := c.t
	t.Helper()
	page := "/build/" + strconv.FormatUint(res.BuildID, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body, status, err := c.get(ctx, page, "")
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", page, status, err)
	}
	m := webArtifactLinkRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("%s has no artifact link:\n%s", page, body)
	}
	link, name := html.UnescapeString(m[1]), html.UnescapeString(m[2])
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+link, nil)
	resp, err := webHTTP.Do(req)
	if err != nil {
		t.Fatalf("download %s: %v", link, err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("download %s: status %s, %d bytes, %v", link, resp.Status, n, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != res.ArtifactSHA256 {
		t.Errorf("the artifact link delivered %d bytes hashing to %s; startcompile reported %s (%d bytes)", n, got, res.ArtifactSHA256, res.ArtifactSize)
	}
	if uint64(n) != res.ArtifactSize {
		t.Errorf("the artifact link delivered %d bytes, startcompile reported %d", n, res.ArtifactSize)
	}
	if got := resp.Header.Get("X-Kiln-Sha256"); got != res.ArtifactSHA256 {
		t.Errorf("X-Kiln-Sha256 %q, want %s", got, res.ArtifactSHA256)
	}
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition"))
	if err != nil || params["filename"] != name {
		t.Errorf("Content-Disposition %q (%v), want the link's download name %q", resp.Header.Get("Content-Disposition"), err, name)
	}
}
