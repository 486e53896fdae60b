package compilecli

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// mailModes are the values of --mail.
var mailModes = map[string]kilnv1.MailMode{
	"each":    kilnv1.MailMode_MAIL_MODE_EACH,
	"summary": kilnv1.MailMode_MAIL_MODE_SUMMARY,
	"none":    kilnv1.MailMode_MAIL_MODE_NONE,
}

// parseMail reads a --mail value; summary is allowed only where builds are
// requested together (check). "" is the default: summary there, each
// elsewhere.
func parseMail(v string, summaryOK bool) (kilnv1.MailMode, error) {
	if v == "" {
		if summaryOK {
			return kilnv1.MailMode_MAIL_MODE_SUMMARY, nil
		}
		return kilnv1.MailMode_MAIL_MODE_EACH, nil
	}
	m, ok := mailModes[v]
	if !ok || (!summaryOK && m == kilnv1.MailMode_MAIL_MODE_SUMMARY) {
		want := "each or none"
		if summaryOK {
			want = "each, summary or none"
		}
		return 0, usageError("--mail %q: want %s", v, want)
	}
	return m, nil
}

// newGroupID draws a request group id: 128 random bits, URL-safe base64
// (22 characters), which nobody else can guess to join the group.
func newGroupID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("drawing a request group id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// mailFlag is a --mail flag: one of mailModes, checked as it is parsed.
type mailFlag struct{ p *string }

func (m mailFlag) String() string {
	if m.p == nil {
		return ""
	}
	return *m.p
}

func (m mailFlag) Set(v string) error {
	if _, ok := mailModes[v]; !ok {
		return fmt.Errorf("want each, summary or none, not %q", v)
	}
	*m.p = v
	return nil
}
