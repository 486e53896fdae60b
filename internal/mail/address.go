package mail

import (
	"errors"
	"fmt"
	netmail "net/mail"
	"strings"
)

// ErrInvalidAddress is wrapped by every error ValidateAddress returns, so a
// caller can tell bad input (answer InvalidArgument) from other failures.
var ErrInvalidAddress = errors.New("invalid email address")

// Limits of an address, from RFC 5321 section 4.5.3.1 (path 256 octets minus
// the angle brackets; local part 64 octets) and RFC 1035 (label 63 octets).
const (
	maxAddressLen = 254
	maxLocalLen   = 64
	maxLabelLen   = 63
)

// ValidateAddress checks that s is one bare RFC 5322 addr-spec such as
// "ada@example.org" and returns its canonical form, with the domain lower
// cased (the local part is kept as written: its case may matter to the
// receiving server).
//
// It is stricter than net/mail.ParseAddress, which it uses: s must be the
// address alone (no display name, angle brackets, comments or surrounding
// space), printable ASCII only (no control character, so no newline can
// inject a header; Kiln's mail path does not negotiate SMTPUTF8), at most
// 254 octets with a local part of at most 64, and the domain must be a
// host name with at least one dot, or "localhost". Domain literals
// ("[127.0.0.1]") and quoted local parts are refused.
//
// Every error wraps ErrInvalidAddress. ValidateAddress is idempotent: the
// canonical form validates to itself.
func ValidateAddress(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidAddress)
	}
	if len(s) > maxAddressLen {
		return "", fmt.Errorf("%w: %d octets, at most %d allowed", ErrInvalidAddress, len(s), maxAddressLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("%w: control character at offset %d", ErrInvalidAddress, i)
		case c >= 0x80:
			return "", fmt.Errorf("%w: non-ASCII character at offset %d", ErrInvalidAddress, i)
		case c == ' ':
			return "", fmt.Errorf("%w: space at offset %d (give the bare address, without a name)", ErrInvalidAddress, i)
		}
	}
	a, err := netmail.ParseAddress(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrInvalidAddress, s, err)
	}
	if a.Name != "" || a.Address != s {
		return "", fmt.Errorf("%w: %q is not a bare address (no name, brackets or comments)", ErrInvalidAddress, s)
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return "", fmt.Errorf("%w: %q has no @", ErrInvalidAddress, s)
	}
	local, domain := s[:at], strings.ToLower(s[at+1:])
	if len(local) > maxLocalLen {
		return "", fmt.Errorf("%w: local part of %d octets, at most %d allowed", ErrInvalidAddress, len(local), maxLocalLen)
	}
	if strings.HasPrefix(local, `"`) {
		return "", fmt.Errorf("%w: quoted local parts are not accepted", ErrInvalidAddress)
	}
	if err := checkDomain(domain); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidAddress, err)
	}
	return local + "@" + domain, nil
}

// checkDomain accepts "localhost" or a host name of two or more labels made
// of letters, digits and inner hyphens. domain is lower case.
func checkDomain(domain string) error {
	if domain == "localhost" {
		return nil
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return fmt.Errorf("domain %q needs a dot (or be localhost)", domain)
	}
	for _, l := range labels {
		if l == "" || len(l) > maxLabelLen {
			return fmt.Errorf("domain %q has an empty or over-long label", domain)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("domain %q has a label starting or ending with a hyphen", domain)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("domain %q: character %q not allowed in a host name", domain, c)
			}
		}
	}
	return nil
}
