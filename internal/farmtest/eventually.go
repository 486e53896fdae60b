package farmtest

import (
	"testing"
	"time"
)

// pollInterval is the pause between two tries of Eventually.
const pollInterval = 20 * time.Millisecond

// Eventually calls f until it returns nil, pausing briefly between tries, and
// fails the test with f's last error when timeout passes first. It must be
// called from the test's goroutine.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	if err := Poll(timeout, f); err != nil {
		t.Fatalf("not within %s: %v", timeout, err)
	}
}

// Poll calls f until it returns nil or timeout passes, and returns f's last
// error in the latter case. Unlike Eventually it may be used from any
// goroutine.
func Poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(pollInterval) // a poll interval, not synchronization
	}
}
