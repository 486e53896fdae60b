package mail

import (
	"errors"
	netmail "net/mail"
	"strings"
	"testing"
)

func TestValidateAddress(t *testing.T) {
	long := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 57) + ".org"
	tests := []struct {
		name string
		in   string
		want string // empty: an error is expected
	}{
		{"a plain address is kept", "ada@example.org", "ada@example.org"},
		{"the domain is lower cased and the local part kept", "Ada.Lovelace@Example.ORG", "Ada.Lovelace@example.org"},
		{"plus and dots in the local part are fine", "a.b+kiln@mail.example.org", "a.b+kiln@mail.example.org"},
		{"localhost needs no dot", "root@localhost", "root@localhost"},
		{"LOCALHOST in capitals is localhost", "root@LOCALHOST", "root@localhost"},
		{"hyphens inside labels are fine", "x@my-host.example.org", "x@my-host.example.org"},
		{"an address of exactly 254 octets is accepted", long, long},
		{"an address over 254 octets is refused", "x" + long, ""},
		{"a local part over 64 octets is refused", strings.Repeat("a", 65) + "@example.org", ""},
		{"an empty string is refused", "", ""},
		{"a display name is refused", "Ada <ada@example.org>", ""},
		{"angle brackets alone are refused", "<ada@example.org>", ""},
		{"a comment is refused", "ada@example.org (Ada)", ""},
		{"leading space is refused", " ada@example.org", ""},
		{"trailing space is refused", "ada@example.org ", ""},
		{"a newline cannot inject a header", "ada@example.org\nBcc: eve@example.org", ""},
		{"a carriage return is refused", "ada@example.org\r", ""},
		{"a NUL byte is refused", "ada@exam\x00ple.org", ""},
		{"DEL is refused", "ada\x7f@example.org", ""},
		{"non-ASCII is refused", "adé@example.org", ""},
		{"a domain without a dot is refused", "ada@example", ""},
		{"a domain literal is refused", "ada@[127.0.0.1]", ""},
		{"an empty label is refused", "ada@example..org", ""},
		{"a trailing dot is refused", "ada@example.org.", ""},
		{"a label starting with a hyphen is refused", "ada@-example.org", ""},
		{"an underscore in the domain is refused", "ada@ex_ample.org", ""},
		{"two addresses are refused", "ada@example.org,eve@example.org", ""},
		{"a missing local part is refused", "@example.org", ""},
		{"a missing at sign is refused", "example.org", ""},
		{"a quoted local part is refused", `"ada lovelace"@example.org`, ""},
		{"a group is refused", "friends: ada@example.org;", ""},
		{"an encoded word is refused", "=?utf-8?q?ada?= <ada@example.org>", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ValidateAddress(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ValidateAddress(%q) = %q, want an error", tt.in, got)
				}
				if !errors.Is(err, ErrInvalidAddress) {
					t.Fatalf("ValidateAddress(%q) error %v does not wrap ErrInvalidAddress", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ValidateAddress(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ValidateAddress(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzValidateAddress checks the contract on arbitrary input: whatever is
// accepted is one bare, printable, bounded address that net/mail parses back
// to itself, and validating it again changes nothing.
func FuzzValidateAddress(f *testing.F) {
	for _, s := range []string{"ada@example.org", "Ada <ada@example.org>", "root@localhost", "a@b.c\r\nBcc: x@y.z", "\"q\"@example.org"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ValidateAddress(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidAddress) {
				t.Fatalf("error %v does not wrap ErrInvalidAddress", err)
			}
			return
		}
		if len(got) > maxAddressLen {
			t.Fatalf("accepted %d octets", len(got))
		}
		for i := 0; i < len(got); i++ {
			if c := got[i]; c <= ' ' || c >= 0x7f {
				t.Fatalf("accepted byte %#x in %q", c, got)
			}
		}
		a, err := netmail.ParseAddress(got)
		if err != nil || a.Name != "" || a.Address != got {
			t.Fatalf("canonical %q does not parse back to itself: %+v, %v", got, a, err)
		}
		if !strings.EqualFold(got, s) {
			t.Fatalf("canonical %q differs from input %q beyond case", got, s)
		}
		again, err := ValidateAddress(got)
		if err != nil || again != got {
			t.Fatalf("not idempotent: %q -> %q, %v", got, again, err)
		}
	})
}
