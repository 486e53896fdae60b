package gitmirror

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxRevisionLen bounds a revision's length; no sane ref name is longer.
const maxRevisionLen = 256

// checkRevision rejects revisions that could be taken for options, hold
// whitespace or control characters, or are ranges. The empty revision is
// allowed (it means the default branch's head).
func checkRevision(rev string) error {
	switch {
	case len(rev) > maxRevisionLen:
		return fmt.Errorf("%w: revision longer than %d bytes", ErrBadRevision, maxRevisionLen)
	case strings.HasPrefix(rev, "-"):
		return fmt.Errorf("%w: revision %q starts with '-'", ErrBadRevision, rev)
	case strings.Contains(rev, ".."):
		return fmt.Errorf("%w: revision %q contains \"..\" (a range is not a single revision)", ErrBadRevision, rev)
	case !utf8.ValidString(rev):
		return fmt.Errorf("%w: revision %q is not valid UTF-8", ErrBadRevision, rev)
	}
	for _, r := range rev {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%w: revision %q contains whitespace or a control character", ErrBadRevision, rev)
		}
	}
	return nil
}

// ParseRange splits a revision that may be a range. "A..B" gives (A, B,
// true, nil); a plain revision gives ("", rev, false, nil). A range with an
// empty side ("..B", "A.."), a symmetric difference ("A...B") or more than
// one ".." ("A..B..C") is an error wrapping [ErrBadRevision]. ParseRange
// only splits: each side is checked as [Mirror.Resolve] checks a revision.
func ParseRange(rev string) (from, to string, ok bool, err error) {
	i := strings.Index(rev, "..")
	if i < 0 {
		return "", rev, false, checkRevision(rev)
	}
	from, to = rev[:i], rev[i+2:]
	switch {
	case strings.HasPrefix(to, "."):
		return "", "", false, fmt.Errorf("%w: %q: symmetric ranges (A...B) are not supported", ErrBadRevision, rev)
	case from == "" || to == "":
		return "", "", false, fmt.Errorf("%w: %q: a range needs both ends, as in A..B", ErrBadRevision, rev)
	}
	if err := checkRevision(from); err != nil {
		return "", "", false, err
	}
	if err := checkRevision(to); err != nil {
		return "", "", false, err
	}
	return from, to, true, nil
}

// isCommitID reports whether s is a full lowercase hexadecimal object id
// (40 digits for SHA-1, 64 for SHA-256).
func isCommitID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// checkCommitID is isCommitID as an error.
func checkCommitID(what, s string) error {
	if !isCommitID(s) {
		return fmt.Errorf("%w: %s %q is not a full lowercase commit id", ErrBadRevision, what, s)
	}
	return nil
}
