package web_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestBuildPage_Withdrawn_SaysWhyAndOffersNoArtifact(t *testing.T) {
	f := newFarm()
	b := f.builds[buildOK]
	b.Withdrawn = "its build server's credential was revoked (alice-box)"
	b.WithdrawnAt = timestamppb.New(time.Date(2026, 3, 14, 15, 0, 0, 0, time.UTC))
	srv := startFarm(t, f)

	r := get(t, srv.URL+"/build/101", "")
	if r.code != http.StatusOK {
		t.Fatalf("status %d, want 200", r.code)
	}
	for _, w := range []string{`id="withdrawn"`, "Artifact withdrawn", "because its build server&#39;s credential was revoked (alice-box)", "2026-03-14T15:00:00Z"} {
		if !strings.Contains(r.body, w) {
			t.Errorf("page lacks %q", w)
		}
	}
	if strings.Contains(r.body, `id="artifact-link"`) {
		t.Error("the page of a withdrawn build still links its artifact")
	}

	j := get(t, srv.URL+"/build/101", "application/json")
	if !strings.Contains(j.body, "credential was revoked") || strings.Contains(j.body, `"artifact_url"`) {
		t.Errorf("JSON lacks the withdrawal or still has an artifact_url:\n%s", j.body)
	}
}
