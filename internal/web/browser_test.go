package web_test

import (
	"fmt"
	"testing"

	"github.com/kilnbuild/kiln/internal/web/webtest"
)

// TestBrowser drives every page in headless Chromium over the fake
// metaserver; the same check runs against a real farm in the e2e tests.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	f := newFarm()
	srv := startFarm(t, f)
	f.appendLog(buildRunning, "configure: checking for gcc... gcc\n")
	n := 0
	webtest.BrowserCheck(t, srv.URL, buildOK, webtest.Options{
		LiveBuildID: buildRunning,
		NextLine: func(t *testing.T) string {
			n++
			line := fmt.Sprintf("make: compiling unit %d of 9", n)
			f.appendLog(buildRunning, line+"\n")
			return line
		},
	})
}

// TestBrowserProjectPageAndCharts runs the project and chart check over
// the fake metaserver: the demo project built on two platforms, s390x
// broken, and a day of samples.
func TestBrowserProjectPageAndCharts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	f := newFarm()
	addDemoProject(f)
	for _, b := range f.builds {
		if b.GetStartedAt() == nil && b.GetFinishedAt() != nil {
			b.StartedAt = b.GetCreatedAt()
		}
	}
	f.samples = daySamples(1440)
	srv := startFarm(t, f)
	webtest.ProjectCheck(t, srv.URL, "demo", webtest.ProjectOptions{
		Platforms: 2, BrokenPlatform: "s390x", BuildID: 204, Samples: 100,
	})
}
