package server

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/peer"
)

func TestLimiterAllowsABurstThenRefillsOverTime(t *testing.T) {
	l := newLimiter(3, time.Minute)
	now := time.Now()
	for i := 0; i < 3; i++ {
		if !l.allow("a@example.com", now) {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	if l.allow("a@example.com", now) {
		t.Fatal("a fourth request within the burst was allowed")
	}
	if !l.allow("b@example.com", now) {
		t.Fatal("another address was limited by the first one")
	}
	if !l.allow("a@example.com", now.Add(20*time.Second)) {
		t.Fatal("one token did not come back after a third of the period")
	}
	if l.allow("a@example.com", now.Add(20*time.Second)) {
		t.Fatal("more than one token came back")
	}
}

func TestANegativeLimitAllowsEverything(t *testing.T) {
	l := newLimiter(-1, time.Minute)
	for i := 0; i < 1000; i++ {
		if !l.allow("a@example.com", time.Now()) {
			t.Fatal("refused with no limit")
		}
	}
}

func TestAFullTableForgetsRefilledBucketsAndKeepsAFloodersEmptyOne(t *testing.T) {
	l := newLimiter(2, time.Minute)
	l.maxKeys = 4
	start := time.Now()
	for _, k := range []string{"idle-1", "idle-2"} {
		l.allow(k, start)
	}
	now := start.Add(2 * time.Minute) // the idle buckets have refilled
	for l.allow("flooder", now) {
	}
	l.allow("other", now)
	// The table is full (4 keys); new keys must push out the refilled ones,
	// never the flooder's empty bucket.
	for i := 0; i < 2; i++ {
		if !l.allow(fmt.Sprintf("new-%d", i), now) {
			t.Fatalf("a new key was refused")
		}
		if l.allow("flooder", now) {
			t.Fatalf("after new key %d the flooder got a token: its bucket was reset", i)
		}
	}
	if n := l.keys(); n > 4 {
		t.Fatalf("the table holds %d keys, more than its bound of 4", n)
	}
}

func TestAFullTableOfBusyBucketsForgetsTheLeastRecentlyUsed(t *testing.T) {
	l := newLimiter(1, time.Hour)
	l.maxKeys = 3
	now := time.Now()
	for _, k := range []string{"a", "b", "c"} {
		if !l.allow(k, now) {
			t.Fatalf("first request of %s refused", k)
		}
	}
	if l.allow("a", now) { // a is now the most recently used, b the least
		t.Fatal("a second request of a was allowed within the hour")
	}
	l.allow("d", now)
	if l.keys() != 3 {
		t.Fatalf("keys = %d, want 3", l.keys())
	}
	if l.allow("a", now) || l.allow("c", now) || l.allow("d", now) {
		t.Fatal("a recently used empty bucket was forgotten")
	}
	if !l.allow("b", now) {
		t.Fatal("the least recently used bucket was kept instead of forgotten")
	}
}

func TestPeerKeyIsTheIPWithoutThePort(t *testing.T) {
	tests := []struct {
		name string
		addr net.Addr
		want string
	}{
		{name: "an IPv4 loopback peer is its address", addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, want: "127.0.0.1"},
		{name: "an IPv6 peer is its /64", addr: &net.TCPAddr{IP: net.ParseIP("::1"), Port: 1}, want: "::/64"},
		{name: "two IPv6 peers of one /64 share a key", addr: &net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::7"), Port: 1}, want: "2001:db8:1:2::/64"},
		{name: "an IPv4-mapped IPv6 peer is its IPv4 address", addr: &net.TCPAddr{IP: net.ParseIP("::ffff:10.1.2.3"), Port: 1}, want: "10.1.2.3"},
		{name: "a unix socket peer is its name", addr: &net.UnixAddr{Name: "/tmp/x.sock", Net: "unix"}, want: "/tmp/x.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: tt.addr})
			if got := peerKey(ctx); got != tt.want {
				t.Fatalf("peerKey = %q, want %q", got, tt.want)
			}
		})
	}
	if got := peerKey(context.Background()); got != "unknown" {
		t.Fatalf("without a peer: %q", got)
	}
}
