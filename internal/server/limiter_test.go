package server

import (
	"testing"
	"time"
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
