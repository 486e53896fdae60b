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
