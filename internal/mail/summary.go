package mail

import (
	"bytes"
	"fmt"
	htmltemplate "html/template"
	"strings"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// summaryLine is one build of a summary mail.
type summaryLine struct {
	ID       uint64
	Platform string
	State    string
	// Why is the failure reason and step of a build that did not succeed.
	Why string
	URL string
}

// summaryData is what the summary's HTML template renders.
type summaryData struct {
	Headline  string
	Succeeded []summaryLine
	Failed    []summaryLine
}

var summaryHTML = htmltemplate.Must(htmltemplate.New("summary").Parse(`<!doctype html>
<html><body>
<p>{{.Headline}}</p>
<h3>FAILURE ({{len .Failed}})</h3>
{{if .Failed}}<ul>{{range .Failed}}<li>build #{{.ID}} on {{.Platform}}: {{.State}}{{with .Why}}: {{.}}{{end}}{{with .URL}} <a href="{{.}}">{{.}}</a>{{end}}</li>{{end}}</ul>{{else}}<p>none</p>{{end}}
<h3>SUCCESS ({{len .Succeeded}})</h3>
{{if .Succeeded}}<ul>{{range .Succeeded}}<li>build #{{.ID}} on {{.Platform}}{{with .URL}} <a href="{{.}}">{{.}}</a>{{end}}</li>{{end}}</ul>{{else}}<p>none</p>{{end}}
</body></html>
`))

// ComposeSummary renders the one mail a requester gets for a group of
// builds asked for together (startcompile check): the subject counts the
// outcomes, the bodies list every build under FAILURE (anything but
// SUCCEEDED) or SUCCESS with its platform, why it failed and its link
// (when opts.PublicURL is set). builds are listed in the order given. Text
// from build servers is stripped of control characters; the HTML part is
// escaped by html/template.
func ComposeSummary(builds []*kilnv1.Build, opts ComposeOptions) (subject, text, html string) {
	d := summaryData{}
	project, revision := "", ""
	for _, b := range builds {
		if project == "" {
			project, revision = b.GetProject(), revisionName(b)
		}
		l := summaryLine{ID: b.GetId(), Platform: oneLine(platformLine(b)), State: StateName(b.GetState())}
		if base := strings.TrimSuffix(opts.PublicURL, "/"); base != "" {
			l.URL = fmt.Sprintf("%s/build/%d", base, b.GetId())
		}
		if b.GetState() == kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
			d.Succeeded = append(d.Succeeded, l)
			continue
		}
		why := oneLine(b.GetFailure())
		if step := b.GetFailingStep(); step != "" {
			why += " (step: " + oneLine(step) + ")"
		}
		l.Why = truncate(strings.TrimSpace(why), maxLogLineLen)
		d.Failed = append(d.Failed, l)
	}
	verdict := "all succeeded"
	if len(d.Failed) > 0 {
		verdict = fmt.Sprintf("%d of %d failed", len(d.Failed), len(builds))
	}
	subject = headerSafe(fmt.Sprintf("[kiln] %s %s on %d platforms : %s", project, revision, len(builds), verdict))
	d.Headline = fmt.Sprintf("Your %d builds of %s %s have ended: %s.", len(builds), oneLine(project), oneLine(revision), verdict)
	var tb strings.Builder
	tb.WriteString(d.Headline + "\n\n")
	writeList := func(title string, ls []summaryLine) {
		fmt.Fprintf(&tb, "%s (%d)\n", title, len(ls))
		if len(ls) == 0 {
			tb.WriteString("  none\n")
		}
		for _, l := range ls {
			fmt.Fprintf(&tb, "  build #%d on %s: %s", l.ID, l.Platform, l.State)
			if l.Why != "" {
				tb.WriteString(": " + l.Why)
			}
			tb.WriteString("\n")
			if l.URL != "" {
				tb.WriteString("    " + l.URL + "\n")
			}
		}
		tb.WriteString("\n")
	}
	writeList("FAILURE", d.Failed)
	writeList("SUCCESS", d.Succeeded)
	var hb bytes.Buffer
	if err := summaryHTML.Execute(&hb, d); err != nil {
		panic(fmt.Sprintf("mail: summary template: %v", err))
	}
	return subject, tb.String(), hb.String()
}
