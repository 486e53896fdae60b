package mail

import (
	"errors"
	"testing"
	"time"
)

func TestNewSenderChecksItsConfiguration(t *testing.T) {
	tests := []struct {
		name string
		cfg  SenderConfig
		ok   bool
	}{
		{"no SMTP server is a valid configuration (mail disabled)", SenderConfig{}, true},
		{"a server with a From address is valid", SenderConfig{SMTPAddr: "127.0.0.1:25", From: "kiln@kiln.example.org"}, true},
		{"a From with a display name is valid", SenderConfig{SMTPAddr: "mail.example.org:587", From: "Kiln <kiln@example.org>", TLS: TLSStartTLS}, true},
		{"a server without From is refused", SenderConfig{SMTPAddr: "127.0.0.1:25"}, false},
		{"a server without a port is refused", SenderConfig{SMTPAddr: "127.0.0.1", From: "kiln@example.org"}, false},
		{"a port out of range is refused", SenderConfig{SMTPAddr: "127.0.0.1:70000", From: "kiln@example.org"}, false},
		{"an unknown TLS mode is refused", SenderConfig{SMTPAddr: "127.0.0.1:25", From: "kiln@example.org", TLS: "maybe"}, false},
		{"a From that is not an address is refused", SenderConfig{SMTPAddr: "127.0.0.1:25", From: "kiln"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSender(openStore(t), tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("NewSender = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
		})
	}
}

func TestDefaultBackoffGrowsWithinItsBounds(t *testing.T) {
	for attempt := -1; attempt <= 100; attempt++ {
		base := MaxBackoff
		if n := max(attempt, 1); n <= 20 {
			base = min(MinBackoff<<(n-1), MaxBackoff)
		}
		lo := max(time.Duration(float64(base)*0.8), MinBackoff)
		hi := min(time.Duration(float64(base)*1.2), MaxBackoff)
		for range 20 {
			if d := DefaultBackoff(attempt); d < lo || d > hi {
				t.Fatalf("DefaultBackoff(%d) = %s, want within [%s, %s] (±20%% of %s, clamped)", attempt, d, lo, hi, base)
			}
		}
	}
}

func TestSignMatchesAKnownHMACVector(t *testing.T) {
	// RFC 4231-style check with the well-known "quick brown fox" vector.
	got := Sign([]byte("key"), []byte("The quick brown fox jumps over the lazy dog"))
	want := "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
	if got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}
