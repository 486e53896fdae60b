package server

import (
	"container/list"
	"context"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/peer"
)

// defaultMaxKeys bounds how many keys a limiter remembers.
const defaultMaxKeys = 100000

// limiter is a per-key token bucket: burst requests at once, refilled to
// burst over per. One limiter keyed by email address stops one requester
// from flooding the queue; one keyed by peer address stops one machine
// from doing it with many addresses.
//
// Memory is bounded by maxKeys buckets. A key seen for the first time gets
// a full bucket, so forgetting a bucket that has refilled changes nothing;
// past maxKeys the limiter forgets those first, oldest first, and only when
// the least recently used bucket is still refilling does it forget that one.
// A key in active use is therefore never forgotten while fewer than maxKeys
// other keys were used after it.
type limiter struct {
	burst   float64
	rate    float64 // tokens per second
	maxKeys int

	mu      sync.Mutex
	buckets map[string]*list.Element // of *bucket
	lru     *list.List               // of *bucket, least recently used first
}

type bucket struct {
	key    string
	tokens float64
	last   time.Time
}

func newLimiter(burst int, per time.Duration) *limiter {
	return &limiter{burst: float64(burst), rate: float64(burst) / per.Seconds(), maxKeys: defaultMaxKeys,
		buckets: map[string]*list.Element{}, lru: list.New()}
}

// allow takes one token for key at now. A limiter with a negative burst allows all.
func (l *limiter) allow(key string, now time.Time) bool {
	if l.burst < 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	if e, ok := l.buckets[key]; ok {
		b = e.Value.(*bucket)
		l.lru.MoveToBack(e)
	} else {
		l.evict(now)
		b = &bucket{key: key, tokens: l.burst, last: now}
		l.buckets[key] = l.lru.PushBack(b)
	}
	b.tokens += now.Sub(b.last).Seconds() * l.rate
	if b.tokens > l.burst {
		b.tokens = l.burst
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// evict makes room for one more key: it forgets the least recently used
// buckets that are full again, or, when the least recently used one is
// still refilling, that one alone.
func (l *limiter) evict(now time.Time) {
	if l.lru.Len() < l.maxKeys {
		return
	}
	evicted := false
	for e := l.lru.Front(); e != nil; e = l.lru.Front() {
		if evicted && !l.full(e.Value.(*bucket), now) {
			break
		}
		l.lru.Remove(e)
		delete(l.buckets, e.Value.(*bucket).key)
		evicted = true
	}
}

// full reports whether b has refilled to its burst by now.
func (l *limiter) full(b *bucket, now time.Time) bool {
	return b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst
}

// keys returns how many buckets the limiter holds.
func (l *limiter) keys() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// peerKey returns the key of the calling peer for the per-address limit:
// its IP address (without the port, so that new connections share the
// bucket; an IPv6 address by its /64, which one host or site holds whole),
// or the whole address for a non-IP transport.
func peerKey(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	switch a := p.Addr.(type) {
	case *net.TCPAddr:
		return ipKey(a.IP)
	case *net.UDPAddr:
		return ipKey(a.IP)
	}
	s := p.Addr.String()
	if host, _, err := net.SplitHostPort(s); err == nil {
		return host
	}
	return s
}

// ipKey is an IPv4 address itself, an IPv6 address its /64 prefix.
func ipKey(ip net.IP) string {
	if ip.To4() != nil {
		return ip.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
