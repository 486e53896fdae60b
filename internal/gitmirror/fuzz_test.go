package gitmirror

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseRange checks that ParseRange never panics, that anything it
// accepts splits back into what was given, and that accepted parts are safe
// to hand to git (no option-like or control characters).
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"", "main", "v1.0..main", "a..b", "..b", "a..", "a...b", "a..b..c", "-x", "main~1..HEAD", "feature/x..main", " a..b", "a\x00..b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rev string) {
		from, to, ok, err := ParseRange(rev)
		if err != nil {
			if !errors.Is(err, ErrBadRevision) {
				t.Fatalf("ParseRange(%q) error %v does not wrap ErrBadRevision", rev, err)
			}
			return
		}
		if ok && from+".."+to != rev {
			t.Fatalf("ParseRange(%q) = %q..%q", rev, from, to)
		}
		if !ok && (from != "" || to != rev) {
			t.Fatalf("ParseRange(%q) = (%q, %q, false)", rev, from, to)
		}
		for _, part := range []string{from, to} {
			if strings.HasPrefix(part, "-") || strings.ContainsAny(part, " \t\n\r\x00") {
				t.Fatalf("ParseRange(%q) accepted unsafe part %q", rev, part)
			}
		}
	})
}
