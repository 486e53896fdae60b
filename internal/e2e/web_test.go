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
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

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

// webStartUnsandboxed starts a build server named name with --sandbox none
// that builds nothing (--allow-project of no project), as nobody when the
// test is root.
func webStartUnsandboxed(t *testing.T, f *farmtest.Farm, name string) {
	t.Helper()
	token := f.AddBuildServer(name)
	args := []string{"--sandbox", "none", "--allow-project", "no-such-project"}
	if os.Geteuid() != 0 {
		f.StartBuildserver(token, args...)
		return
	}
	dir := hostileVarTmpDir(t, "kiln-e2e-unsandboxed-")
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	p := farmtest.NewProcess(t, name, farmtest.Binary(t, "buildserver"),
		append([]string{"--metaserver", f.Meta().Addr, "--token", token, "--data-dir", dir}, args...)...)
	p.Env = hostileEnv(dir)
	p.Credential = &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
}

// TestWebPagesOfARealFarmWorkInABrowser builds one project to the end and
// keeps a second build running under the test's control, then checks
// webstatus in headless Chromium (every page, links, the live log), every
// link of every page over HTTP, the JSON form of every page, the artifact
// download, and that no page shows the requester's address.
//
// The live build's step watches a directory of the test under /var/tmp
// (bubblewrap gives it a private /tmp). A second build server, which takes
// no build, runs with --sandbox none to be announced as such (as nobody
// when the test is root: a root build server refuses --sandbox none).
func TestWebPagesOfARealFarmWorkInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a farm and a browser")
	}
	ctrl := hostileVarTmpDir(t, "kiln-e2e-web-ctrl-")
	os.Chmod(ctrl, 0o755) // read by the step's user
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s")
	helloRepo, head := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	liveRepo, _ := farmtest.CProject(t, farmtest.CProjectOptions{
		Name:         "live",
		ManifestText: strings.ReplaceAll(webLiveManifest, "CTRL", ctrl),
	})
	f.AddProject("hello", "file://"+helloRepo)
	f.AddProject("live", "file://"+liveRepo)
	f.StartBuildserver(f.AddBuildServer("volunteer-1"))
	webStartUnsandboxed(t, f, "volunteer-2")
	f.WaitBuildServers(2)
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
		// --sandbox none is announced on the build server's page.
		if body, code, err := c.get(context.Background(), "/buildservers", ""); err != nil || code != http.StatusOK ||
			!strings.Contains(body, `id="bs-volunteer-2"`) || !strings.Contains(body, ">UNSANDBOXED</span>") ||
			!strings.Contains(body, "runs builds WITHOUT a sandbox") {
			t.Errorf("/buildservers does not announce volunteer-2's --sandbox none (%d, %v):\n%s", code, err, body)
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

// TestWebMetaserverMetricsMoveAsBuildsRun scrapes the metaserver's
// /metrics while a request waits in the queue, a build server connects and
// builds it, the artifact is downloaded, the same request is answered from
// the cache, the notification mail first fails (no SMTP server yet) and
// then goes out, and the build server leaves.
func TestWebMetaserverMetricsMoveAsBuildsRun(t *testing.T) {
	smtpAddr := farmtest.FreeAddr(t)
	f := farmtest.New(t)
	m := f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s",
		"--smtp-addr", smtpAddr, "--smtp-tls", "none")
	if m.MetricsAddr == "" {
		t.Fatal("farmtest started the metaserver without a metrics listener")
	}
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	f.AddProject("hello", "file://"+repo)
	s := &webScraper{t: t, addr: m.MetricsAddr}

	s.expect("an idle farm", 10*time.Second,
		webWant{"kiln_queue_depth", nil, webEq(0)},
		webWant{"kiln_connected_build_servers", nil, webEq(0)},
		webWant{"kiln_connected_targets", nil, webEq(0)},
		webWant{"kiln_requests_total", nil, webEq(0)},
	)

	// No build server: the request waits in the queue.
	r := f.Startcompile("--project", "hello", "--json", webRequester)
	expectExit(t, r, 0)
	queued := parseResult(t, r)
	if queued.State != "queued" {
		t.Fatalf("first answer %+v, want queued", queued)
	}
	s.expect("a queued request", 10*time.Second,
		webWant{"kiln_requests_total", []string{"answer", "queued"}, webEq(1)},
		webWant{"kiln_cache_misses_total", nil, webEq(1)},
		webWant{"kiln_cache_hits_total", nil, webEq(0)},
		webWant{"kiln_queue_depth", nil, webEq(1)},
		webWant{"kiln_oldest_queued_seconds", nil, webAbove(0)},
		webWant{"kiln_builds", []string{"state", "queued"}, webEq(1)},
		webWant{"kiln_builds", []string{"state", "succeeded"}, webEq(0)},
	)

	bs := f.StartBuildserver(f.AddBuildServer("volunteer-1"))
	f.WaitBuildServers(1)
	s.expect("a connected build server", 10*time.Second,
		webWant{"kiln_connected_build_servers", nil, webEq(1)},
		webWant{"kiln_connected_targets", []string{"os", "linux"}, webEq(1)},
	)

	out := filepath.Join(t.TempDir(), "out")
	r = f.Startcompile("status", "--download", out, "--json", strconv.FormatUint(queued.BuildID, 10))
	expectExit(t, r, 0)
	built := parseResult(t, r)
	if built.State != "succeeded" || built.ArtifactSize == 0 {
		t.Fatalf("after the build: %+v", built)
	}
	size := float64(built.ArtifactSize)
	s.expect("a succeeded and downloaded build", 10*time.Second,
		webWant{"kiln_builds_finished_total", []string{"state", "succeeded"}, webEq(1)},
		webWant{"kiln_attempts_finished_total", nil, webEq(1)},
		webWant{"kiln_queue_depth", nil, webEq(0)},
		webWant{"kiln_oldest_queued_seconds", nil, webEq(0)},
		webWant{"kiln_queue_wait_seconds", nil, webEq(1)},       // observations
		webWant{"kiln_dispatch_latency_seconds", nil, webEq(1)}, // observations
		webWant{"kiln_store_commit_seconds", nil, webAbove(0)},  // transactions
		webWant{"kiln_store_changes_total", nil, webAbove(2)},   // at least the submit, dispatch and result
		webWant{"kiln_artifact_upload_bytes_total", nil, webEq(size)},
		webWant{"kiln_artifact_download_bytes_total", nil, webEq(size)},
		webWant{"kiln_builds", []string{"state", "queued"}, webEq(0)},
		webWant{"kiln_builds", []string{"state", "running"}, webEq(0)},
		webWant{"kiln_builds", []string{"state", "succeeded"}, webEq(1)},
	)

	r = f.Startcompile("--project", "hello", "--json", webRequester)
	expectExit(t, r, 0)
	if got := parseResult(t, r); !got.Cached || got.BuildID != queued.BuildID {
		t.Fatalf("second answer %+v, want cached build %d", got, queued.BuildID)
	}
	s.expect("a cached answer", 10*time.Second,
		webWant{"kiln_requests_total", []string{"answer", "cached"}, webEq(1)},
		webWant{"kiln_requests_total", []string{"answer", "queued"}, webEq(1)},
		webWant{"kiln_cache_hits_total", nil, webEq(1)},
		webWant{"kiln_cache_misses_total", nil, webEq(1)},
		webWant{"kiln_builds_finished_total", nil, webEq(1)},
	)

	// The build's mail cannot go out while nothing listens on smtpAddr.
	s.expect("a failed mail", 20*time.Second,
		webWant{"kiln_mail_failed_total", nil, webAbove(0)},
		webWant{"kiln_mail_sent_total", nil, webEq(0)},
		webWant{"kiln_outbox_length", nil, webAbove(0)},
	)
	webStartSMTPSink(t, smtpAddr)
	s.expect("the mail sent after a retry", 30*time.Second,
		webWant{"kiln_mail_sent_total", nil, webAbove(0)},
		webWant{"kiln_outbox_length", nil, webEq(0)},
	)

	if err := bs.Stop(); err != nil {
		t.Logf("buildserver stop: %v", err)
	}
	s.expect("the build server gone", 20*time.Second,
		webWant{"kiln_connected_build_servers", nil, webEq(0)},
		webWant{"kiln_connected_targets", nil, webEq(0)},
	)
}

// TestWebMetaserverAnswersTheStandardHealthService checks grpc.health.v1 on
// the metaserver: SERVING for the server as a whole, NOT_FOUND for a service
// it does not report, and a watcher told NOT_SERVING when it shuts down.
func TestWebMetaserverAnswersTheStandardHealthService(t *testing.T) {
	f := farmtest.New(t)
	m := f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--grace", "5s")
	hc := healthpb.NewHealthClient(f.Conn())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check: %v, %v; want SERVING", resp, err)
	}
	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Check of an unknown service: %v, want NotFound", err)
	}

	// The watch is ended as soon as it has seen NOT_SERVING: a graceful
	// stop waits (up to --grace) for open streams, this one included.
	wctx, endWatch := context.WithCancel(ctx)
	defer endWatch()
	watch, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil || first.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch: first %v, %v; want SERVING", first, err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- m.Process.Stop() }() // SIGTERM: graceful
	next, err := watch.Recv()
	if err != nil || next.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch during shutdown: %v, %v; want NOT_SERVING", next, err)
	}
	endWatch()
	if err := <-stopped; err != nil {
		t.Errorf("metaserver did not stop cleanly: %v", err)
	}
}

// webScraper reads one metaserver's /metrics.
type webScraper struct {
	t    *testing.T
	addr string
}

// scrape fetches and parses the metrics in the text exposition format.
func (s *webScraper) scrape() (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain") // the text format, not protobuf
	resp, err := webHTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return fams, nil
}

// webWant is one expectation on a metric: the sum over the series of name
// whose labels include the given name/value pairs. For a histogram the
// value is its count of observations. A missing family counts as 0 only for
// the series that are created on first use (labelled vectors).
type webWant struct {
	name   string
	labels []string
	ok     webCond
}

// webCond judges a value and describes what it wanted.
type webCond struct {
	desc string
	ok   func(float64) bool
}

func webEq(v float64) webCond {
	return webCond{"= " + strconv.FormatFloat(v, 'g', -1, 64), func(x float64) bool { return x == v }}
}

func webAbove(v float64) webCond {
	return webCond{"> " + strconv.FormatFloat(v, 'g', -1, 64), func(x float64) bool { return x > v }}
}

// expect polls /metrics until every want holds, failing the test with the
// unmet ones when timeout passes.
func (s *webScraper) expect(when string, timeout time.Duration, wants ...webWant) {
	s.t.Helper()
	err := farmtest.Poll(timeout, func() error {
		fams, err := s.scrape()
		if err != nil {
			return err
		}
		var unmet []string
		for _, w := range wants {
			v, err := webValue(fams, w.name, w.labels)
			if err != nil {
				unmet = append(unmet, err.Error())
				continue
			}
			if !w.ok.ok(v) {
				unmet = append(unmet, fmt.Sprintf("%s%v = %g, want %s", w.name, w.labels, v, w.ok.desc))
			}
		}
		if len(unmet) > 0 {
			return fmt.Errorf("%s", strings.Join(unmet, "; "))
		}
		return nil
	})
	if err != nil {
		s.t.Fatalf("metrics after %s: %v", when, err)
	}
}

// webValue sums the series of name matching labels (name, value pairs).
// Families of labelled vectors appear only once a series exists, so their
// absence reads as 0; an unlabelled family must be present.
func webValue(fams map[string]*dto.MetricFamily, name string, labels []string) (float64, error) {
	fam, ok := fams[name]
	if !ok {
		if webVectors[name] {
			return 0, nil
		}
		return 0, fmt.Errorf("no metric %s", name)
	}
	var sum float64
next:
	for _, m := range fam.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch fam.GetType() {
		case dto.MetricType_COUNTER:
			sum += m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			sum += m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			sum += float64(m.GetHistogram().GetSampleCount())
		case dto.MetricType_UNTYPED:
			sum += m.GetUntyped().GetValue()
		default:
			return 0, fmt.Errorf("metric %s has type %s", name, fam.GetType())
		}
	}
	return sum, nil
}

// webVectors are the metaserver's labelled series: no series until the
// first observation.
var webVectors = map[string]bool{
	"kiln_requests_total":          true,
	"kiln_builds_finished_total":   true,
	"kiln_attempts_finished_total": true,
	"kiln_connected_targets":       true,
}

// webStartSMTPSink starts postfix's smtp-sink on addr, discarding what it
// receives, and waits until it accepts connections; farmtest kills it by
// PID at the end of the test. The test is skipped without smtp-sink.
func webStartSMTPSink(t *testing.T, addr string) {
	t.Helper()
	const bin = "/usr/sbin/smtp-sink"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("smtp-sink not installed (%v): install postfix", err)
	}
	var args []string
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody") // smtp-sink refuses to run as root
	}
	p := farmtest.StartProcess(t, "smtp-sink", bin, append(args, addr, "100")...)
	farmtest.Eventually(t, 10*time.Second, func() error {
		if !p.Running() {
			return fmt.Errorf("smtp-sink exited: %v\n%s", p.Wait(), p.Logs())
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}
