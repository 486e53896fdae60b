package mail

import (
	"bytes"
	"embed"
	"fmt"
	htmltemplate "html/template"
	"regexp"
	"slices"
	"strconv"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode/utf8"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ComposeOptions is what Compose needs besides the build.
type ComposeOptions struct {
	// PublicURL is the base URL of webstatus, e.g. "http://127.0.0.1:8080";
	// empty leaves the links out. A trailing slash is ignored.
	PublicURL string
	// LogTail is the end of the build's log; Compose keeps its last
	// LogTailLines lines, for builds that did not succeed.
	LogTail string
	// MetaserverAddr is the address startcompile should dial in the
	// download command; empty leaves the --metaserver flag out.
	MetaserverAddr string
}

// LogTailLines is how many lines of ComposeOptions.LogTail a mail shows.
const LogTailLines = 40

// maxLogLineLen bounds one shown log line, so a minified blob in the log
// cannot make a mail of megabytes.
const maxLogLineLen = 400

//go:embed templates/build.txt.tmpl templates/build.html.tmpl
var templateFS embed.FS

var (
	textTemplate = texttemplate.Must(texttemplate.New("build.txt.tmpl").Funcs(texttemplate.FuncMap{
		"pad": func(s string, n int) string { return s + strings.Repeat(" ", max(0, n-len(s))) },
	}).ParseFS(templateFS, "templates/build.txt.tmpl"))
	htmlTemplate = htmltemplate.Must(htmltemplate.ParseFS(templateFS, "templates/build.html.tmpl"))
)

// Compose renders the notification about build b for the people waiting on
// it: a one-line subject, a plain text body and an HTML body with the same
// content. It uses only b and opts, so it cannot leak a requester's address
// (b carries none); the recipient is the caller's business.
//
// The subject reads "[kiln] <project> <revision> on <platform> : <state>",
// where platform is platform.Describe of the measured platform, or the
// pinned constraints when the build never reached a build server. The
// bodies tell what was built, the measured platform, the timings, the
// artifact (sha256, size, files) with a download command and web links on
// success, and the failure reason, failing step and the last LogTailLines
// lines of the log otherwise. Text coming from build servers (failure
// reason, log) is stripped of control characters; the HTML part is escaped
// by html/template.
//
// Compose is meant for builds in a final state but renders any state.
func Compose(b *kilnv1.Build, opts ComposeOptions) (subject, text, html string) {
	d := newComposeData(b, opts)
	subject = headerSafe(fmt.Sprintf("[kiln] %s %s on %s : %s", b.GetProject(), revisionName(b), d.PlatformLine, d.State))
	var tb, hb bytes.Buffer
	// The templates are fixed and the data is plain strings: execution
	// cannot fail short of a bug, which the golden tests catch.
	if err := textTemplate.Execute(&tb, d); err != nil {
		panic(fmt.Sprintf("mail: text template: %v", err))
	}
	if err := htmlTemplate.Execute(&hb, d); err != nil {
		panic(fmt.Sprintf("mail: html template: %v", err))
	}
	return subject, tb.String(), hb.String()
}

// StateName is the lower-case word for a build state used in subjects,
// events and hook configuration: "succeeded", "failed", "error",
// "cancelled", "expired", "queued", "running" ("unknown" otherwise).
func StateName(s kilnv1.BuildState) string {
	switch s {
	case kilnv1.BuildState_BUILD_STATE_QUEUED:
		return "queued"
	case kilnv1.BuildState_BUILD_STATE_RUNNING:
		return "running"
	case kilnv1.BuildState_BUILD_STATE_SUCCEEDED:
		return "succeeded"
	case kilnv1.BuildState_BUILD_STATE_FAILED:
		return "failed"
	case kilnv1.BuildState_BUILD_STATE_ERROR:
		return "error"
	case kilnv1.BuildState_BUILD_STATE_CANCELLED:
		return "cancelled"
	case kilnv1.BuildState_BUILD_STATE_EXPIRED:
		return "expired"
	}
	return "unknown"
}

// row is one labelled value of a section.
type row struct {
	Label, Value string
	// Link marks a value that is a URL, shown as a hyperlink in HTML.
	Link bool
}

// section is one titled block of the mail: rows, then preformatted lines.
type section struct {
	Title string
	Rows  []row
	Lines []string
	// Width is the widest label, for aligning the text part.
	Width int
}

// composeData is what both templates render.
type composeData struct {
	Subject      string
	Headline     string
	State        string
	PlatformLine string
	Sections     []*section
}

func newComposeData(b *kilnv1.Build, opts ComposeOptions) *composeData {
	state := StateName(b.GetState())
	if v := b.GetVerification().Word(); v != "" {
		state += " (" + v + ")"
	}
	d := &composeData{State: state, PlatformLine: platformLine(b)}
	d.Headline = oneLine(fmt.Sprintf("Build %d of %s at %s: %s.", b.GetId(), b.GetProject(), revisionName(b), state))

	what := &section{Title: "What was built"}
	what.add("project", b.GetProject())
	what.add("revision", revisionName(b))
	what.add("commit", orDash(b.GetCommit()))
	what.add("options", formatOptions(b.GetOptions()))
	what.add("requested platform", platform.DescribeConstraints(b.GetConstraints()))
	d.Sections = append(d.Sections, what)

	d.Sections = append(d.Sections, platformSection(b))
	d.Sections = append(d.Sections, timingSection(b))

	succeeded := b.GetState() == kilnv1.BuildState_BUILD_STATE_SUCCEEDED
	if a := b.GetArtifact(); succeeded && a != nil {
		art := &section{Title: "Artifact"}
		art.add("sha256", a.GetSha256())
		art.add("size", formatSize(a.GetSize()))
		art.add("files", strconv.Itoa(len(a.GetFiles())))
		if v := b.GetVerification().Word(); v != "" {
			art.add("verification", v)
			art.add("agreeing build servers", orDash(strings.Join(b.GetAgreeingBuildServers(), ", ")))
		}
		d.Sections = append(d.Sections, art)

		dl := &section{Title: "Download"}
		cmd := "startcompile status --download DIR"
		if !b.GetVerification().Trusted() && b.GetVerification() != kilnv1.Verification_VERIFICATION_UNSPECIFIED {
			cmd += " --accept unverified"
		}
		if opts.MetaserverAddr != "" {
			cmd += " --metaserver " + oneLine(opts.MetaserverAddr)
		}
		dl.Lines = []string{cmd + " " + strconv.FormatUint(b.GetId(), 10)}
		d.Sections = append(d.Sections, dl)
	}
	if !succeeded {
		f := &section{Title: "Failure"}
		f.add("reason", orDash(oneLine(b.GetFailure())))
		f.add("failing step", orDash(oneLine(b.GetFailingStep())))
		if files := b.GetDifferingFiles(); len(files) > 0 {
			f.add("differing files", oneLine(truncate(strings.Join(files, ", "), 2000)))
		}
		d.Sections = append(d.Sections, f)
	}
	if base := strings.TrimRight(opts.PublicURL, "/"); base != "" {
		links := &section{Title: "Links"}
		page := fmt.Sprintf("%s/build/%d", oneLine(base), b.GetId())
		links.addLink("build", page)
		links.addLink("log", page+"/log")
		if succeeded && b.GetArtifact() != nil {
			links.addLink("artifact", page+"/artifact")
		}
		d.Sections = append(d.Sections, links)
	}
	if !succeeded {
		if tail := tailLines(opts.LogTail, LogTailLines); len(tail) > 0 {
			d.Sections = append(d.Sections, &section{
				Title: fmt.Sprintf("Last %d lines of the log", len(tail)),
				Lines: tail,
			})
		}
	}
	for _, s := range d.Sections {
		for _, r := range s.Rows {
			s.Width = max(s.Width, len(r.Label)+1)
		}
	}
	return d
}

func (s *section) add(label, value string) { s.Rows = append(s.Rows, row{Label: label, Value: value}) }

func (s *section) addLink(label, url string) {
	s.Rows = append(s.Rows, row{Label: label, Value: url, Link: true})
}

// platformLine is the platform named in the subject.
func platformLine(b *kilnv1.Build) string {
	if p := b.GetPlatform(); p != nil {
		return platform.Describe(p)
	}
	c := platform.DescribeConstraints(b.GetConstraints())
	if c == platform.Any {
		return "any platform"
	}
	return c
}

func platformSection(b *kilnv1.Build) *section {
	s := &section{Title: "Platform (measured on the build server)"}
	p := b.GetPlatform()
	if p == nil {
		s.Lines = []string{"The build never ran on a build server."}
		return s
	}
	s.add("os", orDash(p.GetOs()))
	s.add("arch", orDash(p.GetArch()))
	s.add("endian", orDash(p.GetEndian()))
	s.add("data model", orDash(p.GetDataModel()))
	s.add("CHAR_BIT", strconv.FormatUint(uint64(p.GetCharBit()), 10))
	s.add("sizeof", fmt.Sprintf("short=%d int=%d long=%d long long=%d pointer=%d",
		p.GetSizeofShort(), p.GetSizeofInt(), p.GetSizeofLong(), p.GetSizeofLongLong(), p.GetSizeofPointer()))
	s.add("libc", orDash(strings.TrimSpace(p.GetLibc()+" "+p.GetLibcVersion())))
	s.add("compiler", orDash(strings.TrimSpace(p.GetCompiler()+" "+p.GetCompilerVersion())))
	if p.GetEmulated() {
		s.add("emulated", "yes (qemu-user)")
	} else {
		s.add("emulated", "no")
	}
	if n := len(b.GetAttempts()); n > 0 {
		a := b.GetAttempts()[n-1]
		s.add("build server", oneLine(fmt.Sprintf("%s (target %s)", a.GetBuildServer(), a.GetTargetId())))
		s.add("attempts", strconv.Itoa(n))
	}
	return s
}

func timingSection(b *kilnv1.Build) *section {
	s := &section{Title: "Timings"}
	created, started, finished := b.GetCreatedAt(), b.GetStartedAt(), b.GetFinishedAt()
	s.add("requested", formatTime(created))
	s.add("started", formatTime(started))
	s.add("finished", formatTime(finished))
	if created != nil && started != nil {
		s.add("waited", formatDuration(started.AsTime().Sub(created.AsTime())))
	}
	if started != nil && finished != nil {
		s.add("ran", formatDuration(finished.AsTime().Sub(started.AsTime())))
	}
	if created != nil && finished != nil {
		s.add("total", formatDuration(finished.AsTime().Sub(created.AsTime())))
	}
	return s
}

func formatOptions(opts map[string]string) string {
	if len(opts) == 0 {
		return "(none)"
	}
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = oneLine(k + "=" + opts[k])
	}
	return strings.Join(parts, " ")
}

func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

func formatDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return d.Round(time.Second).String()
}

func formatSize(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	v, suffix := float64(n)/unit, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return fmt.Sprintf("%d bytes (%.1f %s)", n, v, suffix)
}

// tailLines returns the last n lines of log, each stripped of control
// characters (tabs become spaces) and cut at maxLogLineLen.
func tailLines(log string, n int) []string {
	log = strings.TrimRight(log, "\r\n")
	if log == "" {
		return nil
	}
	lines := strings.Split(log, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		l = strings.ReplaceAll(strings.TrimSuffix(l, "\r"), "\t", "    ")
		l = stripControl(ansiEscape.ReplaceAllString(l, ""))
		out[i] = truncate(l, maxLogLineLen)
	}
	return out
}

// ansiEscape matches terminal control sequences (colours, cursor moves),
// which compilers print and a mail cannot show.
var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])`)

// stripControl drops C0 and C1 control characters, DEL, and the Unicode
// line and paragraph separators.
func stripControl(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return -1
		}
		return r
	}, s)
}

// oneLine turns every control character (newlines included) into a space,
// for values shown on one line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
}

// headerSafe is oneLine with the length bounded, for a header value.
func headerSafe(s string) string {
	const maxHeader = 400
	return truncate(strings.Join(strings.Fields(oneLine(s)), " "), maxHeader)
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut
// with an ellipsis.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// revisionName is the revision as requested, or, when the request named
// none, the default branch with the commit it resolved to.
func revisionName(b *kilnv1.Build) string {
	if r := b.GetRevision(); r != "" {
		return r
	}
	commit := b.GetCommit()
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if commit == "" {
		return "default branch"
	}
	return "default branch (" + commit + ")"
}
